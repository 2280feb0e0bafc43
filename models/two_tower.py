"""Two-tower retrieval: a query (user) tower and a candidate (episode) tower, trained with in-batch softmax.

Towers are separate `tf_keras` models that take RAW string ids, so each exports on its own as a
SavedModel and serving needs no vocabulary of its own. Which optional features a tower uses is
configured by a spec dataclass; a feature a data source does not have is simply not configured.

Query tower (`QueryTowerSpec`), inputs (B = batch, H = history length, G = genres):
    user_id            [B] string      id embedding (unknown user -> OOV row, so a new user is served
                                       from history and context alone)
    history            [B, H] string   recent positive item ids, '' = padding; masked mean of embeddings
    negative_history   [B, H] string   recent skipped item ids (optional)
    country, device    [B] string      context (optional)
    hour               [B] int64       hour of day 0..23 (optional)
    genre_mix          [B, G] float32  genre distribution of the history (optional)
Candidate tower (`CandidateTowerSpec`):
    item_id            [B] string      id embedding; dropped to OOV with prob `id_dropout` while
                                       training, so a brand-new episode is embedded from its features
    series_id          [B] string      (optional)
    genres             [B, G] float32  multi-hot (optional)
    episode_number     [B] float32     (optional; fed as log1p)
    content            [B, C] float32  content features (optional)
Both output [B, embedding_dim] float32.

Loss: `tfrs.tasks.Retrieval` in-batch softmax with temperature, logQ correction (each in-batch
candidate's logit minus log of its sampling probability, so popular items are not over-penalised as
negatives) and accidental-hit removal; optionally one explicit negative (a pair labelled 0, i.e.
a skip) per query appended as an extra candidate that only its own query sees.
"""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402
import tf_keras  # noqa: E402

PAD = ""
OOV_TOKEN = "[OOV]"


@dataclasses.dataclass(frozen=True)
class QueryTowerSpec:
    user_vocab: tuple[str, ...]
    item_vocab: tuple[str, ...]
    embedding_dim: int = 64
    history_len: int = 50
    use_user_id: bool = True
    use_negative_history: bool = False
    countries: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    use_hour: bool = False
    n_genres: int = 0
    hidden: tuple[int, ...] = (128,)
    dropout: float = 0.0
    l2: float = 0.0


@dataclasses.dataclass(frozen=True)
class CandidateTowerSpec:
    item_vocab: tuple[str, ...]
    embedding_dim: int = 64
    use_item_id: bool = True
    series_vocab: tuple[str, ...] = ()
    n_genres: int = 0
    use_episode_number: bool = False
    n_content: int = 0
    hidden: tuple[int, ...] = (128,)
    id_dropout: float = 0.0
    l2: float = 0.0


def _lookup_embedding(
    vocab: tuple[str, ...], dim: int, l2: float, name: str
) -> tuple[tf_keras.layers.Layer, tf_keras.layers.Layer]:
    """StringLookup ('' -> 0 = padding, unknown -> 1 = OOV, vocab -> 2..) and its Embedding."""
    lookup = tf_keras.layers.StringLookup(
        vocabulary=list(vocab), mask_token=PAD, num_oov_indices=1, name=f"{name}_lookup"
    )
    reg = tf_keras.regularizers.l2(l2) if l2 else None
    emb = tf_keras.layers.Embedding(len(vocab) + 2, dim, embeddings_regularizer=reg, name=f"{name}_embedding")
    return lookup, emb


def _mlp(hidden: tuple[int, ...], out_dim: int, dropout: float, name: str) -> tf_keras.Sequential:
    layers: list[tf_keras.layers.Layer] = []
    for width in hidden:
        layers.append(tf_keras.layers.Dense(width, activation="relu"))
        if dropout:
            layers.append(tf_keras.layers.Dropout(dropout))
    layers.append(tf_keras.layers.Dense(out_dim))
    return tf_keras.Sequential(layers, name=name)


