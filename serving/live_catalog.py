"""The catalog serving sees, kept current by catalog events (episode drops), with per-series versions.

The catalog file is loaded once at start; after that `LiveCatalog.apply(change)` moves it forward:

    series:drop        a new episode went live. The event carries the episode (optional `episode`
                       object, below), which is appended to its series; an event without it (or for a
                       series serving does not know) makes serving re-read the catalog file and take
                       that series from it.
    series:update      the series is taken from a re-read of the catalog file (metadata lives there).
    licensing:change   same: the new windows are in the file.

Versions: `version` increases per series (cliffhanger.catalog_events). An event whose version is not
above the last applied one for its series is a duplicate or arrived out of order: it changes nothing
(Pub/Sub delivery is at-least-once). A drop that cannot be resolved (no episode details, and the file
does not have it yet) is NOT recorded as applied, so a redelivery or a later event can still apply it.

The optional drop payload (producers may add fields; the invalidation pipeline ignores it):

    {"type": "series:drop", "series_id": "s0001", "episode_id": "s0001e013", "version": 4,
     "event_time_ms": 1795262400000,
     "episode": {"episode_number": 13, "duration_ms": 94000, "release_time_ms": 1795262400000}}

Each applied change builds a NEW immutable `Catalog` and swaps one reference (`current`); listeners
(`on_change`) then swap what they derived from it (the recommender's episode table, shared rows). All
of this runs on the event loop, like the requests, so a request never sees a half-applied change.

Drop windows (for edge TTLs, serving/ttl_policy.py): a series is "dropping" at `now` if one of its
episodes is released within `window_ms` of now (before or after: a scheduled release in the catalog
becomes playable at its release time with no event at all), or a drop event for it arrived within the
last `window_ms`.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import logging
from collections.abc import Callable, Iterable

from cliffhanger.catalog import Catalog, CatalogError, Episode, Series
from cliffhanger.catalog_events import SERIES_DROP, CatalogEvent, CatalogEventError, parse_catalog_event

log = logging.getLogger(__name__)

APPLIED, STALE, UNRESOLVED = "applied", "stale", "unresolved"


@dataclasses.dataclass(frozen=True)
class CatalogChange:
    event: CatalogEvent
    episode: Episode | None = None  # series:drop with the episode's details


def parse_change(payload: bytes | str) -> CatalogChange:
    """A catalog event plus the optional `episode` object of a drop; CatalogEventError names the field."""
    event = parse_catalog_event(payload)
    if event.type != SERIES_DROP:
        return CatalogChange(event)
    raw = json.loads(payload).get("episode")
    if raw is None:
        return CatalogChange(event)
    if not isinstance(raw, dict):
        raise CatalogEventError("episode", "must be an object")
    values = {}
    for name in ("episode_number", "duration_ms", "release_time_ms"):
        value = raw.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if name != "release_time_ms" else 0):
            raise CatalogEventError(f"episode.{name}", "required, a positive integer")
        values[name] = value
    return CatalogChange(event, Episode(event.episode_id, event.series_id, **values))


def drop_payload(event: CatalogEvent, episode: Episode) -> bytes:
    """What a producer publishes for a drop that carries its episode (tests, the demo)."""
    obj = json.loads(event.to_json())
    obj["episode"] = {
        "episode_number": episode.episode_number,
        "duration_ms": episode.duration_ms,
        "release_time_ms": episode.release_time_ms,
    }
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


class LiveCatalog:
    def __init__(
        self,
        catalog: Catalog,
        *,
        window_ms: int = 600_000,
        reload: Callable[[], Catalog] | None = None,
    ) -> None:
        self.current = catalog
        self.window_ms = window_ms
        self._reload = reload
        self.versions: dict[str, int] = {}
        self.drop_seen_ms: dict[str, int] = {}  # series -> event time of its latest applied drop
        self.listeners: list[Callable[[Catalog, CatalogChange], None]] = []
        self._releases: list[tuple[int, str]] = []
        self._index_releases()

    def on_change(self, listener: Callable[[Catalog, CatalogChange], None]) -> None:
        self.listeners.append(listener)

    def apply(self, change: CatalogChange) -> str:
        """APPLIED, STALE (duplicate / out of order) or UNRESOLVED (nothing to apply yet)."""
        event = change.event
        if event.version <= self.versions.get(event.series_id, -1):
            return STALE
        series = self._resolved_series(change)
        if series is None:
            log.warning("catalog event %s v%d for %s: nothing to apply yet", event.type, event.version, event.series_id)
            return UNRESOLVED
        others = [s for s in self.current if s.series_id != series.series_id]
        self.current = Catalog([*others, series])
        self.versions[event.series_id] = event.version
        if event.type == SERIES_DROP:
            self.drop_seen_ms[event.series_id] = max(event.event_time_ms, self.drop_seen_ms.get(event.series_id, 0))
        self._index_releases()
        for listener in self.listeners:
            listener(self.current, change)
        return APPLIED

    def _resolved_series(self, change: CatalogChange) -> Series | None:
        event = change.event
        known = event.series_id in self.current
        if event.type == SERIES_DROP and known:
            series = self.current.series(event.series_id)
            if any(e.episode_id == event.episode_id for e in series.episodes):
                return series  # already there (the file had it): only the version and drop time move
            ep = change.episode
            if ep is not None and ep.episode_number == len(series.episodes) + 1:
                return dataclasses.replace(series, episodes=(*series.episodes, ep))
        fresh = self._reread()
        if fresh is None or event.series_id not in fresh:
            return None
        series = fresh.series(event.series_id)
        if event.type == SERIES_DROP and not any(e.episode_id == event.episode_id for e in series.episodes):
            return None
        return series

    def _reread(self) -> Catalog | None:
        if self._reload is None:
            return None
        try:
            return self._reload()
        except CatalogError as exc:  # the old catalog keeps serving; the event stays unapplied
            log.warning("catalog re-read failed: %s", exc)
            return None

    def _index_releases(self) -> None:
        self._releases = sorted((e.release_time_ms, e.series_id) for e in self.current.episodes())
        self._release_times = [t for t, _ in self._releases]

    def recent_drops(self, now_ms: int) -> list[str]:
        """Series with a new episode live in the last `window_ms` (released by `now_ms`, or a drop event
        seen), newest first: a drop trends before its plays have accumulated (serving/blend.py)."""
        latest: dict[str, int] = {}
        lo = bisect.bisect_left(self._release_times, now_ms - self.window_ms)
        hi = bisect.bisect_right(self._release_times, now_ms)
        for i in range(lo, hi):
            t, sid = self._releases[i]
            latest[sid] = max(t, latest.get(sid, 0))
        for sid, seen in self.drop_seen_ms.items():
            if now_ms - self.window_ms <= seen <= now_ms and sid in self.current:
                latest[sid] = max(seen, latest.get(sid, 0))
        return sorted(latest, key=lambda sid: (-latest[sid], sid))

    def dropping(self, series_ids: Iterable[str], now_ms: int) -> bool:
        """True if any of these series is inside its drop window at `now_ms`."""
        wanted = set(series_ids)
        if not wanted:
            return False
        for sid in wanted:
            seen = self.drop_seen_ms.get(sid)
            if seen is not None and now_ms - self.window_ms <= seen <= now_ms + self.window_ms:
                return True
        lo = bisect.bisect_left(self._release_times, now_ms - self.window_ms)
        hi = bisect.bisect_right(self._release_times, now_ms + self.window_ms)
        return any(self._releases[i][1] in wanted for i in range(lo, hi))
