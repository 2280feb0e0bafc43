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
