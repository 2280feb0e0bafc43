"""Metrics.watch_gc: every collection's pause lands in cliffhanger_gc_pause_seconds by generation, until
the returned function stops it."""

from __future__ import annotations

import gc

from serving.metrics import Metrics


def _count(m: Metrics, generation: int) -> float:
    return m.registry.get_sample_value("cliffhanger_gc_pause_seconds_count", {"generation": str(generation)}) or 0.0


def test_collections_are_observed_by_generation_until_stopped() -> None:
    m = Metrics()
    callbacks = len(gc.callbacks)
    stop = m.watch_gc()
    before = [_count(m, g) for g in range(3)]
    gc.collect(2)
    gc.collect(0)
    gc.collect(0)
    stop()
    seen = [_count(m, g) - b for g, b in enumerate(before)]
    # at least these (another thread's allocations may trigger a collection meanwhile)
    assert seen[0] >= 2 and seen[2] >= 1, seen
    gc.collect(2)  # after stop: not observed
    assert [_count(m, g) - b for g, b in enumerate(before)] == seen
    assert len(gc.callbacks) == callbacks  # nothing left behind
    total = m.registry.get_sample_value("cliffhanger_gc_pause_seconds_sum", {"generation": "2"})
    assert 0 < total < 5  # seconds: a pause was measured, not a timestamp
