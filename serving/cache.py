"""In-process cache: TTL, stale-while-revalidate, single-flight, LRU bound and purge by tag. Pure asyncio.

    cache = TtlCache(ttl_s=5, swr_s=30, max_entries=50_000, clock=time.monotonic)
    value, status = await cache.get_or_compute(key, compute, tags=("s-s0001", "all"))

Per key, at time `now` after the value was stored at `t`:
    now < t + ttl                 "hit": the stored value
    t + ttl <= now < t + ttl+swr  "stale": the stored value at once, and ONE background refresh
    otherwise / absent            "miss": compute; concurrent callers of the same key await the
                                  same computation ("coalesced") instead of computing again
A failed computation is not stored and reaches every waiter; a failed background refresh keeps
the stale value (and is counted in `refresh_errors`). `compute` may return `Computed(value, ttl_s)`
to set a shorter TTL for one value (degraded answers). Single event loop only, no locks needed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any

import orjson

HIT, STALE, MISS, COALESCED = "hit", "stale", "miss", "coalesced"


@dataclasses.dataclass(frozen=True, slots=True)
class Computed:
    """A computed value with its own freshness (seconds; swr_s None = the cache's default) and tags
    only known once computed (e.g. the series in an answer)."""

    value: Any
    ttl_s: float
    swr_s: float | None = None
    tags: tuple[str, ...] = ()


def held_json(obj: Any) -> bytes:
    """`orjson.dumps(obj)` in a bytes object of its own length: for JSON held for long (a cached answer's
    body, a last-known row's documents).

    Why: orjson (3.13) returns its output in the buffer it wrote into, which is many times the output's
    length (tracemalloc: a 430-byte document held a 16 KB allocation, a 2.4 KB one 64 KB). Transient,
    that costs nothing; held, each buffer pins heap pages. A serving miss held three (its answer, its
    row's two documents): ~12 KB of the ~26 KB the heap grew by per miss until the caches fill, and each
    new page is a page fault on the request path (the kernel's page zeroing was 6.8% of a loaded
    server's CPU). The copy costs ~0.1 us per KB."""
    return bytes(memoryview(orjson.dumps(obj)))  # bytes(bytes) would return the same object, not a copy


# Per key, the value in `_values` (LRU order) and a flat tuple (fresh_until, stale_until, *tags) in
# `_meta`; each tag's keys are a dict used as an ordered set. Why flat: CPython stops tracking a tuple
# whose items are all untracked (strings, bytes, numbers), but it checks only during a collection of the
# tuple's generation, one nesting level per pass. A nested entry survives the young collections still
# tracked, reaches the old generation, and stays there until a full collection: a filling cache then
# triggers full collections every few seconds, each walking every entry (measured: 9-50 ms pauses in a
# long run, every request in flight waiting; benchmarks/gc_pause.py). A flat tuple is untracked by the
# first young collection. The cached value should be a flat tuple too (serving/service.py caches
# `Rendered.cached()`); an exact dict of untracked items is never tracked at all.
_FRESH, _STALE = 0, 1
_TAGS = slice(2, None)


class TtlCache:
    def __init__(
        self,
        ttl_s: float,
        swr_s: float = 0.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        on_refresh_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.ttl_s, self.swr_s, self.max_entries = ttl_s, swr_s, max_entries
        self._clock = clock
        self._values: OrderedDict[Hashable, Any] = OrderedDict()  # LRU order
        self._meta: dict[Hashable, tuple] = {}  # (fresh_until, stale_until, *tags)
        self._inflight: dict[Hashable, asyncio.Future] = {}
        self._tags: dict[str, dict[Hashable, None]] = {}
        self._on_refresh_error = on_refresh_error
        self._background: set[asyncio.Task] = set()
        self.refresh_errors = 0
        self.generation = 0  # bumped by clear/purge: a computation started before must not be stored

    def __len__(self) -> int:
        return len(self._values)

    def peek(self, key: Hashable, allow_stale: bool = True) -> Any | None:
        """The stored value (fresh, or within the stale window if allow_stale) without computing."""
        meta = self._meta.get(key)
        if meta is None:
            return None
        now = self._clock()
        limit = meta[_STALE] if allow_stale else meta[_FRESH]
        return self._values[key] if now < limit else None

    async def get_or_compute(
        self, key: Hashable, compute: Callable[[], Awaitable[Any]], tags: Iterable[str] = ()
    ) -> tuple[Any, str]:
        meta = self._meta.get(key)
        now = self._clock()
        if meta is not None:
            if now < meta[_FRESH]:
                self._values.move_to_end(key)
                return self._values[key], HIT
            if now < meta[_STALE]:
                self._values.move_to_end(key)
                if key not in self._inflight:
                    self._start(key, compute, tags, background=True)
                return self._values[key], STALE
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending), COALESCED
        return await asyncio.shield(self._start(key, compute, tags, background=False)), MISS

    def _start(self, key: Hashable, compute, tags: Iterable[str], background: bool) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._inflight[key] = future
        generation = self.generation
        tags = tuple(tags)

        async def run() -> None:
            try:
                result = await compute()
            except BaseException as exc:  # reaches every waiter; a background failure keeps the stale value
                if background:
                    self.refresh_errors += 1
                    if self._on_refresh_error is not None:
                        self._on_refresh_error(exc)
                if not future.done():
                    future.set_exception(exc)
                    if background:
                        future.exception()  # nobody awaits a background refresh: mark it retrieved
                if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                    raise
            else:
                value = result.value if isinstance(result, Computed) else result
                if generation == self.generation:
                    self.put(key, result, tags)
                if not future.done():
                    future.set_result(value)
            finally:
                if self._inflight.get(key) is future:
                    del self._inflight[key]

        task = loop.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return future

    def put(self, key: Hashable, value: Any, tags: Iterable[str] = ()) -> None:
        ttl, swr = self.ttl_s, self.swr_s
        tags = tuple(tags)
        if isinstance(value, Computed):
            ttl, swr = value.ttl_s, (self.swr_s if value.swr_s is None else value.swr_s)
            tags = tuple(dict.fromkeys(tags + value.tags))
            value = value.value
        now = self._clock()
        self._drop(key)
        self._values[key] = value
        self._meta[key] = (now + ttl, now + ttl + swr, *tags)
        for tag in tags:
            keys = self._tags.get(tag)
            if keys is None:
                self._tags[tag] = {key: None}
            else:
                keys[key] = None
        while len(self._values) > self.max_entries:
            self._drop(next(iter(self._values)))

    def _drop(self, key: Hashable) -> None:
        meta = self._meta.pop(key, None)
        if meta is None:
            return
        del self._values[key]
        for tag in meta[_TAGS]:
            keys = self._tags.get(tag)
            if keys is not None:
                keys.pop(key, None)
                if not keys:
                    del self._tags[tag]

    def purge_tags(self, tags: Iterable[str]) -> int:
        """Drop every entry carrying any of `tags`; returns how many went."""
        keys = set().union(*(self._tags.get(t, ()) for t in tags))
        for key in keys:
            self._drop(key)
        self.generation += 1
        return len(keys)

    def clear(self) -> int:
        n = len(self._values)
        self._values.clear()
        self._meta.clear()
        self._tags.clear()
        self.generation += 1
        return n
