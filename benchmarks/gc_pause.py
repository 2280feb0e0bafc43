"""What a full response cache and a full last-known-rows store cost the garbage collector: the full
collections that filling them triggers, and the pause of one.

    python -m benchmarks.gc_pause --entries 50000 --rows 20000 --out gc_pause.json

Why it matters: a full (generation 2) collection walks every tracked object, and while it runs the
event loop stops, so every request in flight waits. A long-running server fills its response cache
(up to `cache_max_entries`, 50,000), and CPython runs a full collection whenever the objects that
survived into the old generation grow by a quarter.

How: `RecommendationService.get`, the production caching path, answers `--entries` distinct requests
from a stub recommender (10 items, as an n=10 answer has), so the cache holds real rendered answers
with their ~25 surrogate keys. Everything made before the fill is frozen (`gc.freeze`, as the server
does after loading a bundle), so what a collection walks is what the cache added. The fill runs with
the collector on, as the server does: the JSON holds the full collections it triggered (count, total
and longest pause), the tracked objects left after the young collections only (what reaches the old
generation, where only a full collection looks again), and the median full-collection time (of 5)
with the cache empty and with it full.

Why both: CPython stops tracking a tuple of untracked items only while collecting the tuple's
generation, one nesting level per pass. Answers held as nested tuples reached the old generation
still tracked: the fill triggered a full collection every few thousand answers, each walking all of
them, although a full collection at the end (the old metric) found nothing left to walk.

Then `--rows` user rows shaped like the emulator's (13 `u` columns, two continue-watching series,
eight completed episodes, a 9.5 KB binary candidate list) go into a `LastKnown` (serving/last_known.py),
and the same number again are kept as FeatureRow objects, as LastKnown held them before: tracked
objects and full-collection time for each.

Last, the heap each held answer and row takes (tracemalloc, over `--held` of each, default 2,000):
what a server's heap grows by per miss until its caches are full. Every new page of it is a page
fault on the request path; orjson's output buffers held instead of the documents' own bytes made it
more than twice as much (serving/cache.py `held_json`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
import tracemalloc
from collections.abc import Callable

from serving import rules
from serving.cache import TtlCache
from serving.feature_store import FeatureRow
from serving.last_known import LastKnown
from serving.metrics import Metrics, watch_collections
from serving.recommend import Recommendation, RecRequest
from serving.service import RecommendationService
from serving.settings import ServingSettings


class _StubRecommender:
    """Ten items across five series, as a personalized n=10 answer looks."""

    async def recommend(self, req: RecRequest) -> Recommendation:
        items = [
            rules.Pick(f"s{k % 5:04d}e{k:03d}", f"s{k % 5:04d}", k, 0.9 - k / 100, "recommended_for_you")
            for k in range(10)
        ]
        freshness = {"feature_age_ms": 1200, "served_stale": False, "stale_parts": [], "generated_ms": 0}
        return Recommendation(items, "personalized", "onnx", [], "bench-v1", freshness, (req.country, req.device))


def user_row(i: int) -> FeatureRow:
    u = {f"feature_{k:02d}": (i * k) % 97 / 7 for k in range(11)}
    u |= {"country": "US", "genre_affinity": [0.1, 0.05, 0.3, 0.2, 0.15, 0.2]}
    values = {
        "u": u,
        "cw": {f"s{i % 120:04d}": {"episode_id": f"s{i % 120:04d}e004", "completed": False, "updated_ms": i}},
        "done": {f"s{i % 120:04d}e{k:03d}": 1 for k in range(1, 9)},
        "cand": {"list": b"\0CHL1" + bytes(9_500)},
    }
    values["cw"][f"s{(i + 7) % 120:04d}"] = {"episode_id": "x", "completed": True, "updated_ms": i}
    stamps = {family: dict.fromkeys(columns, 1_795_000_000_000 + i) for family, columns in values.items()}
    return FeatureRow(f"u#user-{i}".encode(), values, stamps)


class FullCollections:
    """Counts the full (generation 2) collections the collector runs by itself while in the block, and
    their pauses (ms)."""

    def __init__(self) -> None:
        self.pauses_ms: list[float] = []
        self._stop: Callable[[], None] | None = None

    def _on_pause(self, generation: int, seconds: float) -> None:
        if generation == 2:
            self.pauses_ms.append(seconds * 1000)

    def __enter__(self) -> FullCollections:
        self._stop = watch_collections(self._on_pause)
        return self

    def __exit__(self, *exc) -> None:
        self._stop()

    def summary(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}_full_collections": len(self.pauses_ms),
            f"{prefix}_full_collection_ms_total": round(sum(self.pauses_ms), 3),
            f"{prefix}_full_collection_ms_max": round(max(self.pauses_ms, default=0.0), 3),
        }


def _tracked_after_young_collections(before: int) -> int:
    """Tracked objects added since `before` that survive the young collections: what reaches the old
    generation, where only a full collection looks again."""
    gc.collect(0)
    gc.collect(1)
    return len(gc.get_objects()) - before


def _rows_cost(rows: int) -> dict[str, float]:
    """Full collections triggered while filling a LastKnown with `rows` user rows, the tracked objects
    left after the young collections, and one full collection's ms; then the same rows as objects."""
    out: dict[str, float] = {}
    last = LastKnown(rows)
    before = len(gc.get_objects())
    with FullCollections() as fill:
        for i in range(rows):
            last.put(f"h{i}", user_row(i))
    out.update(fill.summary("last_known_fill"))
    out["last_known_tracked_after_young"] = _tracked_after_young_collections(before)
    out["last_known_full_collection_ms"] = round(_full_collection_ms(), 3)
    out["last_known_tracked_objects"] = len(gc.get_objects()) - before
    held = [user_row(i) for i in range(rows)]
    out["as_objects_full_collection_ms"] = round(_full_collection_ms(), 3)
    out["as_objects_tracked_objects"] = len(gc.get_objects()) - before - out["last_known_tracked_objects"]
    del held, last
    return out


