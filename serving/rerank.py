"""Rerank the candidate pool with the bundle's ONNX ranker: feature matrix [n, f] built through the
ranker's `RankerFeatures` spec (so column order and the schema hash are the trainer's), vectorized.

Where each column of `models.ranker.DEFAULT_FEATURES` comes from at serving time:

    user_log_impressions  log1p(u.impressions_7d)                user row, family u
    user_pos_rate         u.completion_rate_7d                   user row, family u
    item_log_impressions  log1p(i.plays_24h)                     episode row, family i (item cache)
    item_pos_rate         i.completion_rate_24h                  episode row, family i (item cache)
    retrieval_score       two-tower score from the candidate list (blend gives other sources the floor)
    ctx_same_series       1 if the candidate's series is the one just finished or one the user is watching
    ctx_log_position      0: the slot is not known before ranking; score everyone as if at the top
                          (the usual position-debiasing convention at inference)

The trainer (models/ranker.py) fills these columns from KuaiRec labelled impressions; the serving
proxies above are the closest streaming features (see the serving report for the skew this implies).
A spec with a column not listed here is refused at bundle load (`check_spec`), never guessed.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from cliffhanger.catalog import Catalog
from models.ranker import DEFAULT_FEATURES, RankerFeatures
from serving.blend import Candidate
from serving.rules import Ranked

SERVING_COLUMNS = frozenset(
    {
        "user_log_impressions",
        "user_pos_rate",
        "item_log_impressions",
        "item_pos_rate",
        "retrieval_score",
        "ctx_same_series",
        "ctx_log_position",
    }
)
SERVING_SPEC = DEFAULT_FEATURES
# Family `i` columns serving reads for items, in ItemFeatures order.
ITEM_COLUMNS = ("plays_24h", "completion_rate_24h")


class RankerSpecError(ValueError):
    """The bundle's ranker expects features serving cannot build."""


def check_spec(spec: RankerFeatures) -> None:
    unknown = [c for c in spec.columns if c not in SERVING_COLUMNS]
    if unknown:
        raise RankerSpecError(f"ranker expects feature columns serving does not build: {unknown}")


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def feature_matrix(
    candidates: Sequence[Candidate],
    *,
    user_features: Mapping[str, Any] | None,
    item_features: Mapping[str, tuple[float, float]],
    catalog: Catalog,
    context_series: Collection[str],
    spec: RankerFeatures = SERVING_SPEC,
) -> np.ndarray:
    """[len(candidates), spec.n_features] float32. Items without features get zeros (counted by the caller)."""
    n = len(candidates)
    u = user_features or {}
    zero = (0.0, 0.0)
    stats = np.array([item_features.get(c.episode_id, zero) for c in candidates], dtype=np.float32).reshape(n, 2)
    same = np.fromiter(
        (_series_of(catalog, c.episode_id) in context_series for c in candidates), dtype=np.float32, count=n
    )
    values = {
        "user_log_impressions": math.log1p(max(_num(u.get("impressions_7d")), 0.0)),
        "user_pos_rate": _num(u.get("completion_rate_7d")),
        "item_log_impressions": np.log1p(np.maximum(stats[:, 0], 0.0)),
        "item_pos_rate": stats[:, 1],
        "retrieval_score": np.fromiter((c.retrieval_score for c in candidates), dtype=np.float32, count=n),
        "ctx_same_series": same,
        "ctx_log_position": 0.0,
    }
    return spec.assemble({k: values[k] for k in spec.columns}, n)


def _series_of(catalog: Catalog, episode_id: str) -> str | None:
    try:
        return catalog.episode(episode_id).series_id
    except KeyError:
        return None


def rank(candidates: Sequence[Candidate], scores: np.ndarray) -> list[Ranked]:
    """Candidates by descending score (ties keep pool order)."""
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if scores.shape[0] != len(candidates) or not np.all(np.isfinite(scores)):
        raise ValueError(
            f"ranker returned {scores.shape[0]} scores (finite: {np.isfinite(scores).all()}) "
            f"for {len(candidates)} candidates"
        )
    order = np.argsort(-scores, kind="stable")
    return [Ranked(candidates[i].episode_id, float(scores[i]), candidates[i].source) for i in order.tolist()]


def retrieval_order(candidates: Sequence[Candidate]) -> list[Ranked]:
    """The degraded rung: pool order, scored by retrieval score."""
    return [Ranked(c.episode_id, c.retrieval_score, c.source) for c in candidates]
