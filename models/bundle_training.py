"""The training steps behind pipelines/train.py, each a plain function over point-in-time training data:
two-tower (+ retrieval metrics vs popularity), query-tower export with a round-trip check, item
embeddings, ScaNN index with its recall gate, ranker with its ONNX parity gate.

Every gate is recorded on the BundleWriter (models/bundle.py), which refuses to publish if one failed.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.evaluation import evaluate, evaluate_embeddings, make_target
from models.pit_retrieval import PointInTimeData, TrainingData, example_context, query_embeddings
from models.retrieval_training import FitResult, TwoTowerConfig, embed_all, fit_two_tower
from models.splits import Split

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

ROUNDTRIP_TOL = 1e-4
ANN_K = 10
HEADLINE = ("recall@20", "ndcg@20", "recall@100", "hit@20")


@dataclasses.dataclass
class Retrieval:
    fit: FitResult
    data: PointInTimeData
    item_embeddings: np.ndarray  # [n_items, d], row i is split.item_ids[i]
    test_queries: np.ndarray  # [n_users, d] each user's query at the test cut
    metrics: dict[str, Any]


def fit_retrieval(
    split: Split, item_side: dict, data: TrainingData, config: TwoTowerConfig, progress: bool
) -> Retrieval:
    """Fit the two-tower on point-in-time queries; evaluate it and popularity on valid and test."""
    from models.baselines import Popularity

    valid, test = make_target(split, "valid"), make_target(split, "test")
    pit = PointInTimeData(split, config, item_side, data)
    result, _ = fit_two_tower(split, valid, config, data=pit, progress=progress)
    pit.eval_cut = "test"
    users_test, items = embed_all(result.model, pit)
    pop = Popularity(split.train, split.n_items)
    metrics = {
        "split": split.summary(),
        "protocol": "full ranking over all catalog episodes, train pairs masked, users with >= 1 positive; "
        "queries = each user's feature row at the part's cut (point in time)",
        "training_examples": int(pit.train_items.size),
        "best_epoch": result.best_epoch,
        "history": result.history,
        "two_tower": {"valid": result.best_valid, "test": evaluate_embeddings(users_test, items, test)},
        "popularity": {"valid": evaluate(pop.scores, valid), "test": evaluate(pop.scores, test)},
        "seconds": result.seconds,
    }
    return Retrieval(result, pit, items, users_test, metrics)


def export_query_tower(retrieval: Retrieval, directory: str, n_check: int = 64) -> tuple[str, float]:
    """SavedModel with the serving signature; reloaded and compared on real queries -> (dir, max abs diff)."""
    import tensorflow as tf

    from models.two_tower import export_tower

    tower = retrieval.fit.model.query_model
    path = os.path.join(directory, "query_tower")
    export_tower(tower, path)
    fn = tf.saved_model.load(path).signatures["serving_default"]
    users = np.arange(min(n_check, retrieval.data.split.n_users))
    raw = retrieval.data.eval_query_features(users)
    wanted = fn.structured_input_signature[1]
    got = np.asarray(next(iter(fn(**{k: tf.constant(raw[k]) for k in wanted}).values())))
    expected = np.asarray(tower(raw, training=False))
    return path, float(np.max(np.abs(got - expected))) if users.size else 0.0


def build_ann(embeddings: np.ndarray, ids: Sequence[str], queries: np.ndarray, version: str) -> tuple[Any, float]:
    """ScaNN index over the item embeddings and its recall@10 vs brute force on the test queries."""
    from models.ann_index import build_index, recall_at_k_vs_bruteforce

    index = build_index(embeddings, list(ids), version=version)
    return index, recall_at_k_vs_bruteforce(index, embeddings, queries, k=min(ANN_K, len(ids)))


def retrieval_scores(retrieval: Retrieval, examples: Sequence[dict]) -> np.ndarray:
    """Two-tower dot product of each example's point-in-time query with its episode: [n] float32."""
    if not examples:
        return np.zeros(0, dtype=np.float32)
    data = retrieval.data
    queries = query_embeddings(
        retrieval.fit.model.query_model, [example_context(ex) for ex in examples], data.config.history_len
    )
    index = {item: i for i, item in enumerate(data.split.item_ids)}
    items = retrieval.item_embeddings[[index[ex["episode_id"]] for ex in examples]]
    return np.einsum("nd,nd->n", queries, items).astype(np.float32)


def fit_ranker(
    retrieval: Retrieval, data: TrainingData, catalog: Any, epochs: int, seed: int
) -> tuple[Any, dict[str, Any], np.ndarray]:
    """Ranker on valid impressions, evaluated on test vs the popularity prior -> (model, report, X_fit)."""
    from models.pit_ranker import fit_and_evaluate, ranker_rows

    known = set(retrieval.data.split.item_ids)
    parts = {
        p: [ex for ex in data.part(p, "impression") if ex["episode_id"] in known] for p in ("train", "valid", "test")
    }
    X = {p: ranker_rows(exs, catalog, retrieval_scores(retrieval, exs)) for p, exs in parts.items() if p != "train"}
    model, report = fit_and_evaluate(
        X["valid"], parts["valid"], X["test"], parts["test"], parts["train"] + parts["valid"], epochs=epochs, seed=seed
    )
    return model, report, X["valid"]


def export_ranker_checked(
    model: Any, X_reference: np.ndarray, directory: str, schema_hash: str
) -> tuple[str | None, float]:
    """tf2onnx export through the parity gate -> (path or None if refused, max abs diff Keras vs ORT)."""
    from models.onnx_export import OnnxParityError, check_parity, export_ranker, parity_rows

    path = os.path.join(directory, "ranker.onnx")
    n_features = X_reference.shape[1]
    try:
        export_ranker(model, path, n_features, reference=X_reference, metadata={"feature_schema_hash": schema_hash})
    except OnnxParityError:
        return None, float("inf")
    return path, check_parity(model, path, parity_rows(n_features, reference=X_reference))


def scratch_dir() -> str:
    return tempfile.mkdtemp(prefix="cliffhanger-train-")
