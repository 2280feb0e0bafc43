"""models/two_tower.py + retrieval_training.py: a tiny model learns, towers export and reload separately."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np
import tensorflow as tf

from models.evaluation import make_target
from models.retrieval_training import RetrievalData, SideFeatures, TwoTowerConfig, epoch_examples_dataset, fit_two_tower
from models.splits import from_rows
from models.two_tower import CandidateTower, QueryTower, TwoTowerModel, export_tower


def _tiny_split(n_users: int = 24, n_items: int = 12, seed: int = 0):
    """Two taste groups: even users like even items, odd users odd items; ids are strings."""
    rng = np.random.default_rng(seed)
    parts = {"train": [], "valid": [], "test": []}
    for u in range(n_users):
        liked = [i for i in range(n_items) if i % 2 == u % 2]
        rng.shuffle(liked)
        for k, i in enumerate(liked):
            part = "train" if k < 4 else ("valid" if k == 4 else "test")
            parts[part].append((f"user-{u}", f"ep-{i}", 1.0))
        parts["train"].append((f"user-{u}", f"ep-{(u + 1) % 2}", 0.0))  # one skip of the other group
    return from_rows("tiny", parts)


def _side(split):
    n = split.n_items
    return SideFeatures(
        item={"series_id": np.array([f"s{int(t.split('-')[1]) % 3}" for t in split.item_ids], dtype=object),
              "genres": np.eye(2, dtype=np.float32)[[int(t.split("-")[1]) % 2 for t in split.item_ids]],
              "episode_number": np.arange(1, n + 1, dtype=np.float32)},
        user={"country": np.array(["US", "BR"] * (split.n_users // 2), dtype=object)},
        train_context={"country": np.array(["US"] * len(split.train), dtype=object)},
    )  # fmt: skip


def test_loss_decreases_on_tiny_data():
    split = _tiny_split()
    config = TwoTowerConfig(embedding_dim=8, hidden=(16,), batch_size=16, learning_rate=0.05, temperature=1.0, seed=1)
    data = RetrievalData(split, config, _side(split))
    model = TwoTowerModel(QueryTower(data.query_spec()), CandidateTower(data.candidate_spec()), temperature=1.0)
    model.compile(optimizer=__import__("tf_keras").optimizers.Adam(0.05))
    batch = next(iter(epoch_examples_dataset(data.epoch_examples(np.random.default_rng(0)), 16)))
    before = float(model.compute_loss(batch))
    for _ in range(30):
        model.train_step(batch)
    after = float(model.compute_loss(batch))
    # in-batch softmax over 16 positives + 1 own skip: an untrained model sits near 16 * ln(17) ~ 45
    assert after < 0.5 * before


def test_fit_selects_best_valid_epoch_and_beats_chance():
    split = _tiny_split()
    config = TwoTowerConfig(
        embedding_dim=8, hidden=(), batch_size=16, learning_rate=0.05, temperature=0.5, epochs=4, patience=4
    )
    result, _ = fit_two_tower(split, make_target(split, "valid"), config, progress=False)
    assert len(result.history) == 4
    assert result.best_valid["recall@20"] == max(h["valid_recall@20"] for h in result.history)
    # each user's valid positive is one of 7 unmasked items (12 - 4 train positives - 1 skip):
    # random order gives NDCG = mean over ranks r=1..7 of 1/log2(r+1) = 3.638 / 7 ~ 0.52;
    # a model that learned the two taste groups ranks it 1st or 2nd of its group's 2: (1 + 0.631) / 2 ~ 0.82
    assert result.best_valid["ndcg@10"] > 0.7


def test_towers_export_and_reload_separately(tmp_path):
    split = _tiny_split()
    config = TwoTowerConfig(embedding_dim=8, hidden=(16,), use_user_id=True)
    data = RetrievalData(split, config, _side(split))
    query, candidate = QueryTower(data.query_spec()), CandidateTower(data.candidate_spec())
    users, items = np.arange(4), np.arange(5)
    q_in = data.eval_query_features(users)
    c_in = data.item_features(items)
    expected_q, expected_c = query(q_in).numpy(), candidate(c_in).numpy()  # [4, 8], [5, 8]
    export_tower(query, str(tmp_path / "query"))
    export_tower(candidate, str(tmp_path / "candidate"))
    q_sig = tf.saved_model.load(str(tmp_path / "query")).signatures["serving_default"]
    c_sig = tf.saved_model.load(str(tmp_path / "candidate")).signatures["serving_default"]
    got_q = q_sig(**{k: tf.constant(v) for k, v in q_in.items() if k in query.input_signature()})["embedding"].numpy()
    got_c = c_sig(**{k: tf.constant(v) for k, v in c_in.items()})["embedding"].numpy()
    assert np.max(np.abs(got_q - expected_q)) < 1e-5
    assert np.max(np.abs(got_c - expected_c)) < 1e-5
    # cold start: an unseen episode and an unseen user still embed (OOV id + features)
    cold = {k: v[:1] for k, v in c_in.items()} | {"item_id": np.array(["brand-new-episode"])}
    assert np.all(np.isfinite(c_sig(**{k: tf.constant(v) for k, v in cold.items()})["embedding"].numpy()))
    new_user = {k: v[:1] for k, v in q_in.items() if k in query.input_signature()} | {"user_id": np.array(["nobody"])}
    assert np.all(np.isfinite(q_sig(**{k: tf.constant(v) for k, v in new_user.items()})["embedding"].numpy()))


def test_training_curve_marks_the_kept_epoch_with_whole_epoch_ticks(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from models.retrieval_training import plot_curve

    history = [{"epoch": e, "loss": 10.0 / e, "valid_recall@20": r} for e, r in ((1, 0.2), (2, 0.3), (3, 0.3))]
    figures, close = [], plt.close
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to inspect it
    plot_curve(history, str(tmp_path / "curve.png"))
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    loss_ax, valid_ax = figures[0].axes
    marked = [line for line in valid_ax.get_lines() if line.get_marker() == "*"]
    assert [tuple(line.get_xydata()[0]) for line in marked] == [(2.0, 0.3)]  # the first best, as fit_two_tower keeps
    for ax in (loss_ax, valid_ax):
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
        assert ticks and all(float(t).is_integer() for t in ticks)
    close(figures[0])
