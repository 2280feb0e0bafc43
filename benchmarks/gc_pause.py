"""What a full response cache costs the garbage collector: the pause of one full collection.

    python -m benchmarks.gc_pause --entries 50000 --out gc_pause.json

Why it matters: a full (generation 2) collection walks every tracked object, and while it runs the
event loop stops, so every request in flight waits. A long-running server fills its response cache
(up to `cache_max_entries`, 50,000), and CPython runs a full collection whenever the objects that
survived into the old generation grow by a quarter.

How: `RecommendationService.get`, the production caching path, answers `--entries` distinct requests
from a stub recommender (10 items, as an n=10 answer has), so the cache holds real rendered answers
with their ~25 surrogate keys. Everything made before the fill is frozen (`gc.freeze`, as the server
does after loading a bundle), so what a collection walks is what the cache added. The JSON holds
the tracked objects the fill added, and the median full-collection time (of 5) with the cache empty
and with it full.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time

from serving import rules
from serving.cache import TtlCache
from serving.metrics import Metrics
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


def _full_collection_ms(repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def _fill(service: RecommendationService, entries: int) -> None:
    for i in range(entries):
        req = RecRequest(f"user-{i}", "home", None, None, 10, "US", "ios")
        _, status = await service.get(req)
        if status != "miss":
            raise RuntimeError(f"request {i} was a {status}, not a miss: the fill must add one entry each")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    settings = ServingSettings.from_env({"CLIFFHANGER_EDGE_KEY_SECRET": "bench-secret"})
    cache = TtlCache(3600, 60, max_entries=args.entries)
    service = RecommendationService(settings, _StubRecommender(), Metrics(), cache)  # type: ignore[arg-type]
    gc.collect()
    gc.freeze()
    empty_ms, before = _full_collection_ms(), len(gc.get_objects())
    start = time.perf_counter()
    asyncio.run(_fill(service, args.entries))
    fill_s = time.perf_counter() - start
    full_ms, after = _full_collection_ms(), len(gc.get_objects())
    results = {
        "entries": len(cache),
        "tracked_objects_added": after - before,
        "full_collection_ms_empty": round(empty_ms, 3),
        "full_collection_ms_full": round(full_ms, 3),
        "fill_s": round(fill_s, 2),
    }
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(
        f"{results['entries']} cached answers: {results['tracked_objects_added']} tracked objects added; "
        f"a full collection takes {full_ms:.2f} ms (empty cache: {empty_ms:.2f} ms); wrote {args.out}"
    )
    return results


if __name__ == "__main__":
    main()
