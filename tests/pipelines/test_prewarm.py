"""pipelines/prewarm.run(argv) on the DirectRunner against the real Pub/Sub emulator and a real Varnish
(repo VCL) in front of the chunk origin: a play_start of episode k published to `events` -> every chunk
of episode k+1 is at the edge (the next GET is a HIT) within seconds; a second viewer of k costs the
origin nothing; the last episode and malformed payloads warm nothing."""

from __future__ import annotations

import time

import httpx
import pytest

from benchmarks.chunk_replay import chunk_origin
from cliffhanger import resources
from pipelines import prewarm
from serving import hls
from tests.factories import catalog, event, write_catalog
from tests.pubsub_helpers import drain, publish

pytestmark = [pytest.mark.emulators, pytest.mark.slow]


def _wait(predicate, timeout_s: float, what: str, poll_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def test_a_play_start_puts_the_next_episode_at_the_edge(local_stack, varnish, tmp_path, capsys):
    project = local_stack.settings.project
    drain(project, resources.EVENTS_PREWARM_SUBSCRIPTION, expect=10**6, timeout_s=1)
    origin = chunk_origin(catalog(), tmp_path / "chunks")
    cache = varnish(backend_port=origin.server_address[1])
    nxt = hls.episode_paths(catalog().episode("s0001e003"), "720p", 4.0)  # init + 23 segments
    result = prewarm.run(
        ["--project", project, "--runner", "DirectRunner", "--catalog", write_catalog(tmp_path)]
        + ["--varnish_url", cache.url, "--no-first_episodes"]  # counted exactly below: next-up warms only
    )
    try:
        now = int(time.time() * 1000)
        start = time.monotonic()
        publish(project, resources.EVENTS_TOPIC, [event("play_start", episode=2, t=now).to_json()])
        # what the origin served is the warm (a GET of our own would fill the cache itself)
        _wait(lambda: set(nxt) <= set(origin.requests), 60, "episode 3's chunks to be fetched through Varnish")
        latency_s = time.monotonic() - start
        with httpx.Client(base_url=cache.url, timeout=5) as client:
            first = client.get(nxt[1])
            assert first.status_code == 200 and first.headers["x-cache"] == "HIT"
            assert client.get(nxt[0]).headers["x-cache"] == "HIT"
        fetched = len(origin.requests)
        assert fetched == len(nxt)  # each chunk once; nothing else

        # a second viewer of episode 2, a play_start of the last episode, a malformed payload; then a
        # marker whose warm shows the three were processed
        publish(
            project,
            resources.EVENTS_TOPIC,
            [
                event("play_start", episode=2, user="u000002", t=now + 1).to_json(),
                event("play_start", episode=5, t=now + 2).to_json(),
                b"not json",
                event("play_start", series="s0002", episode=1, t=now + 3).to_json(),
            ],
        )
        marker = hls.init_path("s0002e002", "720p", 1)
        _wait(lambda: marker in origin.requests, 60, "the marker's next-up warm")
        time.sleep(1.0)
        assert [p for p in origin.requests[fetched:] if "/s0002e002/" not in p] == []  # nothing but the marker's
        with capsys.disabled():
            print(
                f"\nprewarm job: play_start published -> {len(nxt)} chunks of the next episode at the edge in {latency_s:.2f} s"
            )
    finally:
        result.cancel()
        origin.shutdown()
