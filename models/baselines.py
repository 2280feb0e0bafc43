"""Non-neural retrieval baselines scored under the same protocol as the two-tower model.

* `Popularity`: item score = number of POSITIVE train pairs of the item (negatives do not count;
  that is the choice that reproduces SIGformer's popularity numbers on kuairec, Recall@20 0.0887).
* `EASE` (Steck, WWW 2019): B = I - P diag(1/diag(P)), P = (X^T X + lambda I)^-1 over the binary
  positive train matrix X [n_users, n_items]; scores = X B. Lambda is chosen on valid.
  The Gram matrix is eigendecomposed once, so each lambda of the grid costs one matrix product.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.evaluation import EvalTarget, evaluate
from models.splits import Interactions


class Popularity:
    """scores(users) -> [b, n_items]: the same positive-count vector for everyone."""

    name = "popularity"

    def __init__(self, train: Interactions, n_items: int):
        pos = train.positives()
        self.counts = np.bincount(pos.items, minlength=n_items).astype(np.float64)  # [n_items]

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts, (users.shape[0], self.counts.shape[0]))


def positive_matrix(train: Interactions, n_users: int, n_items: int) -> np.ndarray:
    """X: [n_users, n_items] float64, 1 where the user has a positive train pair."""
    pos = train.positives()
    x = np.zeros((n_users, n_items), dtype=np.float64)
    x[pos.users, pos.items] = 1.0
    return x


class EASE:
    """EASE with lambda selected on a valid target. scores(users) -> [b, n_items]."""

    name = "ease"
    DEFAULT_LAMBDAS = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)

    def __init__(self, train: Interactions, n_users: int, n_items: int):
        self.x = positive_matrix(train, n_users, n_items)  # [n_users, n_items]
        gram = self.x.T @ self.x  # [n_items, n_items]
        self._eigvals, self._eigvecs = np.linalg.eigh(gram)
        self._eigvals = np.clip(self._eigvals, 0.0, None)
        self.lam: float | None = None
        self.b: np.ndarray | None = None  # [n_items, n_items]
        self.selection: dict[str, float] = {}

    def _weights(self, lam: float) -> np.ndarray:
        p = (self._eigvecs / (self._eigvals + lam)) @ self._eigvecs.T  # (G + lam I)^-1
        b = -p / np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        return b

    def fit(self, valid: EvalTarget, lambdas: Sequence[float] = DEFAULT_LAMBDAS, metric: str = "recall@20") -> EASE:
        """Pick lambda maximizing `metric` on `valid`; keeps B of the best lambda."""
        best = -1.0
        for lam in lambdas:
            b = self._weights(lam)
            value = evaluate(lambda users, b=b: self.x[users] @ b, valid)[metric]
            self.selection[f"{lam:g}"] = value
            if value > best:
                best, self.lam, self.b = value, float(lam), b
        return self

    def scores(self, users: np.ndarray) -> np.ndarray:
        if self.b is None:
            raise RuntimeError("EASE.fit(valid_target) must run before scores()")
        return self.x[users] @ self.b