def _masked_mean(embeddings: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    """embeddings: [B, H, d], ids: [B, H] int64 (0 = padding) -> [B, d] mean over non-padding."""
    mask = tf.cast(tf.not_equal(ids, 0), embeddings.dtype)[..., None]  # [B, H, 1]
    total = tf.reduce_sum(embeddings * mask, axis=1)
    count = tf.reduce_sum(mask, axis=1)
    return total / tf.maximum(count, 1.0)


class QueryTower(tf_keras.Model):
    """features (see module docstring) -> query embeddings [B, embedding_dim]."""

    def __init__(self, spec: QueryTowerSpec, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        d = spec.embedding_dim
        if spec.use_user_id:
            self.user_lookup, self.user_embedding = _lookup_embedding(spec.user_vocab, d, spec.l2, "user")
        self.item_lookup, self.history_embedding = _lookup_embedding(spec.item_vocab, d, spec.l2, "history")
        if spec.use_negative_history:
            self.negative_embedding = tf_keras.layers.Embedding(
                len(spec.item_vocab) + 2, d, name="negative_history_embedding"
            )
        if spec.countries:
            self.country_lookup, self.country_embedding = _lookup_embedding(spec.countries, 8, 0.0, "country")
        if spec.devices:
            self.device_lookup, self.device_embedding = _lookup_embedding(spec.devices, 8, 0.0, "device")
        if spec.use_hour:
            self.hour_embedding = tf_keras.layers.Embedding(24, 8, name="hour_embedding")
        self.mlp = _mlp(spec.hidden, d, spec.dropout, "query_mlp")

    def call(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        spec = self.spec
        parts = []
        if spec.use_user_id:
            parts.append(self.user_embedding(self.user_lookup(features["user_id"])))
        history = self.item_lookup(features["history"])  # [B, H]
        parts.append(_masked_mean(self.history_embedding(history), history))
        if spec.use_negative_history:
            negative = self.item_lookup(features["negative_history"])
            parts.append(_masked_mean(self.negative_embedding(negative), negative))
        if spec.countries:
            parts.append(self.country_embedding(self.country_lookup(features["country"])))
        if spec.devices:
            parts.append(self.device_embedding(self.device_lookup(features["device"])))
        if spec.use_hour:
            parts.append(self.hour_embedding(tf.math.floormod(tf.cast(features["hour"], tf.int64), 24)))
        if spec.n_genres:
            parts.append(tf.cast(features["genre_mix"], tf.float32))
        return self.mlp(tf.concat(parts, axis=-1), training=training)

    def input_signature(self) -> dict[str, tf.TensorSpec]:
        """TensorSpecs of the configured inputs (the exported serving signature)."""
        spec = self.spec
        sig = {"history": tf.TensorSpec([None, None], tf.string, name="history")}
        if spec.use_user_id:
            sig["user_id"] = tf.TensorSpec([None], tf.string, name="user_id")
        if spec.use_negative_history:
            sig["negative_history"] = tf.TensorSpec([None, None], tf.string, name="negative_history")
        if spec.countries:
            sig["country"] = tf.TensorSpec([None], tf.string, name="country")
        if spec.devices:
            sig["device"] = tf.TensorSpec([None], tf.string, name="device")
        if spec.use_hour:
            sig["hour"] = tf.TensorSpec([None], tf.int64, name="hour")
        if spec.n_genres:
            sig["genre_mix"] = tf.TensorSpec([None, spec.n_genres], tf.float32, name="genre_mix")
        return sig


class CandidateTower(tf_keras.Model):
    """features (see module docstring) -> candidate embeddings [B, embedding_dim]."""

    def __init__(self, spec: CandidateTowerSpec, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        d = spec.embedding_dim
        if spec.use_item_id:
            self.item_lookup, self.item_embedding = _lookup_embedding(spec.item_vocab, d, spec.l2, "item")
        if spec.series_vocab:
            self.series_lookup, self.series_embedding = _lookup_embedding(spec.series_vocab, d, spec.l2, "series")
        self.mlp = _mlp(spec.hidden, d, 0.0, "candidate_mlp")

    def call(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        spec = self.spec
        parts = []
        if spec.use_item_id:
            ids = self.item_lookup(features["item_id"])  # [B] int64, 1 = OOV
            if training and spec.id_dropout > 0:
                drop = tf.random.uniform(tf.shape(ids)) < spec.id_dropout
                ids = tf.where(drop, tf.ones_like(ids), ids)
            parts.append(self.item_embedding(ids))
        if spec.series_vocab:
            parts.append(self.series_embedding(self.series_lookup(features["series_id"])))
        if spec.n_genres:
            parts.append(tf.cast(features["genres"], tf.float32))
        if spec.use_episode_number:
            parts.append(tf.math.log1p(tf.cast(features["episode_number"], tf.float32))[:, None])
        if spec.n_content:
            parts.append(tf.cast(features["content"], tf.float32))
        return self.mlp(tf.concat(parts, axis=-1), training=training)

    def input_signature(self) -> dict[str, tf.TensorSpec]:
        spec = self.spec
        sig = {}
        if spec.use_item_id:
            sig["item_id"] = tf.TensorSpec([None], tf.string, name="item_id")
        if spec.series_vocab:
            sig["series_id"] = tf.TensorSpec([None], tf.string, name="series_id")
        if spec.n_genres:
            sig["genres"] = tf.TensorSpec([None, spec.n_genres], tf.float32, name="genres")
        if spec.use_episode_number:
            sig["episode_number"] = tf.TensorSpec([None], tf.float32, name="episode_number")
        if spec.n_content:
            sig["content"] = tf.TensorSpec([None, spec.n_content], tf.float32, name="content")
        return sig


class TwoTowerModel(tfrs.models.Model):
    """In-batch softmax retrieval over a query tower and a candidate tower.

    A training batch is {"query": {...}, "candidate": {...}, "candidate_prob": [B] float32,
    and optionally "negative": {...} (candidate features of one skipped item per query)}.
    candidate_prob[b] is the probability that candidate b is drawn as an in-batch candidate
    (its share of positive train pairs); the logit correction subtracts log(candidate_prob).
    """

    def __init__(
        self,
        query_model: QueryTower,
        candidate_model: CandidateTower,
        temperature: float = 1.0,
        logq_correction: bool = True,
    ):
        super().__init__()
        self.query_model = query_model
        self.candidate_model = candidate_model
        self.logq_correction = logq_correction
        self.task = tfrs.tasks.Retrieval(temperature=temperature, remove_accidental_hits=True)

    def compute_loss(self, features: dict, training: bool = False) -> tf.Tensor:
        query = self.query_model(features["query"], training=training)  # [B, d]
        candidates = self.candidate_model(features["candidate"], training=training)  # [B, d]
        ids = features["candidate"]["item_id"]  # [B]
        batch = tf.shape(query)[0]
        prob = tf.cast(features["candidate_prob"], tf.float32) if self.logq_correction else tf.ones([batch])
        mask = None
        if "negative" in features:
            negatives = self.candidate_model(features["negative"], training=training)  # [B, d]
            candidates = tf.concat([candidates, negatives], axis=0)  # [2B, d]
            ids = tf.concat([ids, features["negative"]["item_id"]], axis=0)
            prob = tf.concat([prob, tf.ones([batch])], axis=0)  # explicit negatives are not sampled: no correction
            # query b sees every in-batch positive and only its own skipped item: [B, 2B]
            mask = tf.concat([tf.ones([batch, batch], tf.bool), tf.cast(tf.eye(batch), tf.bool)], axis=1)
        return self.task(
            query,
            candidates,
            candidate_sampling_probability=prob,
            candidate_ids=ids,
            compute_metrics=False,
            score_mask=mask,
        )


def export_tower(tower: QueryTower | CandidateTower, path: str) -> None:
    """Save one tower as a SavedModel with a `serving_default` signature over its configured inputs."""

    @tf.function(input_signature=[tower.input_signature()])
    def serve(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {"embedding": tower(features, training=False)}

    tf.saved_model.save(tower, path, signatures={"serving_default": serve})
