"""Training data, fit loop (tqdm progress, valid-only model selection) and training curve of the two-tower.

Training examples are the positive train pairs. Each example's query features are built per epoch:
`history` is a random subset (keep prob `history_keep`, at most `history_len`) of the user's OTHER
positive train items -- the target is always excluded, so the tower cannot learn to copy its input --
or, with `causal_history`, only the positives before it in file (= time) order. At evaluation the
history is the user's last `history_len` train positives. Epoch selection uses valid Recall@20.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tf_keras
from tqdm.auto import tqdm

from models.evaluation import EvalTarget, evaluate_embeddings
from models.splits import Split
from models.two_tower import PAD, CandidateTower, CandidateTowerSpec, QueryTower, QueryTowerSpec, TwoTowerModel

SELECTION_METRIC = "recall@20"


@dataclasses.dataclass(frozen=True)
class TwoTowerConfig:
    embedding_dim: int = 64
    hidden: tuple[int, ...] = (128,)
    epochs: int = 30
    batch_size: int = 512
    learning_rate: float = 0.001
    temperature: float = 0.1
    logq_correction: bool = True
    use_negatives: bool = True
    use_negative_history: bool = True
    use_user_id: bool = False  # per-user id embeddings memorised kuairec's train set (valid recall fell)
    history_len: int = 50
    history_keep: float = 0.8
    causal_history: bool = False
    id_dropout: float = 0.0
    dropout: float = 0.0
    l2: float = 0.0
    patience: int = 4
    seed: int = 0


@dataclasses.dataclass
class SideFeatures:
    """Optional features beyond ids. Every array is keyed by index of the split's id space.

    item: {"series_id": [n_items] str, "genres": [n_items, G] float, "episode_number": [n_items] float,
           "content": [n_items, C] float}
    user: {"country": [n_users] str, "device": [n_users] str, "hour": [n_users] int}  (context at eval)
    train_context: same keys as `user`, [n_train_rows] aligned with split.train (context of each event)
    """

    item: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    user: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    train_context: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class FitResult:
    model: TwoTowerModel
    history: list[dict[str, float]]  # per epoch: epoch, loss, valid recall@20, ...
    best_epoch: int
    best_valid: dict[str, float]
    seconds: float


class RetrievalData:
    """Per-user item lists and feature builders for one split."""

    def __init__(self, split: Split, config: TwoTowerConfig, side: SideFeatures | None = None):
        self.split, self.config, self.side = split, config, side or SideFeatures()
        self.item_tokens = np.array(split.item_ids + (PAD,), dtype=object)  # index -1 -> padding
        self.user_tokens = np.array(split.user_ids, dtype=object)
        train = split.train
        self.pos_rows = np.flatnonzero(train.is_positive)  # rows of split.train that are training examples
        self.pos_by_user = _group(train.users[self.pos_rows], train.items[self.pos_rows], split.n_users)
        neg_rows = np.flatnonzero(~train.is_positive)
        self.neg_by_user = _group(train.users[neg_rows], train.items[neg_rows], split.n_users)
        # rank of each example inside its user's positive list (file order), for causal histories
        users = train.users[self.pos_rows]
        order = np.argsort(users, kind="stable")
        starts = np.searchsorted(users[order], users[order])
        self.rank_in_user = np.empty_like(users)
        self.rank_in_user[order] = np.arange(users.size) - starts
        counts = np.bincount(train.items[self.pos_rows], minlength=split.n_items).astype(np.float64)
        self.item_prob = (counts / counts.sum()).astype(np.float32)  # [n_items] in-batch sampling probability

    # -- specs ---------------------------------------------------------------------------------
    def query_spec(self) -> QueryTowerSpec:
        c, user = self.config, self.side.user
        genres = self.side.item.get("genres")
        return QueryTowerSpec(
            user_vocab=self.split.user_ids, item_vocab=self.split.item_ids, embedding_dim=c.embedding_dim,
            history_len=c.history_len, use_user_id=c.use_user_id, use_negative_history=c.use_negative_history,
            countries=tuple(sorted(set(user["country"]))) if "country" in user else (),
            devices=tuple(sorted(set(user["device"]))) if "device" in user else (),
            use_hour="hour" in user, n_genres=0 if genres is None else genres.shape[1],
            hidden=c.hidden, dropout=c.dropout, l2=c.l2,
        )  # fmt: skip

    def candidate_spec(self) -> CandidateTowerSpec:
        c, item = self.config, self.side.item
        return CandidateTowerSpec(
            item_vocab=self.split.item_ids, embedding_dim=c.embedding_dim,
            series_vocab=tuple(sorted(set(item["series_id"]))) if "series_id" in item else (),
            n_genres=item["genres"].shape[1] if "genres" in item else 0,
            use_episode_number="episode_number" in item,
            n_content=item["content"].shape[1] if "content" in item else 0,
            hidden=c.hidden, id_dropout=c.id_dropout, l2=c.l2,
        )  # fmt: skip

    # -- features --------------------------------------------------------------------------------
    def item_features(self, items: np.ndarray) -> dict[str, np.ndarray]:
        """items: [n] int64 indices -> candidate-tower features."""
        out = {"item_id": self.item_tokens[items].astype(str)}
        for key, table in self.side.item.items():
            out[key] = table[items].astype(str) if key == "series_id" else table[items].astype(np.float32)
        return out

    def _bag(self, lists: list[np.ndarray]) -> np.ndarray:
        """Item index lists -> [n, history_len] index matrix, -1 = padding (last items kept)."""
        h = self.config.history_len
        out = np.full((len(lists), h), -1, dtype=np.int64)
        for r, items in enumerate(lists):
            items = items[-h:]
            out[r, : items.size] = items
        return out

    def _query_features(
        self, users: np.ndarray, pos_bag: np.ndarray, neg_bag: np.ndarray, context: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        out = {"user_id": self.user_tokens[users].astype(str), "history": self.item_tokens[pos_bag].astype(str)}
        if self.config.use_negative_history:
            out["negative_history"] = self.item_tokens[neg_bag].astype(str)
        if "genres" in self.side.item:
            genres = np.vstack([self.side.item["genres"], np.zeros((1, self.side.item["genres"].shape[1]))])
            g = genres[pos_bag].sum(axis=1)  # [n, G]
            out["genre_mix"] = (g / np.maximum(g.sum(axis=1, keepdims=True), 1e-9)).astype(np.float32)
        for key, values in context.items():
            out[key] = values.astype(np.int64) if key == "hour" else values.astype(str)
        return out

    def eval_query_features(self, users: np.ndarray) -> dict[str, np.ndarray]:
        """users: [n] -> query features from each user's whole train history and eval context."""
        pos = self._bag([self.pos_by_user[u] for u in users])
        neg = self._bag([self.neg_by_user[u] for u in users])
        return self._query_features(users, pos, neg, {k: v[users] for k, v in self.side.user.items()})

    def epoch_examples(self, rng: np.random.Generator) -> dict:
        """One shuffled epoch of training examples (nested dict of numpy arrays)."""
        c, train = self.config, self.split.train
        rows = self.pos_rows[rng.permutation(self.pos_rows.size)]
        example = np.searchsorted(self.pos_rows, rows)
        users, items = train.users[rows], train.items[rows]
        hist, negs, neg_hist = [], np.empty(rows.size, dtype=np.int64), []
        for k, (u, e) in enumerate(zip(users, example, strict=True)):
            pos, rank = self.pos_by_user[u], self.rank_in_user[e]
            others = pos[:rank] if c.causal_history else np.delete(pos, rank)
            hist.append(others[rng.random(others.size) < c.history_keep])
            neg = self.neg_by_user[u]
            if neg.size:
                j = rng.integers(neg.size)
                negs[k] = neg[j]
                neg_hist.append(np.delete(neg, j))  # the explicit negative is not also a query input
            else:
                negs[k] = rng.integers(self.split.n_items)
                neg_hist.append(neg)
        context = {k: v[rows] for k, v in self.side.train_context.items()}
        batch = {
            "query": self._query_features(users, self._bag(hist), self._bag(neg_hist), context),
            "candidate": self.item_features(items),
            "candidate_prob": self.item_prob[items],
        }
        if c.use_negatives:
            batch["negative"] = self.item_features(negs)
        return batch


