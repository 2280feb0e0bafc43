"""benchmarks/chunk_replay: what a player fetches and when (from the event log), the next-up warm plan
with its lag, the set model, and a small replay through the real Varnish that agrees with the model."""

from __future__ import annotations

import json

from benchmarks import chunk_replay
from benchmarks.chunk_replay import Arrival, Request, nextup_jobs, sessions_from_log, simulate, viewer_requests
from tests.factories import T0, catalog, event

BASE = "/chunks/s0001e{:03d}/720p/v1/"


def test_a_play_fetches_init_and_the_segments_up_to_the_position_reached():
    # 90 s episodes in 4 s segments: 23 segments (0..22)
    evs = [
        event("play_start", t=T0, session_id="a"),
        event("progress", t=T0 + 30_000, session_id="a", position_ms=30_000),  # 30 s -> segments 0..7
        event("skip", t=T0 + 40_000, session_id="a", position_ms=41_000),  # 41 s -> up to segment 10
        event("impression", t=T0, session_id="a", episode=2),  # no media
    ]
    paths = sessions_from_log([e.to_json() for e in evs], catalog())
    assert paths[0] == "/chunks/s0001e001/720p/v1/init.mp4"
    assert paths[1:] == [f"/chunks/s0001e001/720p/v1/{i}.m4s" for i in range(11)]


def test_a_complete_fetches_every_segment_once_and_malformed_payloads_are_ignored():
    evs = [event("play_start", t=T0, session_id="b"), event("complete", t=T0 + 90_000, session_id="b")]
    paths = sessions_from_log([b"not json"] + [e.to_json() for e in evs], catalog())
    assert len(paths) == 1 + 23 and len(set(paths)) == len(paths)


def test_segments_are_requested_when_playback_is_within_the_buffer_and_a_resume_starts_at_its_position():
    evs = [event("play_start", t=T0, session_id="c"), event("complete", t=T0 + 90_000, session_id="c")]
    reqs = viewer_requests(evs, catalog(), 4.0, buffer_s=30.0)
    times = {r.path.rsplit("/", 1)[1]: r.time_ms - T0 for r in reqs}
    # segment i is needed at 4 i s; the player asks 30 s ahead: 0..7 at the start, 8 at 2 s, 22 at 58 s
    assert times["init.mp4"] == times["0.m4s"] == times["7.m4s"] == 0
    assert (times["8.m4s"], times["22.m4s"]) == (2_000, 58_000)
    resume = [
        event("play_start", t=T0, session_id="d", position_ms=41_000),  # resumes in segment 10
        event("complete", t=T0 + 49_000, session_id="d"),
    ]
    names = [r.path.rsplit("/", 1)[1] for r in viewer_requests(resume, catalog(), 4.0, buffer_s=0.0)]
    assert names == ["init.mp4"] + [f"{i}.m4s" for i in range(10, 23)]


def test_next_up_warms_land_after_the_lag_and_once_per_episode_and_the_model_counts_their_cost():
    a1 = event("play_start", t=T0, user="a", session_id="a", episode=1)
    a2 = event("play_start", t=T0 + 95_000, user="a", session_id="a", episode=2)
    b2 = event("play_start", t=T0 + 200_000, user="b", session_id="b", episode=2)
    arrivals = [Arrival(e.event_time_ms + 300, e) for e in (a1, a2, b2)]
    jobs = nextup_jobs(arrivals, catalog(), lag_ms=10_000, segments=1)
    # a1 -> e002 at arrival + lag; a2 -> e003; b2 -> e003 again: deduplicated
    assert [(due - T0, job.episode_id) for due, job in jobs] == [(10_300, "s0001e002"), (105_300, "s0001e003")]
    e2 = [Request(T0 + 95_000, BASE.format(2) + "init.mp4"), Request(T0 + 95_000, BASE.format(2) + "0.m4s")]
    late = [Request(T0 + 5_000, BASE.format(2) + "init.mp4")]  # asked before the warm landed: a miss
    assert simulate(e2, [], jobs)["hit_rate"] == 1.0
    assert simulate(late, [], jobs) == {
        "hit_rate": 0.0,
        "warm_gets": 0,
        "warm_requests": 0,  # the warm came after the viewer had fetched it: nothing left to fetch
        "warmed_unused_chunks": 0,
        "warmed_unused_share": None,
    }
    cost = simulate(e2, ["/chunks/s0002e001/720p/v1/init.mp4"], jobs)
    # e002 init + 0 and the start path: 3 GETs, 3 origin fetches, 1 of them never viewed
    assert (cost["warm_gets"], cost["warm_requests"], cost["warmed_unused_chunks"]) == (3, 3, 1)


def test_a_small_replay_through_varnish_matches_the_model(tmp_path, capsys):
    out = tmp_path / "chunk_replay.json"
    argv = ["--out", str(out), "--users", "40", "--series", "3", "--events", "600", "--modes", "cold,nextup_firsts"]
    result = chunk_replay.run(argv)
    assert json.loads(out.read_text()) == result
    cold, warm = result["cold"], result["nextup_firsts"]
    assert result["chunk_requests"] > 100 and cold["errors"] == warm["errors"] == warm["warm_errors"] == 0
    for mode in (cold, warm):  # the real Varnish answers as the set model says (no eviction, warms in time)
        assert mode["hit_rate"] == mode["model_hit_rate"] and mode["lru_nuked"] == 0
    assert warm["hit_rate"] > cold["hit_rate"] and warm["warm_requests"] > 0
    assert cold["origin_fetches"] == result["distinct_chunks"]
    assert result["hit_rate"] == warm["hit_rate"] and result["goal_hit_rate"] == 0.9
    assert set(result["segments_warmed"]["by_segments"]) == {"2", "8", "12", "16", "all"}
    assert warm["warm_gets"] == simulate_gets(result) and result["rendition_downgrades"]["model_only"]


def simulate_gets(result: dict) -> int:
    """The model's warm GETs for the headline mode at the run's lag (= by_segments["all"])."""
    return result["segments_warmed"]["by_segments"]["all"]["warm_gets"]
