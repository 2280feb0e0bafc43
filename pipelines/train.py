"""Train one model bundle from an event log and publish it atomically, or refuse if a gate fails.

    python -m pipelines.train --world var/world --bundle-root var/bundles [--preset small] [--epochs 8]
    python -m pipelines.train --events gs://B/export/events-*.jsonl --catalog gs://B/world/catalog.json \
        --bundle-root gs://B/bundles [--runner DataflowRunner --project P --region R --temp_location ...]

Steps (each a function in models/ or a composite in transforms/):
  1. training data   pipelines.training_data (Beam batch; BundleBasedDirectRunner locally): point-in-time
                     examples, cut snapshots, dead letters, under <bundle-root>/.training-data/<version>/
                     (kept as the bundle's lineage; metrics.json names it)
  2. two-tower       in-batch softmax on point-in-time queries (models/query_features); valid-selected epoch;
                     recall vs popularity on the time split
  3. query tower     SavedModel with the serving signature, reloaded and compared (gate query_tower_roundtrip)
  4. items + ScaNN   every catalog episode embedded from id + series + genres + episode number; ScaNN index,
                     recall@10 vs brute force (gate ann_recall_at_10)
  5. ranker          impression -> outcome on ranker_matrix columns; AUC / logloss vs popularity prior;
                     tf2onnx export (gate onnx_parity)
  6. bundle          BundleWriter: staged, verified, published by switching CURRENT; nothing is published
                     when a gate failed (exit status 1, the gate named)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from models.bundle import BundleGateError, new_version
from models.bundle_writer import BundleWriter
from models.pit_retrieval import TrainingDataError
from transforms.event_log import InputError

_LOG = logging.getLogger(__name__)

PRESETS = {  # model sizes and epochs; "small" is for tests and the demo
    "default": {"epochs": 8, "ranker_epochs": 30, "embedding_dim": 64, "hidden": (128,), "batch_size": 512},
    "small": {"epochs": 3, "ranker_epochs": 8, "embedding_dim": 32, "hidden": (64,), "batch_size": 128},
}


@dataclasses.dataclass
class TrainResult:
    version: str
    published: bool
    gates: dict[str, dict[str, Any]]
    metrics: dict[str, Any]
    bundle_root: str
    staging: str


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="python -m pipelines.train", description=__doc__.split("\n")[0])
    p.add_argument("--world", help="world directory with catalog.json and events.jsonl")
    p.add_argument("--events", help="event log (events.jsonl or an export of the events topic)")
    p.add_argument("--catalog", help="catalog.json")
    p.add_argument("--bundle-root", required=True, help="bundle root (local directory or gs://)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--epochs", type=int, help="max two-tower epochs (default from --preset)")
    p.add_argument("--ranker-epochs", type=int, help="max ranker epochs (default from --preset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-ann-recall", type=float, default=0.95, help="ScaNN recall@10 gate vs brute force")
    p.add_argument("--version", help="bundle version name (default: UTC time + random suffix)")
    p.add_argument(
        "--work-dir", help="where the training examples go (default: <bundle-root>/.training-data/<version>)"
    )
    p.add_argument("--examples", help="reuse a finished training_data output prefix instead of running step 1")
    p.add_argument("--no-progress", action="store_true")
    known, beam_args = p.parse_known_args(argv)
    if known.world:
        known.events = known.events or os.path.join(known.world, "events.jsonl")
        known.catalog = known.catalog or os.path.join(known.world, "catalog.json")
    if not (known.events and known.catalog):
        p.error("give --world DIR, or both --events and --catalog")
    return known, beam_args


def run(argv: list[str] | None = None) -> TrainResult:
    """Train and publish; raises BundleGateError (nothing published) if a gate failed, InputError /
    TrainingDataError naming the file for bad input."""
    from models import bundle_training as steps
    from models.pit_retrieval import build_split, load_training_data
    from models.ranker_features import MICRODRAMA_FEATURES
    from models.retrieval_synthetic import item_side_features
    from models.retrieval_training import TwoTowerConfig, plot_curve
    from pipelines import training_data
    from transforms.event_log import check_catalog, check_event_log

    args, beam_args = parse_args(argv)
    preset = PRESETS[args.preset]
    catalog = check_catalog(args.catalog)
    check_event_log(args.events)
    clock = _Clock()
    version = args.version or new_version()
    work = args.work_dir or _join(args.bundle_root, ".training-data", version)  # kept: the bundle's lineage
    prefix = args.examples or _join(work, "examples")

    with clock.step("1/6 training data (Beam)"):
        if not args.examples:
            training_data.run(["--events", args.events, "--catalog", args.catalog, "--output", prefix, *beam_args])
        data = load_training_data(prefix)
        split = build_split(
            os.path.basename(os.path.normpath(args.world or args.events)), catalog, data.examples, args.catalog
        )
    with clock.step("2/6 two-tower"):
        config = TwoTowerConfig(
            epochs=args.epochs or preset["epochs"], embedding_dim=preset["embedding_dim"], hidden=preset["hidden"],
            batch_size=preset["batch_size"], use_negative_history=False, id_dropout=0.1, seed=args.seed,
        )  # fmt: skip
        retrieval = steps.fit_retrieval(
            split, item_side_features(split.item_ids, catalog), data, config, not args.no_progress
        )
    writer = BundleWriter(args.bundle_root, MICRODRAMA_FEATURES.schema_hash, version)
    scratch = steps.scratch_dir()
    with clock.step("3/6 query tower"):
        tower_dir, roundtrip = steps.export_query_tower(retrieval, scratch)
        writer.write_query_tower(tower_dir)
        writer.add_gate("query_tower_roundtrip", roundtrip <= steps.ROUNDTRIP_TOL, roundtrip, steps.ROUNDTRIP_TOL)
    with clock.step("4/6 item embeddings + ScaNN"):
        writer.write_items(retrieval.item_embeddings, split.item_ids)
        index, recall = steps.build_ann(
            retrieval.item_embeddings, split.item_ids, retrieval.test_queries, writer.version
        )
        writer.write_index(index)
        writer.add_gate("ann_recall_at_10", recall >= args.min_ann_recall, recall, args.min_ann_recall)
    with clock.step("5/6 ranker + ONNX"):
        ranker, ranker_report, X_ref = steps.fit_ranker(
            retrieval, data, catalog, args.ranker_epochs or preset["ranker_epochs"], args.seed
        )
        onnx_path, parity = steps.export_ranker_checked(ranker, X_ref, scratch, MICRODRAMA_FEATURES.schema_hash)
        writer.add_gate("onnx_parity", onnx_path is not None, parity, 1e-5)
        if onnx_path is not None:
            writer.write_ranker(onnx_path)
    with clock.step("6/6 bundle"):
        plot_curve(retrieval.fit.history, os.path.join(writer.staging, "training_curve.png"),
                   title=f"two-tower on {split.name} (best epoch {retrieval.fit.best_epoch})")  # fmt: skip
        metrics = _metrics(args, data, retrieval, ranker_report, clock, prefix)
        if onnx_path is None:
            raise BundleGateError(
                f"not publishing {writer.version!r}: gate(s) failed: onnx_parity (no ranker exported)"
            )
        writer.finalize(metrics)
        gates = {k: g.to_dict() for k, g in writer.gates.items()}
        result = TrainResult(writer.version, False, gates, writer.metrics, args.bundle_root, writer.staging)
        try:
            writer.publish()
        except BundleGateError:
            print(summary(result))
            raise
    result.published = True
    result.metrics["timings_s"] = clock.timings
    print(summary(result))
    return result


def _metrics(args, data, retrieval, ranker_report, clock, prefix: str) -> dict[str, Any]:
    tt, pop = retrieval.metrics["two_tower"]["test"], retrieval.metrics["popularity"]["test"]
    return {
        "item_count": len(retrieval.data.split.item_ids),
        "examples_schema_hash": data.schema.get("examples_schema_hash", ""),
        "two_tower_test_recall@20": tt["recall@20"],
        "popularity_test_recall@20": pop["recall@20"],
        "ranker_test_auc": ranker_report["ranker"]["auc"],
        "prior_test_auc": ranker_report["popularity_prior"]["auc"],
        "ranker_test_logloss": ranker_report["ranker"]["logloss"],
        "prior_test_logloss": ranker_report["popularity_prior"]["logloss"],
        "training_data": {"prefix": prefix, "cuts": data.cuts, "examples": len(data.examples), "schema": data.schema},
        "retrieval": retrieval.metrics,
        "ranker": ranker_report,
        "inputs": {"events": args.events, "catalog": args.catalog, "preset": args.preset, "seed": args.seed},
        "timings_s": dict(clock.timings),
    }


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts]) if root.startswith("gs://") else os.path.join(root, *parts)


def summary(result: TrainResult) -> str:
    m = result.metrics
    state = (
        f"PUBLISHED -> {result.bundle_root}/CURRENT"
        if result.published
        else f"NOT published (staged at {result.staging})"
    )
    lines = [f"bundle {result.version}: {state}", "gates:"]
    for name, g in result.gates.items():
        lines.append(
            f"  {'PASS' if g['passed'] else 'FAIL'}  {name:<24} {g['value']:.6g} (threshold {g['threshold']:g})"
        )
    r = m.get("retrieval", {})
    if r:
        lines.append(f"retrieval (test, {r['split']['items']} episodes, point-in-time queries):")
        for name in ("two_tower", "popularity"):
            t = r[name]["test"]
            lines.append(
                f"  {name:<11} recall@20 {t['recall@20']:.4f}  ndcg@20 {t['ndcg@20']:.4f}  recall@100 {t['recall@100']:.4f}"
            )
    rk = m.get("ranker", {})
    for name in ("ranker", "popularity_prior"):
        if name in rk and rk[name]["auc"] is not None:
            lines.append(
                f"  {name:<17} test AUC {rk[name]['auc']:.4f}  logloss {rk[name]['logloss']:.4f}  (n={rk[name]['n']})"
            )
    timings = m.get("timings_s", {})
    if timings:
        lines.append("timings: " + ", ".join(f"{k.split(' ', 1)[1]} {v:.0f}s" for k, v in timings.items()))
    return "\n".join(lines)


class _Clock:
    """Labelled steps with their wall time, announced on stderr."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        print(f"[{name}] ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - start
        print(f"[{name}] {self.timings[name]:.1f}s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    try:
        run(argv)
    except BundleGateError as exc:
        raise SystemExit(f"gate failed: {exc}") from None
    except (InputError, TrainingDataError) as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
