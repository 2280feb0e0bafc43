"""benchmarks.gc_pause: the production caching path (RecommendationService.get) and LastKnown leave
nothing for a full collection to walk, however many answers and rows they hold."""

from __future__ import annotations

import gc
import json


def test_a_full_cache_and_last_known_add_no_tracked_objects(tmp_path) -> None:
    from benchmarks.gc_pause import main

    out = tmp_path / "gc.json"
    try:
        results = main(["--entries", "2000", "--rows", "500", "--out", str(out)])
    finally:
        gc.unfreeze()  # main() freezes the heap, as the server does; later tests expect a normal one
    assert json.loads(out.read_text()) == results
    assert results["entries"] == 2000
    # Rendered answers as objects added ~4 tracked objects each (8,000 here); as plain tuples, none
    # survive a collection. The few left are the event loop's and the service's own bookkeeping.
    assert results["tracked_objects_added"] < 100, results
    # Last-known rows: none tracked as LastKnown holds them, six a row as FeatureRow objects.
    assert results["last_known_tracked_objects"] < 20 and results["as_objects_tracked_objects"] >= 6 * 500, results
