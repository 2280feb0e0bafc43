"""Retrieval quality: two-tower vs popularity vs EASE under one protocol, on a split dir or a synthetic world.

    python -m benchmarks.retrieval_quality --data-dir ../shared/data/kuairec --out out/retrieval_quality.json
    python -m benchmarks.retrieval_quality --synthetic [--data-dir WORLD_DIR] --out out/retrieval_synth.json

Protocol (models/evaluation.py): full ranking over all items, every train item masked, users with
>= 1 positive in the target part, Recall/NDCG/HitRate@{10,20,100}. Everything that is chosen --
EASE's lambda, the two-tower config and epoch -- is chosen on VALID; test is scored once per model.

JSON: {"dataset", "protocol", "selected_on": "valid", "models": {name: {"test": {...}, "valid": {...}}},
and per model name at top level the test metrics the issue asks for, e.g. out["two_tower"]["recall@20"]
(keys recall@20, ndcg@20, recall@100, hit@20)}. The training curve PNG is written next to the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

from models.baselines import EASE, Popularity
from models.evaluation import KS, evaluate, make_target
from models.splits import Split, SplitError, load_split

HEADLINE = ("recall@20", "ndcg@20", "recall@100", "hit@20")
EASE_LAMBDAS = (30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
EASE_MAX_ITEMS = 20_000  # dense item-item matrix: 20k^2 float64 is 3.2 GB; beyond that EASE is skipped


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.retrieval_quality", description=__doc__.split("\n")[0])
    p.add_argument(
        "--data-dir", help="split dir (train.txt valid.txt test.txt); with --synthetic a world dir (optional)"
    )
    p.add_argument("--out", required=True, help="output JSON path; the curve PNG goes next to it")
    p.add_argument("--synthetic", action="store_true", help="evaluate on a time split of a synthetic world")
    p.add_argument("--synth-preset", default="small", help="cliffhanger.synth preset when no world dir is given")
    p.add_argument("--epochs", type=int, default=12, help="max two-tower epochs (early stopping on valid)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p


def candidate_configs(epochs: int, seed: int, synthetic: bool) -> list:
    """The small two-tower grid chosen between on valid (two settings that tied within noise on kuairec valid)."""
    from models.retrieval_training import TwoTowerConfig

    base = TwoTowerConfig(epochs=epochs, seed=seed, causal_history=synthetic, id_dropout=0.1 if synthetic else 0.0)
    return [base, dataclasses.replace(base, learning_rate=0.0003, embedding_dim=32, hidden=())]


def _load(args: argparse.Namespace) -> tuple[Split, object, dict]:
    if not args.synthetic:
        if not args.data_dir:
            raise SplitError("--data-dir", "required (or pass --synthetic)")
        return load_split(args.data_dir), None, {}
    try:
        from models.retrieval_synthetic import generate_world_split, load_world_split
    except ImportError as exc:
        raise NotImplementedError(f"--synthetic needs cliffhanger.synth, which is not importable: {exc}") from exc
    synth = load_world_split(args.data_dir) if args.data_dir else generate_world_split(args.seed, args.synth_preset)
    return synth.split, synth.side, synth.stats


def run(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    from models.retrieval_training import embed_all as _embed_all
    from models.retrieval_training import fit_two_tower, plot_curve

    start = time.perf_counter()
    split, side, stats = _load(args)
    valid, test = make_target(split, "valid"), make_target(split, "test")
    models: dict[str, dict] = {}
    timings: dict[str, float] = {}

    t = time.perf_counter()
    pop = Popularity(split.train, split.n_items)
    models["popularity"] = {"valid": evaluate(pop.scores, valid), "test": evaluate(pop.scores, test)}
    timings["popularity"] = time.perf_counter() - t

    if split.n_items <= EASE_MAX_ITEMS:
        t = time.perf_counter()
        ease = EASE(split.train, split.n_users, split.n_items).fit(valid, EASE_LAMBDAS)
        models["ease"] = {
            "valid": evaluate(ease.scores, valid),
            "test": evaluate(ease.scores, test),
            "lambda": ease.lam,
            "valid_recall@20_by_lambda": ease.selection,
        }
        timings["ease"] = time.perf_counter() - t

    t = time.perf_counter()
    best = None
    grid = []
    for config in candidate_configs(args.epochs, args.seed, args.synthetic):
        result, data = fit_two_tower(split, valid, config, side, progress=not args.no_progress)
        grid.append(
            {
                "config": _config_json(config),
                "best_epoch": result.best_epoch,
                "valid_recall@20": result.best_valid["recall@20"],
            }
        )
        if best is None or result.best_valid["recall@20"] > best[0].best_valid["recall@20"]:
            best = (result, data, config)
    result, data, config = best
    user_emb, item_emb = _embed_all(result.model, data)
    tt_test = evaluate(lambda users: user_emb[users] @ item_emb.T, test)
    models["two_tower"] = {
        "valid": result.best_valid,
        "test": tt_test,
        "config": _config_json(config),
        "best_epoch": result.best_epoch,
        "grid": grid,
    }
    timings["two_tower"] = time.perf_counter() - t

    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    curve = os.path.splitext(os.path.abspath(args.out))[0] + "_curve.png"
    plot_curve(result.history, curve, title=f"two-tower on {split.name} (best epoch {result.best_epoch})")

    out = {
        "dataset": {
            **split.summary(),
            "source": "synthetic" if args.synthetic else os.path.abspath(args.data_dir),
            **({"log_stats": stats} if stats else {}),
        },
        "protocol": {
            "ranking": "full ranking over all items",
            "masked": "every train item of the user (positive and negative); valid items are not masked at test (source protocol)",
            "users": ">= 1 positive in the target part",
            "recall": "hits@K / n_positives",
            "ndcg": "binary gains, IDCG over min(n_positives, K)",
            "ks": list(KS),
        },
        "selected_on": "valid",
        "models": models,
        "training_history": result.history,
        "curve_png": curve,
        "timings_s": timings,
        "runtime_s": time.perf_counter() - start,
    }
    for name, m in models.items():
        out[name] = {k: m["test"][k] for k in HEADLINE}
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(out, handle, indent=2, default=_json_default)
    print(_table(out))
    return out


def _config_json(config: object) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _table(out: dict) -> str:
    pop = out["popularity"]["recall@20"]
    lines = [
        f"retrieval quality on {out['dataset']['name']} (test; selection on valid), {out['runtime_s']:.0f} s",
        f"{'model':<12}" + "".join(f"{k:>12}" for k in HEADLINE) + f"{'R@20/pop':>10}",
    ]
    for name in out["models"]:
        row = out[name]
        lines.append(
            f"{name:<12}"
            + "".join(f"{row[k]:>12.4f}" for k in HEADLINE)
            + f"{row['recall@20'] / pop if pop else float('nan'):>10.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    try:
        run(argv)
    except (SplitError, NotImplementedError) as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