def _full_collection_ms(repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def held_bytes(settings: ServingSettings, n: int) -> dict[str, int]:
    """Heap bytes (tracemalloc) each of n cached answers (through `RecommendationService.get`, tags and
    all) and each of n last-known rows holds."""
    service = RecommendationService(settings, _StubRecommender(), Metrics(), TtlCache(3600, 60, max_entries=n))  # type: ignore[arg-type]
    last = LastKnown(n)
    rows = [user_row(i) for i in range(n)]  # made before counting: LastKnown keeps their binary cells
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        asyncio.run(_fill(service, n))
        answers = tracemalloc.get_traced_memory()[0] - start
        start = tracemalloc.get_traced_memory()[0]
        for i, row in enumerate(rows):
            last.put(f"h{i}", row)
        held_rows = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    binary = len(rows[0].values["cand"]["list"])
    return {
        "held_bytes_per_answer": round(answers / n),
        "held_bytes_per_row": round(held_rows / n),
        "held_bytes_per_row_binary_cells": binary,  # already made by the read; LastKnown only keeps them
    }


async def _fill(service: RecommendationService, entries: int) -> None:
    for i in range(entries):
        req = RecRequest(f"user-{i}", "home", None, None, 10, "US", "ios")
        _, status = await service.get(req)
        if status != "miss":
            raise RuntimeError(f"request {i} was a {status}, not a miss: the fill must add one entry each")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--rows", type=int, default=20_000, help="last-known user rows (0: skip)")
    parser.add_argument("--held", type=int, default=2_000, help="answers and rows to measure the heap of (0: skip)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    settings = ServingSettings.from_env({"CLIFFHANGER_EDGE_KEY_SECRET": "bench-secret"})
    cache = TtlCache(3600, 60, max_entries=args.entries)
    service = RecommendationService(settings, _StubRecommender(), Metrics(), cache)  # type: ignore[arg-type]
    gc.collect()
    gc.freeze()
    empty_ms, before = _full_collection_ms(), len(gc.get_objects())
    start = time.perf_counter()
    with FullCollections() as fill:
        asyncio.run(_fill(service, args.entries))
    fill_s = time.perf_counter() - start
    tracked_after_young = _tracked_after_young_collections(before)
    full_ms, after = _full_collection_ms(), len(gc.get_objects())
    results = {
        "entries": len(cache),
        **fill.summary("fill"),
        "tracked_after_young": tracked_after_young,
        "tracked_objects_added": after - before,
        "full_collection_ms_empty": round(empty_ms, 3),
        "full_collection_ms_full": round(full_ms, 3),
        "fill_s": round(fill_s, 2),
    }
    if args.rows:
        gc.collect()
        gc.freeze()  # the filled cache is not part of what the rows cost
        results.update({"rows": args.rows, **_rows_cost(args.rows)})
    if args.held:
        results.update(held_bytes(settings, args.held))
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(
        f"{results['entries']} cached answers: the fill triggered {results['fill_full_collections']} full "
        f"collections ({results['fill_full_collection_ms_total']:.0f} ms in all, longest "
        f"{results['fill_full_collection_ms_max']:.1f} ms); {tracked_after_young} tracked objects left after the "
        f"young collections; a full collection takes {full_ms:.2f} ms (empty cache: {empty_ms:.2f} ms)"
    )
    if args.rows:
        print(
            f"{args.rows} last-known rows: the fill triggered {results['last_known_fill_full_collections']} full "
            f"collections; {results['last_known_tracked_after_young']} tracked objects left after the young "
            f"collections, full collection "
            f"{results['last_known_full_collection_ms']:.2f} ms; held as FeatureRow objects: "
            f"{results['as_objects_tracked_objects']} objects, {results['as_objects_full_collection_ms']:.2f} ms"
        )
    if args.held:
        print(
            f"heap held: {results['held_bytes_per_answer']:,} bytes a cached answer, "
            f"{results['held_bytes_per_row']:,} a last-known row "
            f"(of which {results['held_bytes_per_row_binary_cells']:,} its candidate list, made by the read)"
        )
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