def _group(users: np.ndarray, items: np.ndarray, n_users: int) -> list[np.ndarray]:
    """Items of each user, in original (file) order: list of n_users int64 arrays."""
    order = np.argsort(users, kind="stable")
    bounds = np.searchsorted(users[order], np.arange(n_users + 1))
    sorted_items = items[order].astype(np.int64)
    return [sorted_items[bounds[u] : bounds[u + 1]] for u in range(n_users)]


def embed_all(model: TwoTowerModel, data: RetrievalData, batch_size: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """User embeddings [n_users, d] (row = user index) and item embeddings [n_items, d]."""
    users = np.arange(data.split.n_users)
    u_emb = [
        model.query_model(data.eval_query_features(users[i : i + batch_size])).numpy()
        for i in range(0, users.size, batch_size)
    ]
    items = np.arange(data.split.n_items)
    i_emb = [
        model.candidate_model(data.item_features(items[i : i + batch_size])).numpy()
        for i in range(0, items.size, batch_size)
    ]
    return np.concatenate(u_emb), np.concatenate(i_emb)


class _TqdmBatches(tf_keras.callbacks.Callback):
    def __init__(self, bar: tqdm):
        super().__init__()
        self.bar, self.losses = bar, []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", np.nan))
        self.losses.append(loss)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)


