"""End to end on the real components: event -> features (streaming job) -> change notice -> purge
(invalidation job: serving's cache, then Varnish) -> the viewer's next answer through Varnish is fresh."""

from __future__ import annotations

import time

import httpx
import pytest

from cliffhanger import resources
from cliffhanger.events import PlaybackEvent
from pipelines import invalidation, streaming_features
from serving.app import create_app
from serving.settings import ServingSettings
from tests.pubsub_helpers import drain, publish
from tests.serving.conftest import ADMIN_TOKEN, SECRET, seed, serving_env, stop_edge_stack

pytestmark = [pytest.mark.emulators, pytest.mark.slow]


def test_a_finished_episode_leaves_the_answer_through_varnish(
    local_stack, world, bundle_root, catalog_path, serve, varnish, monkeypatch
):
    monkeypatch.setenv("CLIFFHANGER_EDGE_KEY_SECRET", SECRET)
    monkeypatch.setenv("CLIFFHANGER_ADMIN_TOKEN", ADMIN_TOKEN)
    project = local_stack.settings.project
    for sub in (
        resources.EVENTS_SUBSCRIPTION,
        resources.FEATURE_CHANGES_SUBSCRIPTION,
        resources.CANDIDATE_CHANGES_SUBSCRIPTION,
    ):
        drain(project, sub, expect=10**6, timeout_s=1)
    facts = seed(local_stack, world, bundle_root)
    # long TTLs in both caches (>= 30 s, the hot-key cap): a fresh answer within the test can only come from purges
    env = serving_env(local_stack, bundle_root, catalog_path, CLIFFHANGER_CACHE_TTL_S="60")
    server = serve(create_app(ServingSettings.from_env(env)))
    edge = varnish(backend_port=server.port)
    uid = sorted(facts["lists"])[0]
    user = facts["users"][uid]
    url = f"{edge.url}/v1/users/{uid}/recommendations"
    params = {"n": 8, "country": user.country, "device": user.device}
    httpx.get(url, params=params, timeout=5)
    cached = httpx.get(url, params=params, timeout=5)
    assert cached.headers["x-cache"] == "HIT"
    offered = cached.json()["items"][0]
    episode = world.world.catalog.episode(offered["episode_id"])

    jobs = [
        streaming_features.run(["--catalog", catalog_path, "--project", project]),
        invalidation.run(["--varnish_url", edge.url, "--origin_url", server.url, "--project", project]),
    ]
    try:
        now = int(time.time() * 1000)
        common = dict(user_id=uid, series_id=episode.series_id, episode_id=episode.episode_id,
                      episode_number=episode.episode_number, duration_ms=episode.duration_ms, device=user.device,
                      country=user.country, session_id=f"{uid}-e2e", app_version="5.2.1")  # fmt: skip
        watched = [
            PlaybackEvent(event_id=f"e2e-{now}-1", event_type="play_start", position_ms=0, event_time_ms=now - 1000, **common),
            PlaybackEvent(event_id=f"e2e-{now}-2", event_type="complete", position_ms=episode.duration_ms, event_time_ms=now, **common),
        ]  # fmt: skip
        start = time.monotonic()
        publish(project, resources.EVENTS_TOPIC, [e.to_json() for e in watched])
        fresh = None
        while time.monotonic() - start < 60:
            r = httpx.get(url, params=params, timeout=5)
            if all(i["episode_id"] != episode.episode_id for i in r.json()["items"]):
                fresh = r
                break
            time.sleep(0.1)
        assert fresh is not None, f"{episode.episode_id} still offered through Varnish 60 s after it was finished"
        assert fresh.headers["x-cache"] == "MISS"  # purged at the edge (and at the origin), not expired
        assert time.monotonic() - start < 30
    finally:
        for job in jobs:
            job.cancel()
        stop_edge_stack(server)
