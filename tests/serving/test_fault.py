"""Fault test: the Bigtable emulator is stopped mid-run; every request still answers 200 within the
deadline, from a lower rung (last known features, segment / popularity lists held in process)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from serving.app import create_app
from serving.recommend import FALLBACK_RUNGS
from serving.settings import ServingSettings
from tests.serving.conftest import NOW_MS, seed, serving_env

pytestmark = [pytest.mark.emulators, pytest.mark.slow]
DEADLINE_S = 0.25  # budget 50 ms + HTTP + a loaded 2-core CI machine


async def _fire(url: str, requests: list[tuple[str, dict]], concurrency: int = 4) -> list[tuple[int, float, dict]]:
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:

        async def one(user: str, params: dict):
            async with sem:
                start = time.perf_counter()
                r = await client.get(f"/v1/users/{user}/recommendations", params=params)
                return r.status_code, time.perf_counter() - start, r.json()

        return await asyncio.gather(*(one(u, p) for u, p in requests))


def test_bigtable_dies_mid_run_and_every_answer_is_200_from_a_lower_rung(
    local_stack, world, bundle_root, catalog_path, serve
) -> None:
    facts = seed(local_stack, world, bundle_root)
    settings = ServingSettings.from_env(serving_env(local_stack, bundle_root, catalog_path))
    server = serve(create_app(settings, clock=lambda: NOW_MS))
    users = sorted(facts["lists"])
    ctx = {u: {"country": facts["users"][u].country, "device": facts["users"][u].device} for u in users}
    warm = [(u, {**ctx[u], "n": 10}) for u in users]  # the last known rows of every user, in process
    healthy = asyncio.run(_fire(server.url, warm))
    assert all(status == 200 for status, _, _ in healthy)
    # Precondition, not the property under test: every user's row read once. On a loaded machine a
    # read can miss its 20 ms deadline (-> segment rung, correctly); ask those users again, one at a time.
    for _ in range(3):
        missing = [req for req, (_, _, body) in zip(warm, healthy, strict=True) if body["rung"] != "personalized"]
        if not missing:
            break
        retried = dict(
            zip((u for u, _ in missing), asyncio.run(_fire(server.url, missing, concurrency=1)), strict=True)
        )
        healthy = [retried.get(u, res) for (u, _), res in zip(warm, healthy, strict=True)]
    assert {body["rung"] for _, _, body in healthy} == {"personalized"}

    try:
        local_stack.stop_service("bigtable")
        # distinct n per request: no in-process cache hit can hide the dead dependency
        known = [(u, {**ctx[u], "n": n}) for n in (3, 4) for u in users]
        unknown = [(f"new-user-{i}", {**ctx[users[i % len(users)]], "n": 5}) for i in range(30)]
        results = asyncio.run(_fire(server.url, known + unknown))
    finally:
        local_stack.start_service("bigtable")  # shared by other tests: always restart

    assert len(results) == len(known) + len(unknown)
    slow = [(round(t * 1000, 1), b["rung"]) for status, t, b in results if t > DEADLINE_S]
    assert all(status == 200 for status, _, _ in results), [s for s, _, _ in results if s != 200]
    assert not slow, slow
    for (user, _), (_, _, body) in zip(known + unknown, results, strict=True):
        assert body["rung"] in FALLBACK_RUNGS, (user, body["rung"])
        assert {"feature_read_error", "feature_read_timeout"} & set(body["fallbacks"]), body["fallbacks"]
        assert body["items"], user
    known_rungs = {b["rung"] for _, _, b in results[: len(known)]}
    assert known_rungs == {"stale_features"}  # their last known rows (with the lists) served them
    assert {b["rung"] for _, _, b in results[len(known) :]} <= {"segment", "popularity"}
    metrics = httpx.get(server.url + "/metrics").text
    assert 'cliffhanger_fallbacks_total{reason="last_known_features"}' in metrics
