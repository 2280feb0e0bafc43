"""The ranker: a small Keras MLP scoring (user features, item features, retrieval score, context) -> P(complete).

Input is one dense float32 vector per candidate, laid out by a `RankerFeatures` spec: named columns in
a fixed order. The spec's `schema_hash` is stored in the bundle manifest and in the exported ONNX
model, and loading refuses a ranker whose hash differs from the features serving will build.

On KuaiRec (`python -m models.ranker --data ../shared/data/kuairec --out ranker_eval.json`), every
feature comes from the train split only; the MLP is fit on the valid split's labelled pairs (so item /
user rates never contain the row's own label) and evaluated on the test split's label 1 vs 0 pairs,
against a popularity prior (the item's smoothed train positive rate). KuaiRec has no context, so the
context columns are 0 there; `retrieval_score` is filled with a cheap proxy (a rank-32 SVD of the
train positives), standing in for the two-tower score the serving path will put there.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


@dataclasses.dataclass(frozen=True)
class RankerFeatures:
    """Named float32 feature columns in a fixed order; `schema_hash` identifies the layout."""

    columns: tuple[str, ...]
    version: int = 1

    @property
    def n_features(self) -> int:
        return len(self.columns)

    @property
    def schema_hash(self) -> str:
        spec = {"columns": list(self.columns), "dtype": "float32", "version": self.version}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def assemble(self, values: Mapping[str, np.ndarray | float], n: int) -> np.ndarray:
        """{column: [n] array or scalar} -> [n, n_features] float32 in spec order; unknown/missing names fail."""
        unknown = set(values) - set(self.columns)
        missing = set(self.columns) - set(values)
        if unknown or missing:
            raise KeyError(f"feature mismatch: unknown {sorted(unknown)}, missing {sorted(missing)}")
        out = np.empty((n, self.n_features), dtype=np.float32)
        for j, name in enumerate(self.columns):
            out[:, j] = values[name]
        return out


DEFAULT_FEATURES = RankerFeatures(
    columns=(
        "user_log_impressions",  # log1p(#labelled impressions of the user)
        "user_pos_rate",  # smoothed share of the user's impressions that completed
        "item_log_impressions",
        "item_pos_rate",
        "retrieval_score",  # two-tower dot product (or a proxy)
        "ctx_same_series",  # 1 if the candidate continues a series the user is watching
        "ctx_log_position",  # log1p(slot position in the feed)
    )
)


def auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) identity, ties given their average rank."""
    y_true = np.asarray(y_true).astype(bool)
    y_score = np.asarray(y_score, dtype=np.float64)
    n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both classes")
    order = np.argsort(y_score, kind="mergesort")
    sorted_scores = y_score[order]
    ranks = np.empty(len(y_score), dtype=np.float64)
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(y_score)]])
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2.0  # average of 1-based ranks s+1..e
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(y_true: np.ndarray, y_prob: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(y_prob, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(y_true, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def evaluate(y_true: np.ndarray, y_prob: np.ndarray) -> dict[str, float]:
    return {"auc": auc(y_true, y_prob), "logloss": logloss(y_true, y_prob), "n": int(len(y_true))}


class PopularityPrior:
    """Baseline: P(complete | item) = (item positives + a * global rate) / (item impressions + a)."""

    def __init__(self, smoothing: float = 10.0) -> None:
        self.smoothing = smoothing
        self.rates: dict[Any, float] = {}
        self.global_rate = 0.5

    def fit(self, items: Sequence[Any], labels: np.ndarray) -> PopularityPrior:
        items, labels = np.asarray(items), np.asarray(labels, dtype=np.float64)
        self.global_rate = float(labels.mean())
        keys, inverse = np.unique(items, return_inverse=True)
        pos = np.bincount(inverse, weights=labels, minlength=len(keys))
        cnt = np.bincount(inverse, minlength=len(keys))
        rate = (pos + self.smoothing * self.global_rate) / (cnt + self.smoothing)
        self.rates = dict(zip(keys.tolist(), rate.tolist(), strict=True))
        return self

    def predict(self, items: Sequence[Any]) -> np.ndarray:
        return np.array([self.rates.get(i, self.global_rate) for i in np.asarray(items).tolist()], dtype=np.float32)


def build_ranker(
    n_features: int, mean: np.ndarray, variance: np.ndarray, hidden: Sequence[int] = (32, 16), seed: int = 0
) -> Any:
    """features [batch, n_features] float32 -> P(positive) [batch, 1]; standardisation baked into the graph."""
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    layers: list[Any] = [
        tf_keras.Input(shape=(n_features,), dtype="float32", name="features"),
        tf_keras.layers.Normalization(mean=mean, variance=np.maximum(variance, 1e-6)),
    ]
    layers += [tf_keras.layers.Dense(h, activation="relu") for h in hidden]
    layers.append(tf_keras.layers.Dense(1, activation="sigmoid", name="prob"))
    return tf_keras.Sequential(layers, name="ranker")


def train_ranker(
    X: np.ndarray,
    y: np.ndarray,
    *,
    hidden: Sequence[int] = (32, 16),
    epochs: int = 30,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    validation_fraction: float = 0.1,
    seed: int = 0,
    verbose: int = 0,
) -> Any:
    """Fit the MLP on X [n, f] float32 and binary y [n]; early stopping on a held-out slice of X."""
    import tf_keras

    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32).reshape(-1, 1)
    model = build_ranker(X.shape[1], X.mean(axis=0), X.var(axis=0), hidden, seed)
    model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate), loss="binary_crossentropy")
    perm = np.random.default_rng(seed).permutation(len(X))
    n_val = int(len(X) * validation_fraction)
    val, fit = perm[:n_val], perm[n_val:]
    callbacks = [tf_keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)] if n_val else []
    model.fit(
        X[fit],
        y[fit],
        validation_data=(X[val], y[val]) if n_val else None,
        epochs=epochs,
        batch_size=batch_size,
        callbacks=callbacks,
        shuffle=True,
        verbose=verbose,
    )
    return model


