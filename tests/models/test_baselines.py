"""models/baselines.py: popularity counts positives only; EASE closed form on a tiny matrix."""

from __future__ import annotations

import numpy as np
import pytest

from models.baselines import EASE, Popularity
from models.evaluation import make_target
from models.splits import from_rows

SPLIT = from_rows(
    "tiny",
    {
        "train": [("a", "x", 1), ("b", "x", 1), ("a", "y", 1), ("c", "z", 0), ("b", "z", 0)],
        "valid": [("c", "x", 1)],
        "test": [("c", "y", 1)],
    },
)


def test_popularity_counts_positive_pairs_only():
    pop = Popularity(SPLIT.train, SPLIT.n_items)
    np.testing.assert_array_equal(pop.counts, [2, 1, 0])  # x: 2 positives, y: 1, z: only negatives
    assert pop.scores(np.array([0, 2])).shape == (2, 3)


def test_ease_closed_form():
    # X (users a, b, c x items x, y, z) = [[1,1,0],[1,0,0],[0,0,0]]; G = X^T X = [[2,1,0],[1,1,0],[0,0,0]].
    # lambda = 1: P = (G + I)^-1 = inv([[3,1,0],[1,2,0],[0,0,1]]) = [[2,-1,0],[-1,3,0],[0,0,5]] / 5
    # B = -P / diag(P) with zero diagonal: B[x,y] = -(-1/5)/(3/5) = 1/3, B[y,x] = -(-1/5)/(2/5) = 1/2.
    ease = EASE(SPLIT.train, SPLIT.n_users, SPLIT.n_items).fit(make_target(SPLIT, "valid"), lambdas=(1.0,))
    np.testing.assert_allclose(ease.b, [[0, 1 / 3, 0], [1 / 2, 0, 0], [0, 0, 0]], atol=1e-9)
    # user b (has x) scores y with B[x, y] = 1/3
    assert ease.scores(np.array([1]))[0, 1] == pytest.approx(1 / 3)
    assert ease.lam == 1.0 and "1" in ease.selection
