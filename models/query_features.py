"""The query tower's inputs, built from the user's feature row: the ONE mapping used by batch training
(from point-in-time UserState features) and by serving (from the Bigtable row), so they cannot skew.

    inputs = query_inputs([QueryContext("u000042", user_u_family, "US", "ios", hour=21)], history_len=50)
    embeddings = query_tower(inputs)            # [B, embedding_dim]

Pure numpy; no TensorFlow import, so serving can build inputs cheaply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cliffhanger.catalog import GENRES


@dataclasses.dataclass(frozen=True)
class QueryContext:
    user_id: str
    user_features: Mapping[str, Any] | None  # family `u` of the user's row (None: a brand-new user)
    country: str
    device: str
    hour: int  # hour of day 0..23 in UTC at request (or impression) time


def genre_vector(genre_mix: Mapping[str, float] | None) -> np.ndarray:
    """[G] float32 in cliffhanger.catalog.GENRES order."""
    mix = genre_mix or {}
    return np.asarray([float(mix.get(g, 0.0)) for g in GENRES], dtype=np.float32)


def query_inputs(contexts: Sequence[QueryContext], history_len: int) -> dict[str, np.ndarray]:
    """Batch of query tower inputs (B = len(contexts)):

    user_id [B] str, history [B, history_len] str ('' padded; newest completed episodes first),
    country [B] str, device [B] str, hour [B] int64, genre_mix [B, G] float32.
    A tower that does not use an input ignores it.
    """
    batch = len(contexts)
    history = np.full((batch, history_len), "", dtype=object)
    for i, c in enumerate(contexts):
        recent = list((c.user_features or {}).get("recent_completed", ()))[:history_len]
        history[i, : len(recent)] = recent
    return {
        "user_id": np.asarray([c.user_id for c in contexts], dtype=object),
        "history": history,
        "country": np.asarray([c.country for c in contexts], dtype=object),
        "device": np.asarray([c.device for c in contexts], dtype=object),
        "hour": np.asarray([c.hour for c in contexts], dtype=np.int64),
        "genre_mix": np.stack([genre_vector((c.user_features or {}).get("genre_mix_30m")) for c in contexts])
        if batch
        else np.zeros((0, len(GENRES)), dtype=np.float32),
    }
