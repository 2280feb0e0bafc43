"""The edge replica: a serving node's local copy of hot item data (episode features and embeddings of
trending episodes), updated by versioned change notices and healed by periodic reconciliation.

    replica = EdgeReplica(store, metrics)
    replica.apply(row)                    # a Bigtable row (version = its as_of_ms)
    replica.apply(item, version)          # an ItemUpdate carrying features, or
    replica.apply(notice)                 # a ChangeNotice: "episode X is at version V now" -> fetched
    await replica.fetch_pending(executor) # read the rows notices pointed at
    await replica.reconcile(hot, executor, bundle)   # re-read the whole hot set; heals missed notices

The live feed: the features pipeline publishes an episode notice (topic `item-changes`, at most one
per episode per second of event time) after the episode's row is written; serving/notice_feed.py pulls
them, applies those for hot episodes (`is_hot`) and reads the announced rows with one batched read per
pull. Reconciliation stays the healer for what the feed misses (a notice lost or rate-limited away, a
disconnected node, late events that do not move `as_of_ms`).

Versions. For an episode the version is the row's `as_of_ms`: the event-time watermark the features
pipeline stamps on every cell of the row (ItemState.as_of_ms only grows), so a row read from Bigtable
and a notice about it compare without any other bookkeeping. An episode notice carries that number
as its `version`. Rules, per episode:
  * a notice or update older than what the replica holds never overwrites it;
  * an equal version is a duplicate (Pub/Sub delivers at least once) and changes nothing, EXCEPT from
    reconcile, which reads the authoritative store: late events can change a row's counters without
    moving its watermark, and reconcile is what picks those up;
  * a notice carries no data: it records that version V exists (`pending`) and the row is read.

Reconciliation (every `replica_reconcile_s`, and on demand): re-read every hot episode's row in one
batch, apply as authoritative, drop episodes that left the hot set, and copy their embeddings from the
loaded bundle (keyed by bundle version: a new bundle replaces them all). A node that missed notices,
or was disconnected, matches Bigtable after one pass.

Hot set (`hot_episodes`): for every cohort row's trending series, its first `per_series` episodes
(where new viewers enter), plus the top `top_plays` episodes of the global popularity list.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np

from cliffhanger.catalog import Catalog
from cliffhanger.notices import ChangeNotice
from serving import candidates as cand_mod
from serving.feature_store import FeatureRow, FeatureStore
from serving.metrics import Metrics
from transforms import rowkeys

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class ItemUpdate:
    episode_id: str
    features: Mapping[str, Any]  # family `i` columns


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    version: int
    features: Mapping[str, Any]


def row_version(row: FeatureRow) -> int:
    """An episode row's version: its `as_of_ms` column, else its newest cell timestamp (same number)."""
    as_of = row.get("i", "as_of_ms")
    return int(as_of) if isinstance(as_of, int | float) else row.newest_ms("i")


def hot_episodes(
    catalog: Catalog,
    cohort_rows: Iterable[FeatureRow | None],
    global_row: FeatureRow | None,
    *,
    per_series: int = 2,
    top_plays: int = 50,
) -> list[str]:
    """Trending series' first `per_series` episodes (every cohort) + the global list's top `top_plays`."""
    out: dict[str, None] = {}
    for row in cohort_rows:
        for entry in (row.get("i", "trending_series", []) if row is not None else []) or []:
            if len(entry) == 2 and entry[0] in catalog:
                out.update((e.episode_id, None) for e in catalog.series(entry[0]).episodes[:per_series])
    raw = global_row.get(cand_mod.FAMILY, cand_mod.COLUMN) if global_row is not None else None
    if raw is not None:
        try:
            items = cand_mod.parse(raw).items[:top_plays]
        except (cand_mod.CandidateListError, TypeError, ValueError):
            log.warning("global candidate list unreadable: hot set without top plays")
            items = []
        out.update((str(e), None) for e, _ in items)
    return list(out)


