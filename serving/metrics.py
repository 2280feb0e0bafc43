"""Prometheus metrics, one registry per app (tests can build many apps in one process)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Request stages are sub-millisecond to tens of ms; buckets resolve the 1-50 ms budget.
STAGE_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0)
GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


def watch_collections(on_pause: Callable[[int, float], None]) -> Callable[[], None]:
    """Call on_pause(generation, seconds) after every garbage collection from now on; returns the
    function that stops it. The collector does not run collections inside its own callbacks, so
    on_pause cannot be re-entered (a histogram's locks are safe here)."""
    started = [0.0]

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            on_pause(info["generation"], time.perf_counter() - started[0])

    gc.callbacks.append(callback)
    return lambda: gc.callbacks.remove(callback)


class _Children(dict):
    """A labelled metric's children by label value(s), made once: `labels()` costs a few microseconds
    (lock, tuple, dict) and the request path calls it about ten times."""

    def __init__(self, metric) -> None:
        super().__init__()
        self.metric = metric

    def __missing__(self, key):
        child = self[key] = self.metric.labels(*key) if isinstance(key, tuple) else self.metric.labels(key)
        return child


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage = Histogram(
            "cliffhanger_stage_seconds",
            "Latency of each request stage (feature_read, retrieval, blend, rerank, rules, recommend, total)",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.responses = Counter(
            "cliffhanger_recommendations_total", "Answers by ladder rung and ranking", ["rung", "ranking"], registry=r
        )
        self.fallbacks = Counter("cliffhanger_fallbacks_total", "Degradations taken, by reason", ["reason"], registry=r)
        self.cache = Counter(
            "cliffhanger_cache_lookups_total", "In-process response cache lookups", ["result"], registry=r
        )
        self.cache_hit_ratio = Gauge(
            "cliffhanger_cache_hit_ratio", "Share of response-cache lookups answered from cache (hit+stale)", registry=r
        )
        self.cache_entries = Gauge("cliffhanger_cache_entries", "Entries in the response cache", registry=r)
        self.rule_drops = Counter(
            "cliffhanger_rule_drops_total", "Candidates removed by the series rules", ["rule"], registry=r
        )
        self.bundle_info = Gauge(
            "cliffhanger_bundle_info", "The bundle being served (value 1)", ["version"], registry=r
        )
        self.bundle_swaps = Counter("cliffhanger_bundle_swaps_total", "Bundles swapped in", registry=r)
        self.bundle_refused = Counter(
            "cliffhanger_bundle_refused_total", "Published bundles refused", ["reason"], registry=r
        )
        self.shared_refresh = Counter(
            "cliffhanger_shared_rows_refresh_total", "Background reads of shared rows", ["result"], registry=r
        )
        self.bad_requests = Counter("cliffhanger_bad_requests_total", "400 answers", ["field"], registry=r)
        self.catalog_events = Counter(
            "cliffhanger_catalog_events_total",
            "Catalog events seen by serving: applied, stale, unresolved, invalid, pull_error",
            ["outcome"],
            registry=r,
        )
        self.replica = Counter(
            "cliffhanger_replica_updates_total",
            "Edge replica updates: applied, stale (older or equal version), reconciled, reconcile_error; from the "
            "notice feed: notice_pending, notice_cold (not hot), notice_invalid, notice_fetch_error, notice_pull_error",
            ["result"],
            registry=r,
        )
        self.chunks = Counter(
            "cliffhanger_chunks_total", "Chunk requests at the origin: served, not_found", ["result"], registry=r
        )
        self.gc_pause = Histogram(
            "cliffhanger_gc_pause_seconds",
            "Garbage-collector pauses by generation (2: full collections); every request in flight waits",
            ["generation"],
            buckets=GC_BUCKETS,
            registry=r,
        )
        self._served = 0
        self._lookups = 0
        # request-path children: stages["blend"], answers[(rung, ranking)], cache_results["hit"], ...
        self.stages, self.answers = _Children(self.stage), _Children(self.responses)
        self.cache_results = _Children(self.cache)
        self.fallback_reasons, self.rules_dropped = _Children(self.fallbacks), _Children(self.rule_drops)

    def cache_lookup(self, result: str) -> None:
        self.cache_results[result].inc()
        self._lookups += 1
        if result in ("hit", "stale", "coalesced"):
            self._served += 1
        self.cache_hit_ratio.set(self._served / self._lookups)

    def set_bundle(self, old: str | None, new: str) -> None:
        if old is not None:
            self.bundle_info.remove(old)
        self.bundle_info.labels(new).set(1)

    def watch_gc(self) -> Callable[[], None]:
        """Observe every collection's pause into `gc_pause` from now on; returns the function that stops
        it (the app's shutdown calls it: tests build many apps in one process)."""
        pauses = [self.gc_pause.labels(str(generation)) for generation in range(3)]
        return watch_collections(lambda generation, seconds: pauses[generation].observe(seconds))

    def render(self) -> bytes:
        return generate_latest(self.registry)
