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
                                               # (not episodes: their rows live in the item store only)
    stat_rows, store = shared.item_rows_by_table(table, rows)  # store[stat_rows]: [n, 3], ITEM_COLUMNS order

Failures of the refresher are counted (`cliffhanger_shared_rows_refresh_total{result="error"}`) and
the previous values stay (served stale; `age_ms()` tells by how much).

Episode features are kept column-filtered (ITEM_COLUMN_RANGE: 6 of the family's 11 columns are read)
in one float32 array (`ItemStats`); the request path maps its 500 candidates' catalog rows to rows of
that array with one gather and reads them in serving.kernels.gather_candidates, no per-candidate tuples.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from typing import Any

import numpy as np

from models.ranker_features import ITEM_COLUMNS
from serving.background import BackgroundLoop
from serving.feature_store import FeatureRow, FeatureStore
from serving.metrics import Metrics
from serving.rerank import ITEM_COLUMN_RANGE
from transforms import rowkeys

log = logging.getLogger(__name__)
BATCH = 200  # rows per background read: short GIL slices for the request path


class ItemStats:
    """Per-episode family-`i` values as one float32 array [episodes + 1, len(ITEM_COLUMNS)]; row 0 is
    all zeros and stands for an episode not read yet. Updated by the refresher, read by requests (both
    on the event loop, so no lock)."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._stats = np.zeros((1, len(ITEM_COLUMNS)), dtype=np.float32)
        self.version = 0  # grows when episodes are added (rows of known episodes never move)

    def __len__(self) -> int:
        return len(self._index)

    def update(self, episode_ids: list[str], stats: np.ndarray) -> None:
        """stats: [len(episode_ids), len(ITEM_COLUMNS)], ITEM_COLUMNS order."""
        new = [e for e in dict.fromkeys(episode_ids) if e not in self._index]
        if new:
            base = len(self._stats)
            self._index.update((e, base + i) for i, e in enumerate(new))
            grown = np.zeros((base + len(new), len(ITEM_COLUMNS)), dtype=np.float32)
            grown[:base] = self._stats
            self._stats = grown
            self.version += 1
        rows = [self._index[e] for e in episode_ids]
        self._stats[rows] = np.asarray(stats, dtype=np.float32).reshape(len(rows), len(ITEM_COLUMNS))

    def lookup(self, episode_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """([n, len(ITEM_COLUMNS)] float32 with zeros for unknown episodes, known [n] bool)."""
        get = self._index.get
        rows = np.asarray([get(e, 0) for e in episode_ids], dtype=np.int64)
        return self._stats[rows], rows > 0

    @property
    def table(self) -> np.ndarray:
        """[episodes + 1, len(ITEM_COLUMNS)] float32, row 0 all zeros (see `rows_of`)."""
        return self._stats

    def rows_of(self, table) -> np.ndarray:
        """serving.rerank.EpisodeTable rows -> rows here (cached by the table per `version`)."""
        return table.item_rows(self.version, self._index)


class SharedRows(BackgroundLoop):
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
        self._items = ItemStats()
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
        """The latest read of a shared row (segment and global lists, cohort trending). Episode rows
        are kept as ItemStats only, not as FeatureRow objects: thousands of rows' nested dicts, replaced
        every refresh, would reach the collector's old generation and trigger full collections."""
        if key not in self._fetched:
            self.track([key])
        return self._rows.get(key)

    def item_rows_by_table(self, table, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(each candidate's row in the item store [n] (0: not read yet, all zeros), the store itself
        [episodes + 1, len(ITEM_COLUMNS)] float32), for a gather by the caller (serving.rerank's
        feature_matrix); candidates not read yet are tracked for the next refresh."""
        stat_rows = self._items.rows_of(table)[rows]
        if np.count_nonzero(stat_rows) < len(stat_rows):
            ids = table.episode_ids
            self.track_episodes(ids[r] for r in rows[stat_rows == 0].tolist() if r < table.unknown)
        return stat_rows, self._items.table

    def put_item(self, episode_id: str, i_values: Mapping[str, Any]) -> None:
        """A fresher episode row (from the edge replica, serving/replica.py): requests see it at once."""
        stats = np.asarray([[float(i_values.get(c) or 0.0) for c in ITEM_COLUMNS]], dtype=np.float32)
        self._items.update([episode_id], stats)

    def age_ms(self) -> int | None:
        return None if not self.last_success_ms else max(0, self._wall_ms() - self.last_success_ms)

    def _store(self, keys: list[bytes], rows: dict[bytes, FeatureRow], now: float) -> None:
        episodes, stats = [], []
        for key in keys:
            row = rows.get(key)
            self._fetched[key] = now
            if key.startswith(b"e#"):  # an absent episode row is known too: nobody played it yet
                i = row.values.get("i", {}) if row is not None else {}
                episodes.append(rowkeys.parse_key(key)[1])
                stats.append([float(i.get(c) or 0.0) for c in ITEM_COLUMNS])
            else:  # episode rows live on in ItemStats only (see `row`)
                self._rows[key] = row
        if episodes:
            self._items.update(episodes, np.asarray(stats, dtype=np.float32))

    async def refresh_due(self) -> bool:
        """Read every tracked key older than ttl (in batches). False if a read failed (counted, logged)."""
        now = self._clock()
        due = [k for k, t in self._fetched.items() if now - t >= self.ttl_s]
        episodes = [k for k in due if k.startswith(b"e#")]
        others = [k for k in due if not k.startswith(b"e#")]
        batches = [(others[i : i + BATCH], None) for i in range(0, len(others), BATCH)]
        batches += [(episodes[i : i + BATCH], ITEM_COLUMN_RANGE) for i in range(0, len(episodes), BATCH)]
        for batch, columns in batches:
            try:
                # on the event loop, like the request path: a reader thread would contend for the GIL
                # with requests (switch interval 5 ms: a visible tail), the loop interleaves by message
                rows = await asyncio.wait_for(
                    self.store.read_async(batch, self.read_timeout_s, columns), self.read_timeout_s + 0.5
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