def predict(model: Any, X: np.ndarray) -> np.ndarray:
    """Keras scores: X [n, f] -> [n] float32."""
    return np.asarray(model.predict(np.asarray(X, dtype=np.float32), batch_size=4096, verbose=0)).reshape(-1)


# ---------------------------------------------------------------- KuaiRec: features from train only


def load_kuairec(data_dir: str) -> dict[str, np.ndarray]:
    """{'train'|'valid'|'test': [n, 3] int64 (user, item, label)}."""
    return {
        split: np.loadtxt(os.path.join(data_dir, f"{split}.txt"), dtype=np.float64).astype(np.int64)
        for split in ("train", "valid", "test")
    }


@dataclasses.dataclass
class KuaiRecFeatureTables:
    user_log_impr: np.ndarray
    user_pos_rate: np.ndarray
    item_log_impr: np.ndarray
    item_pos_rate: np.ndarray
    user_factors: np.ndarray  # [users, r]
    item_factors: np.ndarray  # [items, r]

    @classmethod
    def from_train(
        cls, train: np.ndarray, n_users: int, n_items: int, smoothing: float = 10.0, rank: int = 32
    ) -> KuaiRecFeatureTables:
        users, items, labels = train[:, 0], train[:, 1], train[:, 2].astype(np.float64)
        prior = labels.mean()

        def stats(keys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
            cnt = np.bincount(keys, minlength=n)
            pos = np.bincount(keys, weights=labels, minlength=n)
            return np.log1p(cnt), (pos + smoothing * prior) / (cnt + smoothing)

        u_log, u_rate = stats(users, n_users)
        i_log, i_rate = stats(items, n_items)
        positives = np.zeros((n_users, n_items), dtype=np.float32)
        positives[users[labels > 0], items[labels > 0]] = 1.0
        u, s, vt = np.linalg.svd(positives, full_matrices=False)
        root = np.sqrt(s[:rank])
        return cls(u_log, u_rate, i_log, i_rate, u[:, :rank] * root, vt[:rank].T * root)

    def features(self, users: np.ndarray, items: np.ndarray, spec: RankerFeatures = DEFAULT_FEATURES) -> np.ndarray:
        """(user, item) pairs -> [n, spec.n_features]; KuaiRec has no context, so context columns are 0."""
        retrieval = np.einsum("nd,nd->n", self.user_factors[users], self.item_factors[items])
        return spec.assemble(
            {
                "user_log_impressions": self.user_log_impr[users],
                "user_pos_rate": self.user_pos_rate[users],
                "item_log_impressions": self.item_log_impr[items],
                "item_pos_rate": self.item_pos_rate[items],
                "retrieval_score": retrieval,
                "ctx_same_series": 0.0,
                "ctx_log_position": 0.0,
            },
            len(users),
        )


def evaluate_on_kuairec(data_dir: str, seed: int = 0) -> tuple[dict[str, Any], Any, np.ndarray, np.ndarray]:
    """Train on valid pairs, evaluate on test pairs. Returns (report, model, X_test, y_test)."""
    splits = load_kuairec(data_dir)
    n_users = int(max(s[:, 0].max() for s in splits.values())) + 1
    n_items = int(max(s[:, 1].max() for s in splits.values())) + 1
    tables = KuaiRecFeatureTables.from_train(splits["train"], n_users, n_items)
    fit, test = splits["valid"], splits["test"]
    X_fit, X_test = tables.features(fit[:, 0], fit[:, 1]), tables.features(test[:, 0], test[:, 1])
    model = train_ranker(X_fit, fit[:, 2], seed=seed)
    baseline = PopularityPrior().fit(splits["train"][:, 1], splits["train"][:, 2])
    y_test = test[:, 2].astype(np.float32)
    report = {
        "dataset": "kuairec (SIGformer split), label 1 vs 0",
        "protocol": "features from train; ranker fit on valid pairs; evaluated on test pairs",
        "feature_schema_hash": DEFAULT_FEATURES.schema_hash,
        "features": list(DEFAULT_FEATURES.columns),
        "ranker": evaluate(y_test, predict(model, X_test)),
        "popularity_prior": evaluate(y_test, baseline.predict(test[:, 1])),
        "retrieval_score_only_auc": auc(y_test, X_test[:, DEFAULT_FEATURES.columns.index("retrieval_score")]),
        "test_positive_rate": float(y_test.mean()),
    }
    return report, model, X_test, y_test


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Train + evaluate the ranker on KuaiRec.")
    parser.add_argument("--data", default=os.path.join("..", "shared", "data", "kuairec"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--export-dir", default=None, help="also export ranker.onnx (+ int8) here and compare")
    args = parser.parse_args(argv)
    report, model, X_test, y_test = evaluate_on_kuairec(args.data)
    if args.export_dir:
        from models.onnx_export import compare_quantized, export_ranker, quantize_int8

        meta = {"feature_schema_hash": DEFAULT_FEATURES.schema_hash}
        fp32 = export_ranker(
            model,
            os.path.join(args.export_dir, "ranker.onnx"),
            DEFAULT_FEATURES.n_features,
            reference=X_test,
            metadata=meta,
        )
        int8 = quantize_int8(fp32, os.path.join(args.export_dir, "ranker.int8.onnx"))
        report["int8_comparison"] = compare_quantized(fp32, int8, X_test, y_test)
        if not report["int8_comparison"]["keep_int8"]:
            os.remove(int8)
        print(report["int8_comparison"]["decision"])
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    r, b = report["ranker"], report["popularity_prior"]
    print(
        f"ranker AUC {r['auc']:.4f} logloss {r['logloss']:.4f} | popularity prior AUC {b['auc']:.4f} "
        f"logloss {b['logloss']:.4f} (n={r['n']}) -> {args.out}"
    )
    return report


if __name__ == "__main__":
    main()
