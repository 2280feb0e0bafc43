"""The ranker's input matrix for the microdrama world: the ONE mapping from feature rows to ranker
columns, used by batch training (point-in-time feature values) and by serving (fresh Bigtable rows).

    X = ranker_matrix(user_u, user_cw, candidates, context)      # [n_candidates, n_features] float32

`user_u` is the user's family `u` (UserState.features()), `user_cw` its family `cw`, and each
candidate carries its episode's family `i` (ItemState.features()), its series and episode number,
genres and the retrieval score. Missing rows (a new user, a new episode) are zeros, never errors.
Vectorized with numpy: 500 candidates in well under a millisecond.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cliffhanger.catalog import GENRES
from models.ranker import RankerFeatures

MICRODRAMA_FEATURES = RankerFeatures(
    columns=(
        "retrieval_score",  # two-tower dot product
        "user_completion_rate_7d",
        "user_skip_rate_7d",
        "user_hover_skip_rate_7d",
        "user_log_binge_depth",  # log1p(episodes completed this session)
        "user_genre_affinity",  # genre_mix_30m . candidate genres (multi-hot, normalised)
        "item_log_plays_24h",
        "item_completion_rate_24h",
        "item_log_trending",
        "item_log_episode_number",
        "ctx_is_next_episode",  # the candidate is the next episode of a series the user is watching
        "ctx_same_series",  # the candidate is in a series the user has started
    ),
    version=2,
)


@dataclasses.dataclass(frozen=True)
class Candidate:
    episode_id: str
    series_id: str
    episode_number: int
    genres: tuple[str, ...]
    retrieval_score: float
    item: Mapping[str, Any] | None  # the episode row's family `i`, None if the row is missing


def _genre_matrix(candidates: Sequence[Candidate]) -> np.ndarray:
    index = {g: j for j, g in enumerate(GENRES)}
    m = np.zeros((len(candidates), len(GENRES)), dtype=np.float32)
    for i, c in enumerate(candidates):
        for g in c.genres:
            if g in index:
                m[i, index[g]] = 1.0
        n = m[i].sum()
        if n:
            m[i] /= n
    return m


def ranker_matrix(
    user_u: Mapping[str, Any] | None,
    user_cw: Mapping[str, Mapping[str, Any]] | None,
    candidates: Sequence[Candidate],
    spec: RankerFeatures = MICRODRAMA_FEATURES,
) -> np.ndarray:
    """[len(candidates), spec.n_features] float32 in spec order."""
    u = user_u or {}
    cw = user_cw or {}
    n = len(candidates)
    mix = np.asarray([float((u.get("genre_mix_30m") or {}).get(g, 0.0)) for g in GENRES], dtype=np.float32)
    items = [c.item or {} for c in candidates]
    next_ep = np.zeros(n, dtype=np.float32)
    same_series = np.zeros(n, dtype=np.float32)
    for i, c in enumerate(candidates):
        state = cw.get(c.series_id)
        if state:
            same_series[i] = 1.0
            want = state["episode_number"] + (1 if state.get("completed") else 0)
            next_ep[i] = 1.0 if c.episode_number == want else 0.0
    values = {
        "retrieval_score": np.asarray([c.retrieval_score for c in candidates], dtype=np.float32),
        "user_completion_rate_7d": float(u.get("completion_rate_7d", 0.0)),
        "user_skip_rate_7d": float(u.get("skip_rate_7d", 0.0)),
        "user_hover_skip_rate_7d": float(u.get("hover_skip_rate_7d", 0.0)),
        "user_log_binge_depth": math.log1p(float(u.get("binge_depth", 0))),
        "user_genre_affinity": _genre_matrix(candidates) @ mix if n else np.zeros(0, dtype=np.float32),
        "item_log_plays_24h": np.log1p(np.asarray([float(it.get("plays_24h", 0)) for it in items], dtype=np.float32)),
        "item_completion_rate_24h": np.asarray(
            [float(it.get("completion_rate_24h", 0.0)) for it in items], dtype=np.float32
        ),
        "item_log_trending": np.log1p(np.asarray([float(it.get("trending", 0.0)) for it in items], dtype=np.float32)),
        "item_log_episode_number": np.log1p(np.asarray([c.episode_number for c in candidates], dtype=np.float32)),
        "ctx_is_next_episode": next_ep,
        "ctx_same_series": same_series,
    }
    return spec.assemble(values, n)


# ------------------------------------------------------------- the same mapping, column-oriented
# For callers that hold candidates as arrays, so 500 candidates cost array gathers instead of 500
# `Candidate` objects. `ranker_matrix_columns(u, cw, candidate_columns(cands))` equals
# `ranker_matrix(u, cw, cands)` exactly (tests/models/test_ranker_features.py); change both together.
# Serving gathers the same columns in a compiled loop (serving.kernels.gather_candidates) and shares
# `series_context` and `finish_matrix` with this form.

ITEM_COLUMNS = ("plays_24h", "completion_rate_24h", "trending")  # family `i` columns the ranker reads


def genre_weights(genres: Sequence[str]) -> np.ndarray:
    """[G] float32: the candidate's genres multi-hot, normalised to sum 1 (a row of `_genre_matrix`)."""
    index = {g: j for j, g in enumerate(GENRES)}
    row = np.zeros(len(GENRES), dtype=np.float32)
    for g in genres:
        if g in index:
            row[index[g]] = 1.0
    n = row.sum()
    if n:
        row /= n
    return row


