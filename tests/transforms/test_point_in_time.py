"""The pure point-in-time logic: the label rule, arrival-order snapshots, dedupe, cuts, item snapshots."""

from __future__ import annotations

import pytest

from cliffhanger.synth import FaultKnobs, generate
from tests.factories import MIN, T0, catalog, event
from transforms.features import ItemState, UserState
from transforms.point_in_time import (
    LABEL_HORIZON_MS,
    arrival_order,
    completion_times,
    cuts_from_quantiles,
    examples_schema,
    outcome_label,
    part_of,
    replay_item,
    replay_user,
)

CAT = catalog()


def genres(series_id: str) -> tuple[str, ...]:
    return CAT.genres(series_id)


@pytest.mark.parametrize(
    ("complete_after_ms", "label"),
    [
        (5 * MIN, 1),  # completed 5 min after the impression
        (LABEL_HORIZON_MS, 1),  # exactly at the horizon: inside
        (LABEL_HORIZON_MS + 1, 0),  # one ms too late
        (-1, 0),  # a completion BEFORE the impression (an earlier watch) does not count
        (None, 0),  # never completed (skip, hover, scrolled past)
    ],
)
def test_label_rule(complete_after_ms, label):
    imp = event("impression", t=T0)
    events = [imp, event("play_start", t=T0 + 1000)]
    if complete_after_ms is not None:
        events.append(event("complete", t=T0 + complete_after_ms))
    assert outcome_label(imp, completion_times(events)) == label


def test_label_rule_only_counts_the_same_episode():
    imp = event("impression", t=T0, episode=1)
    other = event("complete", t=T0 + MIN, episode=2)
    assert outcome_label(imp, completion_times([imp, other])) == 0
    assert outcome_label(imp, completion_times([imp, other]), horizon_ms=10 * MIN) == 0


def test_snapshot_excludes_events_that_arrive_later_even_if_they_happened_earlier():
    # impression 1 -> play -> complete (happens at +3 min but ARRIVES at +6 min, out of order);
    # impression 2 at +5 min must not see the completion; it is labelled by event time all the same.
    imp1, play = event("impression", t=T0), event("play_start", t=T0 + MIN)
    done, imp2 = event("complete", t=T0 + 3 * MIN), event("impression", t=T0 + 5 * MIN, episode=2)
    records = [(T0, imp1), (T0 + MIN, play), (T0 + 6 * MIN, done), (T0 + 5 * MIN, imp2)]
    replay = replay_user("u000001", records, genres)
    by_id = {ex["event_id"]: ex for ex in replay.examples}
    assert by_id[imp1.event_id]["u"] is None  # the user's first event: no row yet
    assert by_id[imp1.event_id]["label"] == 1  # completed 3 min later
    assert by_id[play.event_id]["u"]["impressions_7d"] == 1
    u2 = by_id[imp2.event_id]["u"]
    assert u2["completes_7d"] == 0 and u2["recent_completed"] == []  # arrived after impression 2
    assert u2["plays_7d"] == 1
    cw2 = by_id[imp2.event_id]["cw"]  # same series: where the play left it, not yet completed
    assert cw2["episode_number"] == 1 and cw2["completed"] is False
    assert replay.final_u["completes_7d"] == 1


def test_cw_snapshot_is_the_series_state_before_the_event():
    play = event("play_start", t=T0, episode=1)
    done = event("complete", t=T0 + 2 * MIN, episode=1)
    imp = event("impression", t=T0 + 3 * MIN, episode=2)
    replay = replay_user("u000001", [(e.event_time_ms, e) for e in (play, done, imp)], genres)
    cw = {ex["event_id"]: ex["cw"] for ex in replay.examples}[imp.event_id]
    assert cw["episode_number"] == 1 and cw["completed"] is True


