"""models/evaluation.py on tiny hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.evaluation import evaluate, make_target, top_k
from models.splits import from_rows

# 2 users, 6 items (i0..i5, integer tokens "0".."5" so index k = item ik). u0 trained on i0 (pos) and i1 (neg) -> both masked.
# test positives: u0 {i2, i4}; u1 {i5}. u2 has only a negative in test -> not evaluated.
SPLIT = from_rows(
    "tiny",
    {
        "train": [("u0", "0", 1), ("u0", "1", 0), ("u1", "3", 1)],
        "valid": [("u1", "4", 1)],
        "test": [("u0", "2", 1), ("u0", "4", 1), ("u1", "5", 1), ("u2", "1", 0)],
    },
)
# the same scores for everyone: i0 > i1 > i2 > i3 > i4 > i5
SCORES = np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])


def test_protocol_by_hand():
    target = make_target(SPLIT, "test")
    np.testing.assert_array_equal(target.users, [0, 1])  # u2 has no test positive
    m = evaluate(lambda users: np.tile(SCORES, (users.size, 1)), target, ks=(1, 2))
    # u0: i0, i1 masked -> ranking i2, i3, i4, i5. @1: hit i2 -> recall 1/2, ndcg 1/1 (IDCG@1 = 1).
    #     @2: [i2, i3] -> recall 1/2, ndcg = 1 / (1 + 1/log2(3)).
    # u1: i3 masked -> ranking i0, i1, i2, i4, i5 (valid item i4 NOT masked). @1, @2: no hit.
    assert m["recall@1"] == pytest.approx((0.5 + 0) / 2)
    assert m["ndcg@1"] == pytest.approx((1.0 + 0) / 2)
    assert m["recall@2"] == pytest.approx((0.5 + 0) / 2)
    assert m["ndcg@2"] == pytest.approx((1 / (1 + 1 / math.log2(3)) + 0) / 2)
    assert m["hit@2"] == pytest.approx(0.5)
    assert m["users"] == 2


def test_recall_divides_by_all_positives_not_min_k():
    # u0 ranked with K=6 (everything): both positives found -> recall 2/2; @1 -> 1/2, not 1/min(1, 2) = 1.
    target = make_target(SPLIT, "test")
    m = evaluate(lambda users: np.tile(SCORES, (users.size, 1)), target, ks=(1, 6))
    # u1 @6: ranking i0 i1 i2 i4 i5 -> i5 at rank 5: recall 1, ndcg 1/log2(6)
    assert m["recall@1"] == pytest.approx(0.25)
    assert m["recall@6"] == pytest.approx(1.0)
    u0_ndcg = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))  # hits at ranks 1 and 3 of [i2 i3 i4 i5]
    assert m["ndcg@6"] == pytest.approx((u0_ndcg + 1 / math.log2(6)) / 2)


def test_valid_target_masks_train_only():
    target = make_target(SPLIT, "valid")
    np.testing.assert_array_equal(target.users, [1])
    m = evaluate(lambda users: np.tile(SCORES, (users.size, 1)), target, ks=(4,))
    # u1: i3 masked -> [i0, i1, i2, i4]: i4 at rank 4 -> ndcg 1/log2(5)
    assert m["recall@4"] == pytest.approx(1.0)
    assert m["ndcg@4"] == pytest.approx(1 / math.log2(5))


def test_top_k_breaks_ties_by_index():
    np.testing.assert_array_equal(top_k(np.array([[1.0, 3.0, 3.0, 0.0]]), 3), [[1, 2, 0]])


def test_bad_score_shape_raises():
    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda users: np.zeros((users.size, 2)), make_target(SPLIT, "test"))
