"""WarmNextUp: play_start events -> the next episode's chunks fetched through the edge, once per version.

The planning (which episode, rendition and chunks; the dedupe) is serving/nextup_warm.py, the fetching
serving/prewarm.EdgeWarmer: the same code benchmarks/chunk_replay.py measures. Work is per bundle: a
bundle's jobs are planned in `process` and fetched together in `finish_bundle` with bounded concurrency.

Entry points: with `first_episodes` on (the default), episode 1 of every released, licensed series is
warmed too, when the worker first sees the catalog and again whenever it changes (a new series, a
licensing change): every new viewer of a series starts there (serving/nextup_warm.first_episodes). That
is what benchmarks/chunk_replay.py's headline mode (`nextup_firsts`) measures. It is bounded by the
catalog's size; a catalog of thousands of series would warm its trending ones instead (serving.prewarm).

Dedupe is per worker process (`WarmedSet`, bounded, in memory, shared by the DoFn instances of the
process: the DirectRunner calls setup() again for every bundle): two workers, or a restarted one, may
warm the same episode again, which costs the edge a GET that answers HIT and the origin nothing. A job with any
failed chunk is forgotten, so the next play_start of its predecessor retries it, and counted (a failed
warm loses no data: the viewer's player fetches the chunk itself, as a miss).
"""

from __future__ import annotations

import dataclasses
import logging

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from cliffhanger.events import PlaybackEvent
from serving.nextup_warm import ENTRY_RENDITIONS, WarmedSet, WarmJob, first_episodes, next_up
from serving.prewarm import EdgeWarmer, tally
from transforms.compute_features import load_catalog

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class WarmResult:
    """One warmed episode: what the edge answered for its chunks (hit = already cached)."""

    episode_id: str
    rendition: str
    version: int
    hit: int
    miss: int
    errors: int


@dataclasses.dataclass(frozen=True)
class WarmConfig:
    edge_url: str
    segment_s: float = 4.0
    segments: int | None = None  # None: every segment of the next episode
    concurrency: int = 8
    timeout_s: float = 5.0
    rewarm_after_s: int | None = 3600
    max_warmed: int = 200_000
    first_episodes: bool = True  # also warm episode 1 of every playable series (see the module docstring)


# Per process, per config: the warmed set and the catalog whose first episodes were warmed last.
_PROCESS_STATE: dict[WarmConfig, list] = {}


def _process_state(config: WarmConfig) -> list:
    """[WarmedSet, catalog last seen]: one per process and config, surviving the DirectRunner's per-bundle setup()."""
    if config not in _PROCESS_STATE:
        rewarm_ms = None if config.rewarm_after_s is None else config.rewarm_after_s * 1000
        _PROCESS_STATE[config] = [WarmedSet(config.max_warmed, rewarm_ms), None]
    return _PROCESS_STATE[config]


class _WarmNextUpFn(beam.DoFn):
    def __init__(self, catalog_path: str, config: WarmConfig):
        self._catalog_path = catalog_path
        self._config = config
        self._jobs_counter = Metrics.counter("prewarm", "episodes_warmed")
        self._deduped = Metrics.counter("prewarm", "already_warmed")
        self._nothing = Metrics.counter("prewarm", "no_next_up")
        self._chunks_hit = Metrics.counter("prewarm", "chunks_hit")
        self._chunks_miss = Metrics.counter("prewarm", "chunks_fetched")
        self._chunks_failed = Metrics.counter("prewarm", "chunks_failed")
        self._firsts = Metrics.counter("prewarm", "first_episodes_warmed")

    def setup(self):
        c = self._config
        self._warmer = EdgeWarmer(c.edge_url, c.concurrency, c.timeout_s)
        self._state = _process_state(c)
        self._warmed = self._state[0]

    def start_bundle(self):
        self._jobs: list[WarmJob] = []
        self._max_ts = None

    def process(self, event: PlaybackEvent, timestamp=beam.DoFn.TimestampParam):
        catalog = load_catalog(self._catalog_path)
        if self._config.first_episodes and self._state[1] is not catalog:  # first sight, or the catalog changed
            self._state[1] = catalog
            c = self._config
            for job in first_episodes(catalog, ENTRY_RENDITIONS, c.segment_s, event.event_time_ms, c.segments):
                if self._warmed.claim(job.key, event.event_time_ms):
                    self._jobs.append(job)
                    self._firsts.inc()
            self._max_ts = timestamp if self._max_ts is None or timestamp > self._max_ts else self._max_ts
        job = next_up(catalog, event, self._config.segment_s, self._config.segments)
        if job is None:
            self._nothing.inc()
            return
        if not self._warmed.claim(job.key, event.event_time_ms):
            self._deduped.inc()
            return
        self._jobs.append(job)
        self._max_ts = timestamp if self._max_ts is None or timestamp > self._max_ts else self._max_ts

    def finish_bundle(self):
        if not self._jobs:
            return
        answers = self._warmer.fetch([p for job in self._jobs for p in job.paths])
        at = 0
        for job in self._jobs:
            counts, at = tally(answers[at : at + len(job.paths)]), at + len(job.paths)
            result = WarmResult(job.episode_id, job.rendition, job.version, counts.hit, counts.miss, counts.errors)
            self._jobs_counter.inc()
            self._chunks_hit.inc(result.hit)
            self._chunks_miss.inc(result.miss)
            if result.errors:
                self._chunks_failed.inc(result.errors)
                self._warmed.release(job.key)  # the next play_start of its predecessor tries again
                self._state[1] = None  # and entry points are planned again on the next event (claims dedupe)
                _LOG.warning(
                    "warming %s %s: %d of %d chunks failed", job.episode_id, job.rendition, result.errors, counts.paths
                )
            yield WindowedValue(result, self._max_ts, [GlobalWindow()])
        self._jobs = []

    def teardown(self):
        warmer = getattr(self, "_warmer", None)
        if warmer is not None:
            warmer.close()


def is_play_start(event: PlaybackEvent) -> bool:
    return event.event_type == "play_start"


class WarmNextUp(beam.PTransform):
    """PlaybackEvent -> WarmResult per next-up episode fetched through the edge (see the module docstring)."""

    def __init__(self, catalog_path: str, config: WarmConfig):
        super().__init__()
        self._catalog_path = catalog_path
        self._config = config

    def expand(self, events):
        return (
            events
            | "KeepPlayStarts" >> beam.Filter(is_play_start)
            | "FetchThroughEdge" >> beam.ParDo(_WarmNextUpFn(self._catalog_path, self._config))
        )
