from __future__ import annotations

import collections
import re
import time

import numpy as np
import pytest

from cliffhanger.catalog import GENRES
from cliffhanger.events import DEVICES, PlaybackEvent, parse_event
from cliffhanger.synth import Generated, generate, generate_world, simulate
from cliffhanger.synth.sessions import MAX_DELAY_MS, MIN_DELAY_MS, wire_json
from cliffhanger.synth.world import DAY_MS


def _by_user(g: Generated) -> dict[str, list[PlaybackEvent]]:
    out: dict[str, list[PlaybackEvent]] = collections.defaultdict(list)
    for se in g.events:
        out[se.event.user_id].append(se.event)
    for evs in out.values():
        evs.sort(key=lambda e: e.event_time_ms)
    return out


def test_same_seed_same_world_different_seed_different():
    a, b, c = generate_world(3, 12, 40), generate_world(3, 12, 40), generate_world(4, 12, 40)
    assert a.catalog.to_dict() == b.catalog.to_dict()
    assert np.array_equal(a.truth.affinity, b.truth.affinity)
    assert [se.event for se in simulate(a)] == [se.event for se in simulate(b)]
    assert a.catalog.to_dict() != c.catalog.to_dict()


def test_catalog_shape():
    world = generate_world(5, n_series=120, n_users=10, days=3)
    series = list(world.catalog)
    assert len(series) == 120
    assert all(re.fullmatch(r"s\d{4}", s.series_id) for s in series)
    assert all(10 <= len(s.episodes) <= 80 for s in series)
    assert all(60_000 <= e.duration_ms <= 180_000 for e in world.catalog.episodes())
    assert all(re.fullmatch(r"s\d{4}e\d{3}", e.episode_id) for e in world.catalog.episodes())
    assert all(1 <= len(s.genres) <= 3 and set(s.genres) <= set(GENRES) for s in series)
    strengths = [s.cliffhanger_strength for s in series]
    assert min(strengths) >= 0 and max(strengths) <= 1 and max(strengths) - min(strengths) > 0.5
    unlicensed = sum(c not in s.licensing for s in series for c in world.countries)
    end = world.start_ms + world.days * DAY_MS
    expiring = sum(1 for s in series for w in s.licensing.values() if w[1] is not None and w[1] < end)
    dropping = sum(1 for e in world.catalog.episodes() if e.release_time_ms > world.start_ms)
    assert unlicensed > 0 and expiring > 0 and dropping > 0
    pop = np.sort(world.truth.popularity)[::-1]
    assert pop[:12].sum() > 0.4  # Zipf-like: the top 10% of series get a large share of the feed


def test_users_and_truth(small: Generated):
    world = small.world
    assert [u.user_id for u in world.users[:2]] == ["u000001", "u000002"]
    assert all(u.device in DEVICES and u.country in world.countries for u in world.users)
    assert np.allclose(world.truth.taste.sum(axis=1), 1.0)
    assert world.truth.affinity.shape == (len(world.users), len(world.catalog))
    assert ((world.truth.affinity > 0) & (world.truth.affinity < 1)).all()
    # affinity follows taste: a series in the user's favourite genre beats one in their least favourite
    uid = world.users[0].user_id
    taste = world.truth.true_taste(uid)
    top = world.truth.top_series(uid, k=len(world.catalog))
    assert world.truth.true_affinity(uid, top[0]) >= world.truth.true_affinity(uid, top[-1])
    assert max(taste, key=taste.get) in GENRES


def test_events_are_valid_and_consistent(medium: Generated):
    world = medium.world
    users = {u.user_id: u for u in world.users}
    ids = [se.event.event_id for se in medium.events]
    assert len(ids) == len(set(ids))
    for se in medium.events:
        e = se.event
        assert parse_event(wire_json(e)) == e  # the wire form round-trips through the contract
        ep = world.catalog.episode(e.episode_id)
        assert (ep.series_id, ep.episode_number, ep.duration_ms) == (e.series_id, e.episode_number, e.duration_ms)
        assert (e.country, e.device) == (users[e.user_id].country, users[e.user_id].device)
        assert re.fullmatch(rf"{e.user_id}-\d+", e.session_id)
        assert MIN_DELAY_MS <= se.arrival_ms - e.event_time_ms <= MAX_DELAY_MS
        if e.event_type in ("impression", "play_start"):
            assert world.catalog.is_licensed(e.series_id, e.country, e.event_time_ms)
            assert ep.release_time_ms <= e.event_time_ms
    assert [se.arrival_ms for se in medium.events] == sorted(se.arrival_ms for se in medium.events)
    assert {se.event.event_type for se in medium.events} == {
        "impression", "play_start", "progress", "complete", "skip", "like", "share", "hover"
    }  # fmt: skip


def test_wire_json_is_exactly_to_json(small: Generated):
    assert all(wire_json(se.event) == se.event.to_json() for se in small.events)


