"""Shared rows: data that is the same for every user (episode features, cohort trending, segment and
global candidate lists), kept in process and refreshed in the background, never read on the request path.

Why not read candidate item features per request: measured against the Bigtable emulator here, one
ReadRows of 500 episode rows costs 27-80 ms on the server side alone (the whole budget), while a user
row costs about 1 ms. Item features change on a minutes scale and are identical for every user, so a
per-process copy refreshed every `ttl_s` is both cheaper and as fresh as the pipeline's windows.

    shared = SharedRows(store, executor, metrics, ttl_s=30)
    shared.track(keys)                 # rows to keep fresh (all catalog episodes, segments, cohorts)
    task = shared.start()              # background refresher
    shared.row(key) -> FeatureRow | None       # never blocks; unknown keys are tracked and fetched soon
    shared.items(episode_ids) -> {episode_id: (plays_24h, completion_rate_24h)}

Failures of the refresher are counted (`cliffhanger_shared_rows_refresh_total{result="error"}`) and
the previous values stay (served stale; `age_ms()` tells by how much).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor

from serving.feature_store import FeatureRow, FeatureStore
from serving.metrics import Metrics
from serving.rerank import ITEM_COLUMN_RANGE, ITEM_COLUMNS
from transforms import rowkeys

log = logging.getLogger(__name__)
BATCH = 200  # rows per background read: short GIL slices for the request path


class SharedRows:
    def __init__(
        self,
        store: FeatureStore,
        executor: Executor,
        metrics: Metrics,
        *,
        ttl_s: float = 30.0,
        read_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.store, self.executor, self.metrics = store, executor, metrics
        self.ttl_s, self.read_timeout_s = ttl_s, read_timeout_s
        self._clock, self._wall_ms = clock, wall_ms
        self._rows: dict[bytes, FeatureRow | None] = {}
        self._items: dict[str, tuple[float, float]] = {}
        self._fetched: dict[bytes, float] = {}  # key -> monotonic time of its last successful read
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.last_success_ms = 0
        self.first_pass_done = False  # readiness waits for one attempt (success or failure)

    def track(self, keys: Iterable[bytes]) -> None:
        new = False
        for key in keys:
            if key not in self._fetched:
                self._fetched[key] = float("-inf")
                new = True
        if new:
            self._wake.set()

    def track_episodes(self, episode_ids: Iterable[str]) -> None:
        self.track(rowkeys.episode_key(e) for e in episode_ids)

    def row(self, key: bytes) -> FeatureRow | None:
        if key not in self._fetched:
            self.track([key])
        return self._rows.get(key)

    def items(self, episode_ids: Iterable[str]) -> dict[str, tuple[float, float]]:
        """Known features of these episodes; unknown ones are tracked for the next refresh."""
        out, unknown = {}, []
        items = self._items
        for eid in episode_ids:
            stats = items.get(eid)
            if stats is None:
                unknown.append(eid)
            else:
                out[eid] = stats
        if unknown:
            self.track_episodes(unknown)
        return out

    def age_ms(self) -> int | None:
        return None if not self.last_success_ms else max(0, self._wall_ms() - self.last_success_ms)

    def _store(self, keys: list[bytes], rows: dict[bytes, FeatureRow], now: float) -> None:
        for key in keys:
            row = rows.get(key)
            self._rows[key] = row
            self._fetched[key] = now
            if key.startswith(b"e#"):  # an absent episode row is known too: nobody played it yet
                i = row.values.get("i", {}) if row is not None else {}
                _, episode_id = rowkeys.parse_key(key)
                self._items[episode_id] = tuple(float(i.get(c) or 0.0) for c in ITEM_COLUMNS)

    async def refresh_due(self) -> bool:
        """Read every tracked key older than ttl (in batches). False if a read failed (counted, logged)."""
        now = self._clock()
        due = [k for k, t in self._fetched.items() if now - t >= self.ttl_s]
        episodes = [k for k in due if k.startswith(b"e#")]
        others = [k for k in due if not k.startswith(b"e#")]
        loop = asyncio.get_running_loop()
        batches = [(others[i : i + BATCH], None) for i in range(0, len(others), BATCH)]
        batches += [(episodes[i : i + BATCH], ITEM_COLUMN_RANGE) for i in range(0, len(episodes), BATCH)]
        for batch, columns in batches:
            try:
                rows = await asyncio.wait_for(
                    loop.run_in_executor(self.executor, self.store.read_direct, batch, self.read_timeout_s, columns),
                    self.read_timeout_s + 0.5,
                )
            except Exception as exc:  # keep the previous values; counted, retried next cycle
                self.metrics.shared_refresh.labels("error").inc()
                log.warning("shared rows refresh failed (%d keys): %s", len(batch), exc)
                return False
            self._store(batch, rows, self._clock())
            self.metrics.shared_refresh.labels("ok").inc()
        if due:
            self.last_success_ms = self._wall_ms()
        return True

    async def run(self) -> None:
        backoff = 0.0
        while True:
            ok = await self.refresh_due()
            self.first_pass_done = True
            if not ok:
                backoff = min(max(0.25, backoff * 2), self.ttl_s)
                await asyncio.sleep(backoff)  # a dead store is not hammered; values stay as they were
                continue
            backoff = 0.0
            self._wake.clear()
            oldest = min(self._fetched.values(), default=None)
            wait = self.ttl_s if oldest is None else max(0.05, oldest + self.ttl_s - self._clock())
            with contextlib.suppress(TimeoutError):  # a timeout means the periodic refresh is due
                await asyncio.wait_for(self._wake.wait(), timeout=min(wait, self.ttl_s))
            await asyncio.sleep(0.01)  # coalesce a burst of newly tracked keys into one read

    def start(self) -> asyncio.Task:
        self._task = asyncio.get_running_loop().create_task(self.run())
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):  # the cancellation we asked for
                await self._task
            self._task = None
