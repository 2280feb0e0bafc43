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
from collections.abc import Collection, Iterator, Mapping
from typing import Any

import numpy as np

from cliffhanger.catalog import Catalog
from models.ranker import DEFAULT_FEATURES, RankerFeatures
from serving.blend import Pool
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
# Family `i` columns serving reads for items, in this order; ITEM_COLUMN_RANGE (inclusive, sorted
# qualifiers) covers them with a cheap server-side filter (4 of the 11 columns).
ITEM_COLUMNS = ("plays_24h", "completion_rate_24h")
ITEM_COLUMN_RANGE = ("i", "completion_rate_24h", "plays_24h")


class RankerSpecError(ValueError):
    """The bundle's ranker expects features serving cannot build."""


def check_spec(spec: RankerFeatures) -> None:
    unknown = [c for c in spec.columns if c not in SERVING_COLUMNS]
    if unknown:
        raise RankerSpecError(f"ranker expects feature columns serving does not build: {unknown}")


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def feature_matrix(
    pool: Pool,
    *,
    user_features: Mapping[str, Any] | None,
    item_features: Mapping[str, tuple[float, float]],
    series_of: Mapping[str, str],
    context_series: Collection[str],
    spec: RankerFeatures = SERVING_SPEC,
) -> np.ndarray:
    """[len(pool), spec.n_features] float32. Items without features get zeros (counted by the caller)."""
    n = len(pool)
    ids = pool.episode_ids
    u = user_features or {}
    zero = (0.0, 0.0)
    get_item, get_series = item_features.get, series_of.get
    stats = np.array([get_item(e, zero) for e in ids], dtype=np.float32).reshape(n, 2)
    same = np.array([get_series(e) in context_series for e in ids], dtype=np.float32)
    values = {
        "user_log_impressions": math.log1p(max(_num(u.get("impressions_7d")), 0.0)),
        "user_pos_rate": _num(u.get("completion_rate_7d")),
        "item_log_impressions": np.log1p(np.maximum(stats[:, 0], 0.0)),
        "item_pos_rate": stats[:, 1],
        "retrieval_score": np.asarray(pool.retrieval_scores, dtype=np.float32),
        "ctx_same_series": same,
        "ctx_log_position": 0.0,
    }
    return spec.assemble({k: values[k] for k in spec.columns}, n)


def series_index(catalog: Catalog) -> dict[str, str]:
    """episode_id -> series_id for the whole catalog (built once; a dict read per candidate after)."""
    return {e.episode_id: e.series_id for e in catalog.episodes()}


def rank(pool: Pool, scores: np.ndarray) -> Iterator[Ranked]:
    """Candidates by descending score (ties keep pool order), lazily: the rules usually stop after a few
    dozen, so the other ~450 Ranked objects are never built."""
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if scores.shape[0] != len(pool) or not np.all(np.isfinite(scores)):
        raise ValueError(
            f"ranker returned {scores.shape[0]} scores (finite: {np.isfinite(scores).all()}) for {len(pool)} candidates"
        )
    order = np.argsort(-scores, kind="stable").tolist()
    values, ids, sources = scores.tolist(), pool.episode_ids, pool.sources
    return (Ranked(ids[i], values[i], sources[i]) for i in order)


def retrieval_order(pool: Pool) -> Iterator[Ranked]:
    """The degraded rung: pool order, scored by retrieval score."""
    return map(Ranked, pool.episode_ids, pool.retrieval_scores, pool.sources)