def test_binge_runs_advance_one_episode_at_a_time(medium: Generated):
    runs, autoplays = [], 0
    for evs in _by_user(medium).values():
        run = 0
        for prev, nxt in zip(evs, evs[1:], strict=False):
            same = nxt.series_id == prev.series_id and nxt.session_id == prev.session_id
            if prev.event_type == "complete" and nxt.event_type == "play_start" and same:
                assert nxt.episode_number == prev.episode_number + 1
                assert nxt.position_ms == 0
                autoplays += 1
            if nxt.event_type == "play_start":
                if prev.event_type in ("complete", "like", "share") and same:
                    run += 1
                else:
                    runs.append(run)
                    run = 1
        runs.append(run)
    runs = np.array([r for r in runs if r])
    assert autoplays > 1000
    assert (runs >= 5).mean() > 0.15 and (runs >= 15).sum() > 10  # binge runs of 5-30 episodes are common


def test_continue_watching_resumes_where_the_viewer_left(medium: Generated):
    """Replays each user's stream: every play_start must start where that user left the series."""
    resumed = 0
    for evs in _by_user(medium).values():
        state: dict[str, tuple[int, int, bool]] = {}  # series -> (episode, position, exact position?)
        finished: set[str] = set()
        for e in evs:
            if e.event_type == "play_start":
                assert e.series_id not in finished
                ep, pos, exact = state.get(e.series_id, (1, 0, True))
                assert e.episode_number == ep, (e, state.get(e.series_id))
                assert e.position_ms == pos if exact else e.position_ms > pos
                resumed += not exact
                state[e.series_id] = (ep, e.position_ms, False)
            elif e.event_type == "progress":
                state[e.series_id] = (e.episode_number, e.position_ms, False)
            elif e.event_type == "skip":
                state[e.series_id] = (e.episode_number, 0, True)
            elif e.event_type == "complete":
                if e.episode_number == len(medium.world.catalog.series(e.series_id).episodes):
                    finished.add(e.series_id)
                state[e.series_id] = (e.episode_number + 1, 0, True)
    assert resumed > 50  # abandoned episodes are picked up again mid-way


def _affinity(g: Generated, e: PlaybackEvent) -> float:
    return g.world.truth.true_affinity(e.user_id, e.series_id)


def test_high_affinity_series_are_completed_and_low_ones_skipped(medium: Generated):
    plays = [se.event for se in medium.events if se.event.event_type == "play_start" and se.event.position_ms == 0]
    done = {(se.event.session_id, se.event.episode_id) for se in medium.events if se.event.event_type == "complete"}
    skipped = {(se.event.session_id, se.event.episode_id) for se in medium.events if se.event.event_type == "skip"}
    aff = np.array([_affinity(medium, e) for e in plays])
    completed = np.array([(e.session_id, e.episode_id) in done for e in plays])
    skip = np.array([(e.session_id, e.episode_id) in skipped for e in plays])
    lo, hi = aff < np.quantile(aff, 0.25), aff > np.quantile(aff, 0.75)
    assert completed[hi].mean() > completed[lo].mean() + 0.05
    assert skip[lo].mean() > skip[hi].mean() + 0.05
    assert all(se.event.position_ms <= 12_000 for se in medium.events if se.event.event_type == "skip")


def test_cliffhanger_strength_raises_continuation(medium: Generated):
    catalog = medium.world.catalog
    cont = collections.defaultdict(list)
    for evs in _by_user(medium).values():
        for i, e in enumerate(evs):
            if e.event_type != "complete" or e.episode_number == len(catalog.series(e.series_id).episodes):
                continue
            nxt = next((x for x in evs[i + 1 :] if x.event_type not in ("like", "share")), None)
            went_on = nxt is not None and nxt.event_type == "play_start" and nxt.session_id == e.session_id
            went_on = went_on and nxt.episode_id == catalog.next_episode(e.episode_id).episode_id
            strength = catalog.series(e.series_id).cliffhanger_strength
            if strength > 0.6:
                cont["high"].append(went_on)
            elif strength < 0.4:
                cont["low"].append(went_on)
    assert len(cont["high"]) > 200 and len(cont["low"]) > 200
    assert np.mean(cont["high"]) > np.mean(cont["low"]) + 0.05


def test_hover_follows_an_impression_of_the_same_series(medium: Generated):
    n = 0
    for evs in _by_user(medium).values():
        for prev, e in zip(evs, evs[1:], strict=False):
            if e.event_type == "hover":
                assert prev.event_type == "impression" and prev.series_id == e.series_id
                n += 1
    assert n > 50


def test_users_return_on_later_days_and_some_churn(medium: Generated):
    start = medium.world.start_ms
    days_by_user = collections.defaultdict(set)
    for se in medium.events:
        days_by_user[se.event.user_id].add((se.event.event_time_ms - start) // DAY_MS)
    returning = sum(1 for d in days_by_user.values() if 0 in d and 1 in d)
    assert returning > 0.3 * len(days_by_user)
    sessions = {se.event.session_id for se in medium.events}
    assert len(sessions) > len(days_by_user)  # several sessions per user


def test_small_preset_is_fast():
    t0 = time.perf_counter()
    g = generate(99, "small")
    took = time.perf_counter() - t0
    assert 1000 < len(g.events) < 10_000
    assert took < 5.0  # target < 2 s; loose because the test machine is shared


@pytest.mark.parametrize("bad", [{"n_users": 0}, {"n_series": 0}, {"days": 0}, {"countries": ()}])
def test_generate_world_rejects_empty_worlds(bad):
    with pytest.raises(ValueError):
        generate_world(1, **bad)
