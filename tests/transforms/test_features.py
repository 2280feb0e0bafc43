"""transforms/features.py: the window arithmetic, dedupe and order independence."""

from __future__ import annotations

import random

from tests.factories import MIN, T0, catalog, event
from transforms.features import HOUR_MS, CohortState, ItemState, UserState, trending_score

GENRES = catalog().genres


def fold(events, state=None):
    state = state or UserState()
    for e in events:
        state.apply(e, GENRES(e.series_id))
    return state


def test_genre_mix_counts_plays_in_the_last_30_minutes_only():
    events = [
        event("play_start", t=T0 - 31 * MIN, series="s0002"),  # outside (as_of - 30 min, as_of]
        event("play_start", t=T0 - 29 * MIN, series="s0002"),
        event("play_start", t=T0 - 1 * MIN, series="s0001"),
        event("play_start", t=T0, series="s0001"),
        event("complete", t=T0, series="s0001"),  # completes do not count toward the mix
    ]
    f = fold(events).features()
    # plays in window: s0001 x2 (romance+ceo each), s0002 x1 (thriller) -> 2+2+1 = 5 genre hits
    assert f["genre_mix_30m"] == {"ceo": 0.4, "romance": 0.4, "thriller": 0.2}


def test_seven_day_rates_and_counts():
    old = T0 - 8 * 24 * HOUR_MS  # outside the 168-hour window
    events = [event("play_start", t=old), event("complete", t=old)]
    events += [event("impression", t=T0 - i * MIN) for i in range(4)]
    events += [event("hover", t=T0 - 2 * MIN)]
    events += [event("play_start", t=T0 - i * MIN) for i in range(4)]
    events += [event("complete", t=T0 - i * MIN) for i in range(3)] + [event("skip", t=T0)]
    f = fold(events).features()
    assert (f["plays_7d"], f["completes_7d"], f["impressions_7d"]) == (4, 3, 4)
    assert f["completion_rate_7d"] == 0.75  # 3 / 4
    assert f["skip_rate_7d"] == 0.25  # 1 / 4
    assert f["hover_skip_rate_7d"] == 0.25  # 1 hover / 4 impressions
    assert f["last_active_ms"] == T0


def test_duplicate_event_is_a_no_op():
    e = event("complete", t=T0)
    state = fold([event("play_start", t=T0 - MIN), e])
    before = state.features()
    assert state.apply(e, GENRES(e.series_id)) is False
    assert state.features() == before


def test_binge_depth_counts_completed_episodes_of_the_latest_session():
    s1 = [event("complete", t=T0 - 60 * MIN, episode=n, session_id="a") for n in (1, 2)]
    s2 = [event("complete", t=T0 - (5 - n) * MIN, episode=n, session_id="b") for n in (1, 2, 3)]
    s2.append(event("complete", t=T0 - MIN, episode=3, session_id="b", event_id="again"))  # same episode
    f = fold(s1 + s2).features()
    assert (f["session_id"], f["binge_depth"]) == ("b", 3)


def test_continue_watching_follows_the_latest_playback_event_even_out_of_order():
    late = event("progress", t=T0 - 5 * MIN, episode=2, position_ms=30_000)
    newest = event("progress", t=T0, episode=3, position_ms=45_000)
    state = fold([newest, late])
    assert state.continue_watching("s0001") == {
        "episode_id": "s0001e003",
        "episode_number": 3,
        "position_ms": 45_000,
        "duration_ms": 90_000,
        "completed": False,
        "updated_ms": T0,
    }
    assert state.continue_watching("s0002") is None


def test_user_features_do_not_depend_on_arrival_order():
    """Any arrival order the lateness gate allows (events up to 10 min late, duplicates re-sent within
    minutes) gives the same features as applying the events once in event-time order."""
    rng = random.Random(7)
    types = ["impression", "play_start", "progress", "complete", "skip", "hover", "like"]
    events = [
        event(
            rng.choice(types),
            t=T0 - rng.randrange(0, 3 * HOUR_MS),
            series=rng.choice(["s0001", "s0002"]),
            episode=rng.randrange(1, 6),
            session_id=f"s{rng.randrange(3)}",
        )
        for _ in range(300)
    ]
    expected = fold(sorted(events, key=lambda e: e.event_time_ms))
    for _ in range(5):
        arrivals = [(e.event_time_ms + rng.randrange(0, 10 * MIN), e) for e in events]
        arrivals += [(t + rng.randrange(0, 3 * MIN), e) for t, e in rng.sample(arrivals, 60)]  # duplicates
        got = fold(e for _, e in sorted(arrivals, key=lambda a: a[0]))
        assert got.features() == expected.features()
        assert got.playback == expected.playback


def test_item_sliding_windows_and_trending():
    state = ItemState()
    for t in (T0 - 2 * MIN, T0 - 10 * MIN, T0 - 2 * HOUR_MS):
        state.apply(event("play_start", t=t))
    state.apply(event("complete", t=T0))
    state.apply(event("impression", t=T0))  # not a play: ignored
    f = state.features()
    assert (f["plays_5m"], f["plays_1h"], f["plays_24h"]) == (1, 2, 3)
    assert (f["completes_5m"], f["completion_rate_5m"]) == (1, 1.0)
    assert f["completion_rate_24h"] == round(1 / 3, 6)
    # trending: complete now (weight 2, age 0) + play at age 2 and 10 min (weight 1) with a 15-min half-life
    assert f["trending"] == round(2 + 0.5 ** (2 / 15) + 0.5 ** (10 / 15), 4)


def test_trending_ignores_buckets_beyond_the_horizon():
    assert trending_score({100: 5, 30: 7}, as_of_min=100) == 5.0  # minute 30 is 70 min old


def test_cohort_trending_ranks_series_by_decayed_activity():
    state = CohortState()
    for i in range(3):
        state.apply(event("play_start", t=T0 - 40 * MIN + i, series="s0001"))
    state.apply(event("complete", t=T0, series="s0002"))
    f = state.features()
    # s0002: 2 * 1 = 2.0 (now); s0001: 3 plays 40 min ago -> 3 * 0.5 ** (40/15) = 0.4725
    assert f["trending_series"] == [["s0002", 2.0], ["s0001", round(3 * 0.5 ** (40 / 15), 4)]]


def test_recent_completed_is_newest_first_and_bounded():
    from transforms.features import HISTORY_LEN

    events = [
        event("complete", t=T0 + i * MIN, episode=1 + i % 5, series="s0001" if i < 30 else "s0002") for i in range(60)
    ]
    # series s0001 episodes 1..5 complete repeatedly (ids repeat); s0002 episodes 1..5 too: 10 distinct ids
    f = fold(events).features()
    assert f["recent_completed"][:2] == ["s0002e005", "s0002e004"]  # i = 59 -> ep 5, i = 58 -> ep 4
    assert len(f["recent_completed"]) == 10 <= HISTORY_LEN
