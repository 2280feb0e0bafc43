"""benchmarks/chunk_replay.sessions_from_log: what a player fetches, derived from the event log."""

from __future__ import annotations

from benchmarks.chunk_replay import sessions_from_log
from tests.factories import T0, catalog, event


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
