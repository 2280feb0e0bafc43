"""Rerank features through the ranker's spec: column order, values, defaults; ranking and its failure modes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.ranker import RankerFeatures
from serving.blend import Candidate, Pool
from serving.rerank import (
    SERVING_SPEC,
    RankerSpecError,
    check_spec,
    feature_matrix,
    rank,
    retrieval_order,
    series_index,
)
from tests.factories import catalog

POOL = Pool.of(
    [
        Candidate("s0001e002", "two_tower", 0.9),
        Candidate("s0002e001", "trending", 0.1),
        Candidate("unknown-ep", "two_tower", 0.5),
    ]
)


def test_feature_matrix_follows_the_spec() -> None:
    X = feature_matrix(
        POOL,
        user_features={"impressions_7d": 9, "completion_rate_7d": 0.25},
        item_features={"s0001e002": (99.0, 0.5), "s0002e001": (0.0, 0.0)},
        series_of=series_index(catalog()),
        context_series={"s0001"},
    )
    assert X.shape == (3, SERVING_SPEC.n_features) and X.dtype == np.float32
    col = {name: X[:, j] for j, name in enumerate(SERVING_SPEC.columns)}
    np.testing.assert_allclose(col["user_log_impressions"], math.log1p(9), rtol=1e-6)  # log1p(9) = 2.3026
    np.testing.assert_allclose(col["user_pos_rate"], 0.25)
    np.testing.assert_allclose(col["item_log_impressions"], [math.log(100), 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(col["item_pos_rate"], [0.5, 0.0, 0.0])  # no item features -> zeros
    np.testing.assert_allclose(col["retrieval_score"], [0.9, 0.1, 0.5])
    np.testing.assert_array_equal(col["ctx_same_series"], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(col["ctx_log_position"], 0.0)


def test_new_user_gets_zero_user_columns() -> None:
    X = feature_matrix(
        Pool.of(POOL[:1]), user_features=None, item_features={}, series_of=series_index(catalog()), context_series=set()
    )
    assert X[0, SERVING_SPEC.columns.index("user_log_impressions")] == 0.0


def test_spec_with_a_column_serving_cannot_build_is_refused() -> None:
    check_spec(SERVING_SPEC)
    with pytest.raises(RankerSpecError, match="watch_time_30d"):
        check_spec(RankerFeatures(columns=("retrieval_score", "watch_time_30d")))


def test_rank_orders_by_score_and_keeps_pool_order_on_ties() -> None:
    got = list(rank(POOL, np.array([0.2, 0.7, 0.2], np.float32)))
    assert [r.episode_id for r in got] == ["s0002e001", "s0001e002", "unknown-ep"]
    assert got[0].reason == "trending"


def test_rank_refuses_bad_scores_so_the_caller_falls_back() -> None:
    with pytest.raises(ValueError):
        rank(POOL, np.array([0.1, np.nan, 0.3], np.float32))
    with pytest.raises(ValueError):
        rank(POOL, np.array([0.1], np.float32))
    assert [r.episode_id for r in retrieval_order(POOL)] == POOL.episode_ids


def test_500_candidates_build_fast() -> None:
    import time

    pool = Pool.of([Candidate(f"s0001e00{i % 5 + 1}", "two_tower", float(i)) for i in range(500)])
    items = {e: (10.0, 0.3) for e in pool.episode_ids}
    start = time.perf_counter()
    for _ in range(20):
        X = feature_matrix(
            pool, user_features={}, item_features=items, series_of=series_index(catalog()), context_series={"s0001"}
        )
    per_call_ms = (time.perf_counter() - start) * 1000 / 20
    assert X.shape == (500, SERVING_SPEC.n_features)
    assert per_call_ms < 20, per_call_ms  # ~0.3 ms here; generous bound for a loaded 2-core machine
