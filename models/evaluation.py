"""The retrieval evaluation protocol of the kuairec split's source (SIGformer), vectorized with numpy.

Protocol (identical for every model, baseline or neural):
  * full ranking: every user is scored against ALL items of the split (n_items columns);
  * every item the user has in TRAIN, positive or negative, is masked (never recommended);
  * items in the other held-out part are NOT masked: SIGformer masks only train items when it
    evaluates test (and valid). Reproducing its numbers (popularity Recall@20 0.0887 on kuairec
    test) requires the same choice, and it is applied to every model alike, so comparisons stay fair;
  * evaluated users: those with >= 1 positive in the target part (valid or test);
  * Recall@K = hits@K / n_pos (SIGformer's definition, not / min(K, n_pos));
    NDCG@K binary gains, IDCG over min(n_pos, K) ideal hits; HitRate@K = 1 if any hit;
    each averaged over evaluated users.
Model selection (epochs, hyper-parameters) uses the valid part only; test is scored once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from models.splits import Split

KS = (10, 20, 100)
ScoreFn = Callable[[np.ndarray], np.ndarray]
"""users: [b] int64 user indices -> scores: [b, n_items] float (higher = better)."""


@dataclasses.dataclass(frozen=True)
class EvalTarget:
    """Who is evaluated on what.

    users: [m] int64, the users with >= 1 target positive.
    pos_indptr/pos_items: CSR of each evaluated user's target positive items (row r = users[r]).
    mask_indptr/mask_items: CSR of each evaluated user's masked (train) items.
    """

    part: str
    n_items: int
    users: np.ndarray
    pos_indptr: np.ndarray
    pos_items: np.ndarray
    mask_indptr: np.ndarray
    mask_items: np.ndarray

    @property
    def n_positives(self) -> np.ndarray:
        """[m] int64."""
        return np.diff(self.pos_indptr)


def _csr(users: np.ndarray, items: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr [len(rows)+1], items) of `items` grouped by user, restricted to `rows` in that order."""
    if rows.size == 0:
        return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    row_of_user = np.full(max(int(users.max(initial=-1)), int(rows.max())) + 1, -1, dtype=np.int64)
    row_of_user[rows] = np.arange(rows.size)
    r = row_of_user[users]
    keep = r >= 0
    r, it = r[keep], items[keep]
    order = np.lexsort((it, r))
    r, it = r[order], it[order]
    indptr = np.zeros(rows.size + 1, dtype=np.int64)
    np.add.at(indptr, r + 1, 1)
    return np.cumsum(indptr), it.astype(np.int64)


def make_target(split: Split, part: str, mask_parts: Sequence[str] = ("train",)) -> EvalTarget:
    """The evaluation target for `part` ('valid' or 'test'), masking every pair of `mask_parts`."""
    target = split.part(part).positives()
    users = np.unique(target.users)
    pos_indptr, pos_items = _csr(target.users, target.items, users)
    m_users = np.concatenate([split.part(p).users for p in mask_parts])
    m_items = np.concatenate([split.part(p).items for p in mask_parts])
    mask_indptr, mask_items = _csr(m_users, m_items, users)
    return EvalTarget(part, split.n_items, users, pos_indptr, pos_items, mask_indptr, mask_items)


def _rows_to_dense(indptr: np.ndarray, items: np.ndarray, lo: int, hi: int, n_items: int) -> np.ndarray:
    """Rows lo..hi-1 of a CSR as a dense [hi-lo, n_items] bool matrix."""
    dense = np.zeros((hi - lo, n_items), dtype=bool)
    counts = np.diff(indptr[lo : hi + 1])
    dense[np.repeat(np.arange(hi - lo), counts), items[indptr[lo] : indptr[hi]]] = True
    return dense


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """scores: [b, n] -> [b, min(k, n)] column indices, best first (ties broken by lower index)."""
    k = min(k, scores.shape[1])
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
    part.sort(axis=1)  # lower index first, so the stable sort below breaks ties by index
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def evaluate(score_fn: ScoreFn, target: EvalTarget, ks: Sequence[int] = KS, batch_size: int = 512) -> dict[str, float]:
    """Recall/NDCG/HitRate@K of `score_fn` on `target`; keys 'recall@20', 'ndcg@20', 'hit@20', ... and 'users'."""
    max_k = max(ks)
    discounts = 1.0 / np.log2(np.arange(2, max_k + 2))  # [max_k]
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])  # ideal[j] = IDCG with j hits
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg", "hit")}
    n_pos_all = target.n_positives
    for lo in range(0, target.users.size, batch_size):
        hi = min(lo + batch_size, target.users.size)
        scores = np.array(score_fn(target.users[lo:hi]), dtype=np.float64, copy=True)
        if scores.shape != (hi - lo, target.n_items):
            raise ValueError(f"score_fn returned shape {scores.shape}, expected {(hi - lo, target.n_items)}")
        scores[_rows_to_dense(target.mask_indptr, target.mask_items, lo, hi, target.n_items)] = -np.inf
        top = top_k(scores, max_k)  # [b, max_k]
        relevant = _rows_to_dense(target.pos_indptr, target.pos_items, lo, hi, target.n_items)
        hits = np.take_along_axis(relevant, top, axis=1).astype(np.float64)  # [b, max_k]
        n_pos = n_pos_all[lo:hi].astype(np.float64)
        for k in ks:
            h = hits[:, :k]
            sums[f"recall@{k}"] += float((h.sum(1) / n_pos).sum())
            dcg = (h * discounts[: h.shape[1]]).sum(1)
            sums[f"ndcg@{k}"] += float((dcg / ideal[np.minimum(n_pos, k).astype(int)]).sum())
            sums[f"hit@{k}"] += float((h.sum(1) > 0).sum())
    n = max(target.users.size, 1)
    out = {key: value / n for key, value in sums.items()}
    out["users"] = float(target.users.size)
    return out


def evaluate_embeddings(
    user_embeddings: np.ndarray, item_embeddings: np.ndarray, target: EvalTarget, ks: Sequence[int] = KS
) -> dict[str, float]:
    """Dot-product scores: user_embeddings [n_users, d] (row = user index), item_embeddings [n_items, d]."""
    return evaluate(lambda users: user_embeddings[users] @ item_embeddings.T, target, ks)