def fit_two_tower(
    split: Split,
    valid: EvalTarget,
    config: TwoTowerConfig,
    side: SideFeatures | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    data: RetrievalData | None = None,
) -> tuple[FitResult, RetrievalData]:
    """Train, evaluating valid Recall@20 after every epoch; restore the best epoch's weights.

    `data`: a prepared RetrievalData (e.g. models.pit_retrieval.PointInTimeData, whose query features
    are point-in-time feature rows) instead of the default one built from split and side.
    """
    start = time.perf_counter()
    tf_keras.utils.set_random_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    data = data if data is not None else RetrievalData(split, config, side)
    model = TwoTowerModel(
        QueryTower(data.query_spec()), CandidateTower(data.candidate_spec()), config.temperature, config.logq_correction
    )
    model.compile(optimizer=tf_keras.optimizers.Adam(config.learning_rate))
    steps = -(-data.pos_rows.size // config.batch_size)
    bar = tqdm(total=steps * config.epochs, desc="two-tower", unit="batch", disable=not progress, mininterval=1.0)
    history: list[dict[str, float]] = []
    best, best_epoch, best_weights = -1.0, 0, None
    for epoch in range(1, config.epochs + 1):
        examples = epoch_examples_dataset(data.epoch_examples(rng), config.batch_size)
        callback = _TqdmBatches(bar)
        model.fit(examples, epochs=1, verbose=0, callbacks=[callback])
        metrics = evaluate_embeddings(*embed_all(model, data), valid)
        history.append(
            {"epoch": epoch, "loss": float(np.mean(callback.losses)), **{f"valid_{k}": v for k, v in metrics.items()}}
        )
        bar.set_description(f"two-tower ep{epoch} valid R@20={metrics[SELECTION_METRIC]:.4f}")
        if log:
            log(
                f"epoch {epoch}: loss {history[-1]['loss']:.4f} valid {SELECTION_METRIC} {metrics[SELECTION_METRIC]:.4f}"
            )
        if metrics[SELECTION_METRIC] > best:
            best, best_epoch, best_weights = metrics[SELECTION_METRIC], epoch, model.get_weights()
        elif epoch - best_epoch >= config.patience:
            break
    bar.close()
    if best_weights is not None:
        model.set_weights(best_weights)
    best_valid = {k[len("valid_") :]: v for k, v in history[best_epoch - 1].items() if k.startswith("valid_")}
    return FitResult(model, history, best_epoch, best_valid, time.perf_counter() - start), data


def epoch_examples_dataset(examples: dict, batch_size: int) -> tf.data.Dataset:
    # drop_remainder: a final tiny batch gives an in-batch softmax with almost no negatives
    n = len(examples["candidate_prob"])
    ds = tf.data.Dataset.from_tensor_slices(examples)
    return ds.batch(min(batch_size, n), drop_remainder=n >= batch_size).prefetch(2)


def plot_curve(history: list[dict[str, float]], path: str, title: str = "two-tower training") -> None:
    """Training-curve PNG: train loss and valid Recall@20 per epoch (whole-epoch ticks), with the epoch
    whose weights are kept (the best valid Recall@20) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    valid = [h[f"valid_{SELECTION_METRIC}"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["loss"] for h in history], marker="o")
    ax1.set(xlabel="epoch", ylabel="train loss (in-batch softmax)", title="loss")
    ax2.plot(epochs, valid, marker="o", color="tab:green")
    if valid:
        best = max(range(len(valid)), key=valid.__getitem__)  # the first of equals, as fit_two_tower keeps
        ax2.plot(
            epochs[best],
            valid[best],
            marker="*",
            markersize=14,
            color="tab:red",
            linestyle="none",
            label=f"kept: epoch {epochs[best]}",
        )
        ax2.legend(loc="lower right")
    ax2.set(xlabel="epoch", ylabel=f"valid {SELECTION_METRIC}", title="valid recall@20 (selection metric)")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