def test_duplicates_give_one_example_and_one_fold():
    imp = event("impression", t=T0)
    replay = replay_user("u000001", [(T0, imp), (T0 + 500, imp), (T0 + 900, event("play_start", t=T0 + 800))], genres)
    assert [ex["kind"] for ex in replay.examples] == ["impression", "play_start"]
    assert len(replay.accepted) == 2
    assert replay.examples[1]["u"]["impressions_7d"] == 1


def test_every_example_equals_a_fold_of_exactly_the_events_that_arrived_before_it():
    """Point-in-time property on a generated world with out-of-order and duplicate deliveries."""
    g = generate(3, "small", knobs=FaultKnobs(duplicate_rate=0.05, out_of_order_rate=0.1))
    cat = g.world.catalog
    users: dict[str, list] = {}
    for m in g.messages:
        from cliffhanger.events import EventError, parse_event

        try:
            e = parse_event(m.payload)
        except EventError:
            continue
        users.setdefault(e.user_id, []).append((m.arrival_ms, e))
    checked = 0
    for user_id in sorted(users)[:12]:
        records = arrival_order(users[user_id])
        replay = replay_user(user_id, records, cat.genres)
        position: dict[str, int] = {}
        for k, (_, e) in enumerate(records):
            position.setdefault(e.event_id, k)  # a duplicate delivery: the first one is the example
        for ex in replay.examples:
            state = UserState()
            for _, e in records[: position[ex["event_id"]]]:
                state.apply(e, cat.genres(e.series_id))
            assert ex["u"] == (state.features() if state.applied else None)
            assert all(arrival <= ex["arrival_ms"] for arrival, _ in records[: position[ex["event_id"]]])
            checked += 1
    assert checked > 50


def test_cut_snapshots_hold_the_row_when_the_cut_passed():
    a, b = event("play_start", t=T0), event("play_start", t=T0 + 10 * MIN, country="BR")
    replay = replay_user(
        "u000001", [(T0, a), (T0 + 10 * MIN, b)], genres, cuts={"valid": T0 + MIN, "test": T0 + 20 * MIN}
    )
    snaps = {s["cut"]: s for s in replay.snapshots}
    assert snaps["valid"]["u"]["plays_7d"] == 1
    assert snaps["valid"]["country"] == "BR"  # the context of the user's next request after the cut
    assert snaps["test"]["u"]["plays_7d"] == 2
    before = replay_user("u000001", [(T0, a)], genres, cuts={"valid": T0 - MIN})
    assert before.snapshots[0]["u"] is None  # no event before the cut: a brand-new user then


def test_item_replay_snapshots_before_each_example_event():
    imp, play, done = event("impression", t=T0), event("play_start", t=T0 + 1000), event("complete", t=T0 + MIN)
    imp2 = event("impression", t=T0 + 2 * MIN)
    snaps, final = replay_item([(e.event_time_ms, e) for e in (imp2, done, play, imp)])
    got = dict(snaps)
    assert got[imp.event_id] is None and got[play.event_id] is None  # no activity yet: no row
    assert got[imp2.event_id]["plays_1h"] == 1 and got[imp2.event_id]["completes_1h"] == 1
    expected = ItemState()
    for e in (play, done):
        expected.apply(e)
    assert final == expected.features()


def test_parts_and_cuts():
    cuts = {"valid": 100, "test": 200}
    assert [part_of(t, cuts) for t in (99, 100, 199, 200)] == ["train", "valid", "valid", "test"]
    assert part_of(5, {}) == "train"
    assert cuts_from_quantiles(list(range(0, 1010, 10))) == {"valid": 700, "test": 850}
    assert cuts_from_quantiles([]) == {}


def test_examples_schema_hash_tracks_the_label_horizon():
    assert examples_schema()["examples_schema_hash"] == examples_schema()["examples_schema_hash"]
    assert examples_schema(60 * MIN)["examples_schema_hash"] != examples_schema()["examples_schema_hash"]
    assert "completion_rate_7d" in examples_schema()["u_columns"]
