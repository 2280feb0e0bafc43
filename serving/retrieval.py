"""On-demand retrieval: the bundle's query tower + ScaNN index, for users without a precomputed list.

The tower takes RAW inputs built by `models.query_features.query_inputs` (the same mapping batch
training uses); only the inputs its serving signature declares are fed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from models.query_features import QueryContext, query_inputs
from transforms.features import HISTORY_LEN

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


class QueryEncoder:
    """Wraps a loaded query-tower SavedModel: QueryContext -> embedding [d] float32."""

    def __init__(self, saved_model: Any, history_len: int = HISTORY_LEN) -> None:
        import tensorflow as tf

        self._tf = tf
        self._model = saved_model  # keep a reference: the concrete function needs its variables alive
        self._fn = saved_model.signatures["serving_default"]
        self._inputs = dict(self._fn.structured_input_signature[1])
        self.history_len = history_len

    def encode(self, context: QueryContext) -> np.ndarray:
        """One query -> [d] float32."""
        return self.encode_batch([context])[0]

    def encode_batch(self, contexts: list[QueryContext]) -> np.ndarray:
        """[B] queries -> [B, d] float32."""
        raw = query_inputs(contexts, self.history_len)
        feed = {}
        for name, spec in self._inputs.items():
            if name not in raw:
                raise KeyError(f"query tower wants input {name!r}, which query_inputs does not build")
            value = raw[name]
            if spec.dtype == self._tf.string:
                value = value.astype(str).astype(object)
            feed[name] = self._tf.constant(value, dtype=spec.dtype)
        out = self._fn(**feed)
        return np.asarray(next(iter(out.values())), dtype=np.float32).reshape(len(contexts), -1)


def retrieve(
    encoder: QueryEncoder,
    index: Any,
    *,
    user_id: str,
    user_features: Mapping[str, Any] | None,
    country: str,
    device: str,
    hour: int,
    k: int,
) -> list[tuple[str, float]]:
    """Top-k (episode_id, dot-product score), best first."""
    embedding = encoder.encode(QueryContext(user_id, user_features, country, device, hour))
    ids, scores = index.search_one(embedding, k=min(k, len(index)))
    return [(str(i), float(s)) for i, s in zip(ids.tolist(), scores.tolist(), strict=True)]