@dataclasses.dataclass(frozen=True)
class CandidateColumns:
    """n candidates, column by column (the fields of `Candidate`)."""

    series_ids: Sequence[str]  # [n]
    episode_numbers: np.ndarray  # [n] float32
    genre_weights: np.ndarray  # [n, G] float32, rows from genre_weights()
    retrieval_scores: np.ndarray  # [n] float32
    item_stats: np.ndarray  # [n, len(ITEM_COLUMNS)] float32 in ITEM_COLUMNS order; zeros for a missing row
    # Optional integer form of series_ids (serving's catalog table has it): series_codes[i] =
    # series_code_of[series_ids[i]] (len(series_code_of) for none); the ctx_* columns then take two numpy
    # gathers instead of a dict look-up per candidate. Same values either way.
    series_codes: np.ndarray | None = None  # [n] intp
    series_code_of: Mapping[str, int] | None = None


def candidate_columns(candidates: Sequence[Candidate]) -> CandidateColumns:
    """Candidate objects -> CandidateColumns (tests, and callers that already have objects)."""
    n = len(candidates)
    items = [c.item or {} for c in candidates]
    return CandidateColumns(
        series_ids=[c.series_id for c in candidates],
        episode_numbers=np.asarray([c.episode_number for c in candidates], dtype=np.float32),
        genre_weights=np.stack([genre_weights(c.genres) for c in candidates])
        if n
        else np.zeros((0, len(GENRES)), dtype=np.float32),
        retrieval_scores=np.asarray([c.retrieval_score for c in candidates], dtype=np.float32),
        item_stats=np.asarray(
            [[float(it.get(col, 0.0)) for col in ITEM_COLUMNS] for it in items], dtype=np.float32
        ).reshape(n, len(ITEM_COLUMNS)),
    )


def ranker_matrix_columns(
    user_u: Mapping[str, Any] | None,
    user_cw: Mapping[str, Mapping[str, Any]] | None,
    cols: CandidateColumns,
    spec: RankerFeatures = MICRODRAMA_FEATURES,
) -> np.ndarray:
    """[n, spec.n_features] float32, the values of `ranker_matrix` for the same candidates."""
    cw = user_cw or {}
    n = len(cols.retrieval_scores)
    next_ep = np.zeros(n, dtype=np.float32)
    same_series = np.zeros(n, dtype=np.float32)
    if cw and cols.series_codes is not None and cols.series_code_of is not None:
        same, want = series_context(cw, cols.series_code_of)
        same_series = same[cols.series_codes]
        next_ep = (want[cols.series_codes] == cols.episode_numbers).astype(np.float32)
    elif cw:
        get = cw.get
        for i, series_id in enumerate(cols.series_ids):
            state = get(series_id)
            if state:
                same_series[i] = 1.0
                want = state["episode_number"] + (1 if state.get("completed") else 0)
                next_ep[i] = 1.0 if cols.episode_numbers[i] == want else 0.0
    stats = cols.item_stats
    return finish_matrix(
        user_u,
        np.asarray(cols.retrieval_scores, dtype=np.float32),
        # contiguous copies: numpy's float32 log1p may take another (SIMD) path on strided views
        np.ascontiguousarray(stats[:, 0]),
        np.ascontiguousarray(stats[:, 1]),
        np.ascontiguousarray(stats[:, 2]),
        np.asarray(cols.episode_numbers, dtype=np.float32),
        cols.genre_weights,
        next_ep,
        same_series,
        spec,
    )


def series_context(cw: Mapping[str, Mapping[str, Any]], code_of: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per series code (plus a last "no series" slot): (1 where the user has started the series, the
    episode number that would be its next episode, -1 where none): the ctx_* columns gather these."""
    same = np.zeros(len(code_of) + 1, dtype=np.float32)
    want = np.full(len(code_of) + 1, -1.0, dtype=np.float32)  # no episode number is -1
    for series_id, state in cw.items():
        code = code_of.get(series_id)
        if code is not None and state:
            same[code] = 1.0
            want[code] = state["episode_number"] + (1 if state.get("completed") else 0)
    return same, want


def finish_matrix(
    user_u: Mapping[str, Any] | None,
    retrieval_scores: np.ndarray,
    plays_24h: np.ndarray,
    completion_rate_24h: np.ndarray,
    trending: np.ndarray,
    episode_numbers: np.ndarray,
    genre_weights: np.ndarray,
    next_episode: np.ndarray,
    same_series: np.ndarray,
    spec: RankerFeatures = MICRODRAMA_FEATURES,
) -> np.ndarray:
    """The candidates' raw columns (each [n] float32, contiguous; genre_weights [n, G]) -> the matrix:
    THE transformations of MICRODRAMA_FEATURES (logs, the genre affinity, the user's columns), shared
    by ranker_matrix_columns and serving's compiled gather (serving.rerank.feature_matrix)."""
    u = user_u or {}
    n = len(retrieval_scores)
    mix = np.asarray([float((u.get("genre_mix_30m") or {}).get(g, 0.0)) for g in GENRES], dtype=np.float32)
    values = {
        "retrieval_score": retrieval_scores,
        "user_completion_rate_7d": float(u.get("completion_rate_7d", 0.0)),
        "user_skip_rate_7d": float(u.get("skip_rate_7d", 0.0)),
        "user_hover_skip_rate_7d": float(u.get("hover_skip_rate_7d", 0.0)),
        "user_log_binge_depth": math.log1p(float(u.get("binge_depth", 0))),
        "user_genre_affinity": genre_weights @ mix if n else np.zeros(0, dtype=np.float32),
        "item_log_plays_24h": np.log1p(plays_24h),
        "item_completion_rate_24h": completion_rate_24h,
        "item_log_trending": np.log1p(trending),
        "item_log_episode_number": np.log1p(episode_numbers),
        "ctx_is_next_episode": next_episode,
        "ctx_same_series": same_series,
    }
    return spec.assemble(values, n)
