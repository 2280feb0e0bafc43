"""Pre-warming (issue 5, section 4): the plan covers trending, next-up and freshly dropped episodes;
after `warm` (and after `python -m serving.prewarm`) the first chunk request is a HIT at the edge; the
chunk hit rate of replayed viewing sessions (benchmarks/chunk_hit_rate.py)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from benchmarks import chunk_hit_rate
from cliffhanger.catalog import Catalog, Episode, Series
from serving import hls, prewarm
from tests.serving.conftest import NOW_MS, serving_env, start_edge_stack, stop_edge_stack

H = 3_600_000


def test_plan_trending_next_up_and_drops() -> None:
    eps = tuple(Episode(f"s1e{i:03d}", "s1", i, 10_000, i * H) for i in range(1, 6))
    cat = Catalog([Series("s1", "t", (), 0.5, eps, {})])
    plan = prewarm.plan(cat, ["s1e001", "gone"], top_plays=["s1e002", "s1e005"], now_ms=4 * H + 60_000)
    # hot first, then the next-up of a top-played episode (none after the last), then the fresh drop
    assert [e.episode_id for e in plan] == ["s1e001", "s1e003", "s1e004"]
    paths = prewarm.warm_paths(plan[:1], ["720p", "480p"], 4.0, segments=2)
    assert paths == [
        "/chunks/s1e001/720p/v1/init.mp4",
        "/chunks/s1e001/720p/v1/0.m4s",
        "/chunks/s1e001/720p/v1/1.m4s",
        "/chunks/s1e001/480p/v1/init.mp4",
        "/chunks/s1e001/480p/v1/0.m4s",
        "/chunks/s1e001/480p/v1/1.m4s",
    ]


def test_session_from_playlist() -> None:
    eps = [Episode("s1e001", "s1", 1, 10_000, 0), Episode("s1e002", "s1", 2, 10_000, 0)]
    text = hls.media_playlist(eps, "720p", 4.0)
    assert chunk_hit_rate.session_from_playlist(text, 1) == [
        "/chunks/s1e001/720p/v1/init.mp4",
        "/chunks/s1e001/720p/v1/0.m4s",
        "/chunks/s1e002/720p/v1/init.mp4",
        "/chunks/s1e002/720p/v1/0.m4s",
    ]
    assert len(chunk_hit_rate.session_from_playlist(text)) == 8
    assert chunk_hit_rate.replay_session("http://127.0.0.1:9", []) == 1.0


@pytest.mark.emulators
@pytest.mark.slow
def test_prewarm_makes_first_chunks_hits(
    local_stack, world, bundle_root, catalog_path, varnish, tmp_path, monkeypatch, capsys
):
    facts, server, edge = start_edge_stack(local_stack, world, bundle_root, catalog_path, varnish, str(tmp_path / "c"))
    try:
        catalog = world.world.catalog
        users = sorted(facts["lists"])
        # what the viewers below will start with: the first episode of each one's playlist
        firsts = []
        for uid in users[:10]:
            u = facts["users"][uid]
            r = httpx.get(f"{server.url}/v1/users/{uid}/next.m3u8", params={"country": u.country, "device": "android"})
            firsts.append(r.text.split('#EXT-X-MAP:URI="/chunks/')[1].split("/")[0])
        trending = list(dict.fromkeys(firsts))
        paths = prewarm.warm_paths(prewarm.plan(catalog, trending, now_ms=NOW_MS), ["720p"], 4.0)
        report = asyncio.run(prewarm.warm(edge.url, paths))
        assert report.errors == 0 and report.miss == len(paths) == 3 * len(trending)
        with httpx.Client(base_url=edge.url, timeout=5) as client:
            for e in trending:  # the first chunk a viewer asks for is already at the edge
                assert client.get(f"/chunks/{e}/720p/v1/0.m4s").headers["x-cache"] == "HIT"
        assert asyncio.run(prewarm.warm(edge.url, paths)).hit == len(paths)  # re-running costs the origin nothing

        # the CLI, against the same stack (hot set from the seeded cohort rows and global list)
        for k, v in serving_env(local_stack, bundle_root, catalog_path).items():
            monkeypatch.setenv(k, v)
        assert prewarm.main(["--varnish-url", edge.url, "--top", "20"]) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert out["paths"] >= 3 * 20 and out["errors"] == 0
        with capsys.disabled():
            print(f"\nprewarm CLI: {out}")

        # replayed viewing sessions: 10 viewers, 8 segments of each of their 3 episodes
        result = chunk_hit_rate.replay_users(edge.url, users[:10], country="US", device="android", segments=8)
        with capsys.disabled():
            print(f"chunk hit rate: {result}")
        assert result["errors"] == 0 and result["sessions"] == 10
        assert result["hit_rate_after_first"] >= result["hit_rate_first_session"]
    finally:
        stop_edge_stack(server)


def test_edge_warmer_fetches_through_varnish_and_a_second_warm_costs_the_origin_nothing(varnish, tmp_path) -> None:
    from benchmarks.chunk_replay import chunk_origin
    from tests.factories import catalog

    origin = chunk_origin(catalog(), tmp_path)
    try:
        cache = varnish(backend_port=origin.server_address[1])
        paths = [hls.init_path("s0001e002", "720p", 1), hls.chunk_path("s0001e002", "720p", 1, 0)]
        missing = hls.chunk_path("s0001e002", "720p", 1, 99)  # past the episode's last segment: a 404
        with prewarm.EdgeWarmer(cache.url, concurrency=2) as warmer:
            assert warmer.fetch([*paths, missing]) == ["MISS", "MISS", None]
            again = warmer.warm(paths)
        assert (again.paths, again.hit, again.miss, again.errors) == (2, 2, 0, 0)
        assert asyncio.run(prewarm.warm(cache.url, paths)).hit == 2
        assert sorted(origin.requests) == sorted(paths)  # each chunk fetched from the origin once
    finally:
        origin.shutdown()
