"""Event-driven next-up pre-warming: when a viewer starts episode k, put episode k+1 at the edge.

A binge viewer goes from episode k to k+1 with the autoplay countdown; the first segments of k+1 are
requested a full episode (1-3 minutes of microdrama) after the `play_start` of k. That is ample time for
a streaming job (pipelines/prewarm.py) to fetch k+1 through the edge once, so the viewer, and everyone
after them, starts it from cache. What is warmed for one event (`next_up`):

  * only on `play_start`: the earliest signal, and one per episode played (progress events add nothing);
  * the next episode of the same series, if there is one, it is released at the event's time and its
    series is licensed in the viewer's country then (an unreleased or unlicensed episode is not played,
    and its chunks must not be fetched ahead of its window);
  * in the rendition the viewer's device plays (`serving.hls.DEFAULT_RENDITION`, as the playlist does);
  * the init section and `segments` segments (None = all of them; viewers who start a microdrama episode
    mostly finish it, and a chunk not warmed is a miss for its first viewer).

Chunk URLs carry the episode's media version and are immutable, cached for a year: an (episode,
rendition, version) warmed once needs no re-warming. `WarmedSet` remembers those, bounded (least
recently warmed forgotten first) and with an optional age after which an entry is warmed again (a GET of
a chunk still cached is a HIT and costs the origin nothing; it re-fetches one the cache evicted).
Pure except for the clock passed in: used by the Beam job and by benchmarks/chunk_replay.py alike.
"""

from __future__ import annotations

import collections
import dataclasses

from cliffhanger.catalog import Catalog
from cliffhanger.events import PlaybackEvent
from serving import hls

FALLBACK_RENDITION = "720p"
ENTRY_RENDITIONS = tuple(sorted(set(hls.DEFAULT_RENDITION.values())))  # every rendition some device plays


@dataclasses.dataclass(frozen=True, slots=True)
class WarmJob:
    """What to fetch through the edge for one event: the chunk paths of one episode in one rendition."""

    episode_id: str
    rendition: str
    version: int
    paths: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.episode_id, self.rendition, self.version)


def rendition_for(device: str) -> str:
    """The rendition a device's playlist names (serving/app.py: `hls.DEFAULT_RENDITION[device]`)."""
    return hls.DEFAULT_RENDITION.get(device, FALLBACK_RENDITION)


def next_up(catalog: Catalog, event: PlaybackEvent, segment_s: float, segments: int | None = None) -> WarmJob | None:
    """The next episode to warm for `event`, or None (not a play_start, last episode, unknown episode,
    next one not yet released or not licensed in the viewer's country at the event's time)."""
    if event.event_type != "play_start":
        return None
    try:
        nxt = catalog.next_episode(event.episode_id)
    except KeyError:
        return None  # an episode this catalog does not know (yet): nothing to plan from
    if nxt is None or nxt.release_time_ms > event.event_time_ms:
        return None
    if not catalog.is_licensed(nxt.series_id, event.country, event.event_time_ms):
        return None
    rendition = rendition_for(event.device)
    paths = hls.episode_paths(nxt, rendition, segment_s)
    if segments is not None:
        paths = paths[: 1 + max(0, segments)]
    return WarmJob(nxt.episode_id, rendition, hls.content_version(nxt), tuple(paths))


class WarmedSet:
    """The (episode, rendition, version) keys already warmed: at most `max_entries`, each for at most
    `max_age_ms` (None = until pushed out). `claim` is the dedupe: True exactly when the caller should warm."""

    def __init__(self, max_entries: int = 200_000, max_age_ms: int | None = 3_600_000):
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._max_entries = max_entries
        self._max_age_ms = max_age_ms
        self._warmed: collections.OrderedDict[tuple, int] = collections.OrderedDict()  # key -> warmed at (ms)

    def __len__(self) -> int:
        return len(self._warmed)

    def __contains__(self, key: object) -> bool:
        return key in self._warmed

    def claim(self, key: tuple, now_ms: int) -> bool:
        """True (and remember `key` as warmed at `now_ms`) unless it was warmed recently enough."""
        at = self._warmed.get(key)
        if at is not None and (self._max_age_ms is None or now_ms - at < self._max_age_ms):
            return False
        self._warmed[key] = now_ms
        self._warmed.move_to_end(key)
        while len(self._warmed) > self._max_entries:
            self._warmed.popitem(last=False)
        return True

    def release(self, key: tuple) -> None:
        """Forget `key` (its warm failed), so the next event for it tries again."""
        self._warmed.pop(key, None)


def first_episodes(
    catalog: Catalog, renditions: tuple[str, ...], segment_s: float, at_ms: int, segments: int | None = None
) -> list[WarmJob]:
    """Episode 1 of every series released and licensed somewhere at `at_ms`, per rendition: a young
    catalog's entry points (every new viewer of a series starts there), warmed once like the trending set."""
    jobs = []
    for series in catalog:
        first = series.episodes[0] if series.episodes else None
        if first is None or first.release_time_ms > at_ms:
            continue
        if not any(series.is_licensed(country, at_ms) for country in series.licensing):
            continue  # shown nowhere now
        for rendition in renditions:
            paths = hls.episode_paths(first, rendition, segment_s)
            if segments is not None:
                paths = paths[: 1 + max(0, segments)]
            jobs.append(WarmJob(first.episode_id, rendition, hls.content_version(first), tuple(paths)))
    return jobs
