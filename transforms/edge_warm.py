"""WarmNextUp: play_start events -> the next episode's chunks fetched through the edge, once per version.

The planning (which episode, rendition and chunks; the dedupe) is serving/nextup_warm.py, the fetching
serving/prewarm.EdgeWarmer: the same code benchmarks/chunk_replay.py measures. Work is per bundle: a
bundle's jobs are planned in `process` and fetched together in `finish_bundle` with bounded concurrency.

Dedupe is per worker (`WarmedSet`, bounded, in memory): two workers, or a restarted one, may warm the
same episode again, which costs the edge a GET that answers HIT and the origin nothing. A job with any
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
from serving.nextup_warm import WarmedSet, WarmJob, next_up
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

    def setup(self):
        c = self._config
        self._warmer = EdgeWarmer(c.edge_url, c.concurrency, c.timeout_s)
        rewarm_ms = None if c.rewarm_after_s is None else c.rewarm_after_s * 1000
        self._warmed = WarmedSet(c.max_warmed, rewarm_ms)

    def start_bundle(self):
        self._jobs: list[WarmJob] = []
        self._max_ts = None

    def process(self, event: PlaybackEvent, timestamp=beam.DoFn.TimestampParam):
        job = next_up(load_catalog(self._catalog_path), event, self._config.segment_s, self._config.segments)
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
