"""ScaNN vs exact brute force on synthetic clustered embeddings: recall@10 and QPS from one run.

    python -m benchmarks.scann_vs_bruteforce --items 1000000 --dim 64 --out scann.json

Data: a gaussian mixture (items and queries drawn around shared cluster centres), closer to trained
two-tower embeddings than isotropic noise, on which every ANN method looks unrealistically bad.

Both sides run on ONE thread (BLAS threads pinned to 1 before numpy loads; ScaNN's non-parallel
search), because serving handles one request per core. `speedup` = single-query ScaNN QPS /
single-query brute-force QPS over the same query set (the serving mode). Batched QPS for both are
reported too (`*_batched_qps`, `speedup_batched`). The index build is multi-threaded and not timed
against queries; its wall time is `build_s`.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # must happen before numpy is imported

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from models.ann_index import DEFAULT_MIN_RECALL, build_index, config_for_size, exact_top_k  # noqa: E402


def clustered_embeddings(
    num_items: int, dim: int, num_queries: int, num_clusters: int = 1000, spread: float = 0.35, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Items [n, d] and queries [q, d], float32, from a gaussian mixture with `num_clusters` centres.

    Centres ~ N(0, I/d) (unit-ish norm); a point = centre + N(0, spread^2 I/d).
    """
    rng = np.random.default_rng(seed)
    scale = np.float32(1 / np.sqrt(dim))
    centres = rng.standard_normal((num_clusters, dim), dtype=np.float32) * scale
    items = np.empty((num_items, dim), dtype=np.float32)
    chunk = 200_000
    for start in range(0, num_items, chunk):
        stop = min(start + chunk, num_items)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) * (scale * np.float32(spread))
        items[start:stop] = centres[rng.integers(0, num_clusters, stop - start)] + noise
    q_noise = rng.standard_normal((num_queries, dim), dtype=np.float32) * (scale * np.float32(spread))
    queries = centres[rng.integers(0, num_clusters, num_queries)] + q_noise
    return items, np.ascontiguousarray(queries)


def _timed(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def bruteforce_single(items: np.ndarray, queries: np.ndarray, k: int) -> float:
    """QPS of exact search one query at a time (matvec + argpartition + sort of the top k)."""

    def run() -> None:
        for q in tqdm(queries, desc="brute force (single query)", leave=False, mininterval=5):
            scores = items @ q
            top = np.argpartition(-scores, k - 1)[:k]
            top[np.argsort(-scores[top])]

    return _timed(run, len(queries))


def run_benchmark(num_items: int, dim: int, num_queries: int, k: int = 10, seed: int = 0) -> dict:
    t0 = time.perf_counter()
    items, queries = clustered_embeddings(num_items, dim, num_queries, seed=seed)
    gen_s = time.perf_counter() - t0
    print(f"generated {num_items:,} x {dim} items + {num_queries} queries in {gen_s:.1f}s")

    config = config_for_size(num_items, dim)
    t0 = time.perf_counter()
    with tqdm(total=1, desc=f"building ScaNN ({config.kind})") as bar:
        index = build_index(items, np.arange(num_items), config)
        bar.update(1)
    build_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    exact, _ = exact_top_k(items, queries, k, batch_size=32)
    bf_batched_qps = num_queries / (time.perf_counter() - t0)
    bf_single_qps = bruteforce_single(items, queries, k)

    approx, _ = index.search_positions(queries, k)  # warm-up + the results recall is computed on
    recall = float(np.mean([len(set(a) & set(e)) for a, e in zip(approx.tolist(), exact.tolist(), strict=True)]) / k)
    scann_batched_qps = _timed(lambda: index.search_positions(queries, k), num_queries)

    def scann_single() -> None:
        for q in queries:
            index.search_one(q, k)

    scann_single_qps = _timed(scann_single, num_queries)
    return {
        "items": num_items,
        "dim": dim,
        "queries": num_queries,
        "k": k,
        "recall_at_10" if k == 10 else f"recall_at_{k}": recall,
        "scann_qps": scann_single_qps,
        "bruteforce_qps": bf_single_qps,
        "speedup": scann_single_qps / bf_single_qps,
        "speedup_mode": "single-query, 1 thread each (serving mode)",
        "scann_batched_qps": scann_batched_qps,
        "bruteforce_batched_qps": bf_batched_qps,
        "speedup_batched": scann_batched_qps / bf_batched_qps,
        "build_s": build_s,
        "gate_min_recall": DEFAULT_MIN_RECALL,
        "gate_passed": recall >= DEFAULT_MIN_RECALL,
        "config": dataclasses.asdict(config),
        "data": "gaussian mixture, 1000 centres ~N(0,I/d), spread 0.35",
        "threads": int(os.environ["OPENBLAS_NUM_THREADS"]),
        "loadavg_1m": os.getloadavg()[0],  # the 2-core box is shared: context for the QPS numbers
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    result = run_benchmark(args.items, args.dim, args.queries, seed=args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(
        f"recall@10={result['recall_at_10']:.4f}  ScaNN {result['scann_qps']:.0f} qps vs brute force "
        f"{result['bruteforce_qps']:.1f} qps -> speedup {result['speedup']:.1f}x (single query); "
        f"batched {result['speedup_batched']:.1f}x; build {result['build_s']:.1f}s; gate "
        f"{'PASSED' if result['gate_passed'] else 'FAILED'} -> {args.out}"
    )
    return result


if __name__ == "__main__":
    main()
