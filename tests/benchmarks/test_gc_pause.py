"""benchmarks.gc_pause: the production caching path (RecommendationService.get) and LastKnown leave
nothing for a full collection to walk, however many answers and rows they hold: what they store is
untracked by the young collections, before it reaches the old generation; and each answer and row
holds only its own bytes."""

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
    # Rendered answers as objects added ~4 tracked objects each (8,000 here). As nested tuples, none
    # survived a full collection, but 4,312 survived the young ones into the old generation, where only a
    # full collection looks again. As flat tuples, none survive a young collection. The few left are the
    # event loop's and the service's own bookkeeping.
    assert results["tracked_after_young"] < 100 and results["tracked_objects_added"] < 100, results
    # Last-known rows: none tracked as LastKnown holds them (one a row as nested tuples, until a full
    # collection), six a row as FeatureRow objects.
    assert results["last_known_tracked_after_young"] < 20 and results["last_known_tracked_objects"] < 20, results
    assert results["as_objects_tracked_objects"] >= 6 * 500, results
    # The heap each holds (the default --held 2,000 of each): the JSON is held at its own length, not in
    # orjson's buffers (which took 7,961 bytes an answer and 8,372 a row besides its candidate list).
    assert 1_000 < results["held_bytes_per_answer"] < 5_000, results
    assert 500 < results["held_bytes_per_row"] < 3_000, results
    assert results["held_bytes_per_row_binary_cells"] > 9_000  # the candidate list, counted apart
