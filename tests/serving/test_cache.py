"""TtlCache: TTL, stale-while-revalidate, single-flight, errors, LRU bound, purge by tag (injected clock)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from serving.cache import COALESCED, HIT, MISS, STALE, Computed, TtlCache, held_json
from tests.heap import traced_bytes_each

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counter_compute(calls: list, value: str = "v", delay: float = 0.0):
    async def compute():
        calls.append(value)
        if delay:
            await asyncio.sleep(delay)
        return f"{value}{len(calls)}"

    return compute


async def test_fresh_then_stale_then_expired() -> None:
    clock, calls = Clock(), []
    cache = TtlCache(ttl_s=5, swr_s=30, clock=clock)
    assert await cache.get_or_compute("k", counter_compute(calls)) == ("v1", MISS)
    clock.now += 4.9
    assert await cache.get_or_compute("k", counter_compute(calls)) == ("v1", HIT)
    clock.now += 0.2  # 5.1 s: stale -> old value now, one refresh in the background
    assert await cache.get_or_compute("k", counter_compute(calls)) == ("v1", STALE)
    await asyncio.sleep(0)  # let the refresh run
    await asyncio.sleep(0)
    assert len(calls) == 2
    assert await cache.get_or_compute("k", counter_compute(calls)) == ("v2", HIT)
    clock.now += 5 + 30 + 1  # past ttl + swr: a miss computes in line
    assert await cache.get_or_compute("k", counter_compute(calls)) == ("v3", MISS)


async def test_concurrent_misses_compute_once() -> None:
    calls: list = []
    cache = TtlCache(ttl_s=5, clock=Clock())
    results = await asyncio.gather(*(cache.get_or_compute("k", counter_compute(calls, delay=0.01)) for _ in range(20)))
    assert len(calls) == 1
    assert {v for v, _ in results} == {"v1"}
    statuses = [s for _, s in results]
    assert statuses.count(MISS) == 1 and statuses.count(COALESCED) == 19


async def test_stale_serves_one_refresh_for_many_callers() -> None:
    clock, calls = Clock(), []
    cache = TtlCache(ttl_s=1, swr_s=10, clock=clock)
    await cache.get_or_compute("k", counter_compute(calls))
    clock.now += 2
    results = await asyncio.gather(*(cache.get_or_compute("k", counter_compute(calls, delay=0.01)) for _ in range(10)))
    assert all(r == ("v1", STALE) for r in results)
    await asyncio.sleep(0.05)
    assert len(calls) == 2  # the first fill + ONE refresh


async def test_failed_compute_reaches_every_waiter_and_is_not_stored() -> None:
    cache = TtlCache(ttl_s=5, clock=Clock())
    n = 0

    async def boom():
        nonlocal n
        n += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("store down")

    results = await asyncio.gather(*(cache.get_or_compute("k", boom) for _ in range(5)), return_exceptions=True)
    assert n == 1 and all(isinstance(r, RuntimeError) for r in results)
    assert len(cache) == 0


async def test_failed_background_refresh_keeps_stale_value_and_counts() -> None:
    clock, errors = Clock(), []
    cache = TtlCache(ttl_s=1, swr_s=10, clock=clock, on_refresh_error=errors.append)
    await cache.get_or_compute("k", counter_compute([]))

    async def boom():
        raise RuntimeError("down")

    clock.now += 2
    assert await cache.get_or_compute("k", boom) == ("v1", STALE)
    await asyncio.sleep(0.01)
    assert cache.refresh_errors == 1 and len(errors) == 1
    assert cache.peek("k") == "v1"


async def test_computed_sets_its_own_ttl_and_tags() -> None:
    clock = Clock()
    cache = TtlCache(ttl_s=60, swr_s=0, clock=clock)

    async def degraded():
        return Computed("fallback", ttl_s=1, swr_s=0, tags=("s-s0001",))

    await cache.get_or_compute("k", degraded)
    clock.now += 1.5
    assert cache.peek("k") is None  # its own 1 s TTL, not the cache's 60 s
    await cache.get_or_compute("k", degraded)
    await cache.get_or_compute("other", counter_compute([]), tags=("s-s0002",))
    assert cache.purge_tags(["s-s0001"]) == 1
    assert cache.peek("k") is None and cache.peek("other") is not None


async def test_lru_bound() -> None:
    cache = TtlCache(ttl_s=60, max_entries=2, clock=Clock())
    for key in ("a", "b"):
        await cache.get_or_compute(key, counter_compute([]))
    await cache.get_or_compute("a", counter_compute([]))  # a is now most recent
    await cache.get_or_compute("c", counter_compute([]))
    assert cache.peek("b") is None and cache.peek("a") is not None and len(cache) == 2


async def test_purge_during_compute_is_not_stored() -> None:
    cache = TtlCache(ttl_s=60, clock=Clock())

    async def slow():
        await asyncio.sleep(0.02)
        return "old-bundle-answer"

    task = asyncio.create_task(cache.get_or_compute("k", slow))
    await asyncio.sleep(0.005)
    cache.clear()  # e.g. a bundle swap while the answer was being computed
    assert (await task)[0] == "old-bundle-answer"
    assert cache.peek("k") is None


async def test_cached_answers_drop_out_of_the_garbage_collectors_view() -> None:
    """A full collection walks every tracked object, and its pause stalls every request in flight. The
    cache's entries, its tag index and the rendered answers it holds must be untracked by the first
    young collection: only a full collection looks at the old generation again, so entries reaching it
    tracked are walked by every full one until then, and they are what triggers those collections
    (nested tuples did: 9-50 ms pauses every few seconds in a long run; benchmarks/gc_pause.py)."""
    import gc

    from serving.service import Rendered

    cache = TtlCache(ttl_s=60, swr_s=30, max_entries=100, clock=Clock())
    gc.collect()  # the cache is old, as in a running server; the answers stored next are young
    for i in range(50):
        keys = f"u-{i} s-s0001 all"
        rendered = Rendered(
            b'{"items": []}', {"xkey": keys, "X-Rung": "personalized"}, "personalized", ((b"xkey", keys.encode()),)
        )

        async def compute(rendered=rendered, keys=keys):
            return Computed(rendered.cached(), 5.0, tags=tuple(keys.split()))

        value, status = await cache.get_or_compute(f"k{i}", compute)
        assert status == MISS and Rendered.from_cached(value) == rendered  # the round trip loses nothing
    gc.collect(0)  # ONE young collection: what reaches the old generation tracked stays so until a full one
    assert not any(gc.is_tracked(value) for value in cache._values.values())
    assert not any(gc.is_tracked(meta) for meta in cache._meta.values())
    assert not any(gc.is_tracked(keys) for keys in cache._tags.values())
    assert sorted(cache._tags["all"]) == sorted(f"k{i}" for i in range(50))
    assert cache.purge_tags(["s-s0001"]) == 50 and len(cache) == 0 and not cache._tags


@pytest.mark.parametrize("items", [1, 10, 100])
def test_held_json_takes_only_its_own_length(items: int) -> None:
    """What the cache and LastKnown hold is the document's bytes, not the encoder's buffer (orjson 3.13
    keeps a 430-byte document in a 16 KB allocation; held 50,000 times, that was most of the heap)."""
    doc = {"items": [{"episode_id": f"s0001e{k:03d}", "score": 0.5 + k} for k in range(items)], "rung": "x"}
    per_object, kept = traced_bytes_each(lambda: held_json(doc))
    assert kept[0] == orjson.dumps(doc) and orjson.loads(kept[0]) == doc
    assert per_object < len(kept[0]) + 64  # the bytes object's header and the list's slot, no more