class EdgeReplica:
    def __init__(
        self,
        store: FeatureStore,
        metrics: Metrics | None = None,
        *,
        on_update: Callable[[str, Mapping[str, Any]], None] | None = None,
        read_timeout_s: float = 2.0,
    ) -> None:
        self.store, self.metrics, self.on_update = store, metrics or Metrics(), on_update
        self.read_timeout_s = read_timeout_s
        self.entries: dict[str, Entry] = {}
        self.pending: dict[str, int] = {}  # episode -> newest version a notice announced, not read yet
        self.embeddings: dict[str, np.ndarray] = {}
        self.embeddings_version: str | None = None
        self.hot: tuple[str, ...] = ()
        self._hot_set: frozenset[str] = frozenset()

    def is_hot(self, episode_id: str) -> bool:
        """In the hot set of the last reconciliation (empty until the first one)."""
        return episode_id in self._hot_set

    def version(self, episode_id: str) -> int | None:
        entry = self.entries.get(episode_id)
        return None if entry is None else entry.version

    def apply(
        self, update: ChangeNotice | FeatureRow | ItemUpdate, version: int | None = None, *, authoritative: bool = False
    ) -> bool:
        """True if the replica moved forward (or, for a notice, will fetch); False for old / duplicate."""
        if isinstance(update, ChangeNotice):
            if update.entity != "episode":
                return False
            v = update.version if version is None else version
            held = self.version(update.id)
            if held is not None and v <= held or v <= self.pending.get(update.id, -1):
                self.metrics.replica.labels("stale").inc()
                return False
            self.pending[update.id] = v
            return True
        if isinstance(update, FeatureRow):
            episode_id = rowkeys.parse_key(update.key)[1]
            features = update.values.get("i", {})
            v = row_version(update) if version is None else version
        else:
            if version is None:
                raise ValueError("an ItemUpdate needs its version")
            episode_id, features, v = update.episode_id, update.features, version
        held = self.version(episode_id)
        if held is not None and (v < held or (v == held and not authoritative)):
            self.metrics.replica.labels("stale").inc()
            return False
        self.entries[episode_id] = Entry(v, dict(features))
        if self.pending.get(episode_id, -1) <= v:
            self.pending.pop(episode_id, None)
        self.metrics.replica.labels("reconciled" if authoritative else "applied").inc()
        if self.on_update is not None:
            self.on_update(episode_id, features)
        return True

    async def _read(self, episode_ids: Sequence[str], executor: Executor | None) -> dict[bytes, FeatureRow]:
        keys = [rowkeys.episode_key(e) for e in episode_ids]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, self.store.read_direct, keys, self.read_timeout_s)

    async def fetch_pending(self, executor: Executor | None = None) -> int:
        """Read the rows announced by notices; returns how many entries moved forward."""
        wanted = list(self.pending)
        if not wanted:
            return 0
        rows = await self._read(wanted, executor)
        return sum(self.apply(row) for row in rows.values())

    async def reconcile(self, hot: Sequence[str], executor: Executor | None = None, bundle: Any = None) -> int:
        """Re-read the hot set (authoritative), forget what left it, refresh embeddings. Returns the
        number of entries that changed; raises what the read raises (the caller counts and retries)."""
        try:
            rows = await self._read(hot, executor)
        except Exception:
            self.metrics.replica.labels("reconcile_error").inc()
            raise
        changed = sum(self.apply(row, authoritative=True) for row in rows.values())
        keep = frozenset(hot)
        for gone in [e for e in self.entries if e not in keep]:
            del self.entries[gone]
        for gone in [e for e in self.pending if e not in keep]:
            del self.pending[gone]  # left the hot set: no longer worth a read
        self.hot, self._hot_set = tuple(hot), keep
        if bundle is not None:
            self.set_embeddings(bundle.version, bundle.item_ids, bundle.item_embeddings)
        return changed

    def set_embeddings(self, version: str, item_ids: Sequence[Any], matrix: np.ndarray) -> None:
        """Copy the hot episodes' vectors ([dim] float32 each) from a bundle's item embeddings."""
        index = {str(i): k for k, i in enumerate(item_ids)}
        self.embeddings = {e: np.array(matrix[index[e]], dtype=np.float32) for e in self.hot if e in index}
        self.embeddings_version = version

    def snapshot(self) -> dict[str, tuple[int, dict[str, Any]]]:
        return {e: (entry.version, dict(entry.features)) for e, entry in self.entries.items()}


async def reconcile_forever(
    replica: EdgeReplica,
    hot: Callable[[], Sequence[str]],
    bundle: Callable[[], Any],
    executor: Executor,
    every_s: float,
    first_delay_s: float = 2.0,
) -> None:
    """The periodic reconciliation task: a failed pass is counted and logged, the next one retries.
    The first pass waits `first_delay_s` (the shared rows naming the hot set load first)."""
    await asyncio.sleep(first_delay_s)
    while True:
        try:
            await replica.reconcile(hot(), executor, bundle())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # counted in reconcile(); the replica keeps its values until next pass
            log.warning("edge replica reconcile failed: %s", exc)
        await asyncio.sleep(every_s)
