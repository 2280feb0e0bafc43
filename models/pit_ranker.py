"""The ranker on point-in-time impressions: impression -> outcome (1 = the user completed the impressed
episode within the label horizon, 0 = skip / hover / scrolled past / abandoned), columns built by
`models.ranker_features.ranker_matrix`, the mapping serving applies to live feature rows.

Protocol (fixed so that no score is in-sample):
  * retrieval_score is the trained two-tower's dot product for (row before the impression, episode);
    the two-tower was fit on the TRAIN part, so the ranker is fit on VALID-part impressions (its
    retrieval scores are out-of-sample there, as they will be in serving) and evaluated on TEST.
  * Baseline: `PopularityPrior`, each episode's smoothed completion rate over train + valid
    impressions (it sees at least as much data as the ranker).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cliffhanger.catalog import Catalog
from models.ranker import PopularityPrior, auc, evaluate, predict, train_ranker
from models.ranker_features import MICRODRAMA_FEATURES, Candidate, ranker_matrix


def ranker_rows(examples: Sequence[Mapping[str, Any]], catalog: Catalog, retrieval_scores: np.ndarray) -> np.ndarray:
    """Impression examples + their two-tower scores [n] -> [n, MICRODRAMA_FEATURES.n_features] float32."""
    out = np.zeros((len(examples), MICRODRAMA_FEATURES.n_features), dtype=np.float32)
    for r, (ex, score) in enumerate(zip(examples, retrieval_scores, strict=True)):
        genres = catalog.genres(ex["series_id"]) if ex["series_id"] in catalog else ()
        candidate = Candidate(ex["episode_id"], ex["series_id"], ex["episode_number"], genres, float(score), ex["i"])
        cw = {ex["series_id"]: ex["cw"]} if ex["cw"] else None
        out[r] = ranker_matrix(ex["u"], cw, [candidate])[0]
    return out


def labels(examples: Sequence[Mapping[str, Any]]) -> np.ndarray:
    return np.fromiter((ex["label"] for ex in examples), dtype=np.float32, count=len(examples))


def _evaluate(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    if y.size == 0 or y.min() == y.max():
        return {"n": int(y.size), "auc": None, "logloss": None, "note": "needs both outcomes in the test part"}
    return evaluate(y, p)


def fit_and_evaluate(
    X_fit: np.ndarray,
    fit_examples: Sequence[Mapping[str, Any]],
    X_test: np.ndarray,
    test_examples: Sequence[Mapping[str, Any]],
    prior_examples: Sequence[Mapping[str, Any]],
    *,
    epochs: int = 30,
    seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """Fit the MLP on (X_fit, labels), score the test part; -> (keras model, report)."""
    y_fit, y_test = labels(fit_examples), labels(test_examples)
    if y_fit.size == 0 or y_fit.min() == y_fit.max():
        raise ValueError(f"the ranker needs both outcomes among its {y_fit.size} fit impressions")
    model = train_ranker(X_fit, y_fit, epochs=epochs, seed=seed)
    prior = PopularityPrior().fit([ex["episode_id"] for ex in prior_examples], labels(prior_examples))
    report: dict[str, Any] = {
        "protocol": "fit on valid-part impressions, evaluated on test-part impressions; prior on train+valid",
        "feature_schema_hash": MICRODRAMA_FEATURES.schema_hash,
        "features": list(MICRODRAMA_FEATURES.columns),
        "fit_impressions": int(y_fit.size),
        "fit_positive_rate": float(y_fit.mean()),
        "test_positive_rate": float(y_test.mean()) if y_test.size else None,
        "ranker": _evaluate(y_test, predict(model, X_test) if len(X_test) else np.zeros(0)),
        "popularity_prior": _evaluate(y_test, prior.predict([ex["episode_id"] for ex in test_examples])),
    }
    if report["ranker"]["auc"] is not None:
        report["retrieval_score_only_auc"] = auc(
            y_test, X_test[:, MICRODRAMA_FEATURES.columns.index("retrieval_score")]
        )
    return model, report
