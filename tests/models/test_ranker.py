"""Ranker: metrics arithmetic, feature spec + hash, popularity prior, training, KuaiRec vs the baseline."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from models.ranker import (
    DEFAULT_FEATURES,
    KuaiRecFeatureTables,
    PopularityPrior,
    RankerFeatures,
    auc,
    evaluate_on_kuairec,
    logloss,
    predict,
    train_ranker,
)

KUAIREC = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "kuairec")


def test_auc_arithmetic() -> None:
    # pairs (pos, neg): (0.35>0.1) (0.35<0.4) (0.8>0.1) (0.8>0.4) -> 3 of 4 ordered right
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert auc(np.array([0, 1, 0, 1]), np.full(4, 0.3)) == pytest.approx(0.5)  # all tied
    assert auc(np.array([1, 0]), np.array([0.2, 0.9])) == 0.0
    with pytest.raises(ValueError):
        auc(np.ones(3), np.arange(3))


def test_logloss_arithmetic() -> None:
    assert logloss(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(math.log(2))
    assert logloss(np.array([1]), np.array([0.0])) == pytest.approx(-math.log(1e-7))  # clipped, finite


def test_feature_spec_orders_columns_and_hashes_layout() -> None:
    spec = RankerFeatures(("a", "b"))
    out = spec.assemble({"b": np.array([1.0, 2.0]), "a": 5.0}, 2)
    assert out.dtype == np.float32 and out.tolist() == [[5, 1], [5, 2]]
    assert spec.schema_hash == RankerFeatures(("a", "b")).schema_hash
    assert spec.schema_hash != RankerFeatures(("b", "a")).schema_hash
    assert spec.schema_hash != RankerFeatures(("a", "b"), version=2).schema_hash
    with pytest.raises(KeyError, match="missing"):
        spec.assemble({"a": 1.0}, 1)
    assert DEFAULT_FEATURES.n_features == 7 and "retrieval_score" in DEFAULT_FEATURES.columns


def test_popularity_prior_smoothing() -> None:
    # global rate 2/5 = 0.4; smoothing 10: item "a" 2/3 -> (2 + 4) / 13, item "b" 0/2 -> 4 / 12
    prior = PopularityPrior(smoothing=10).fit(["a", "a", "a", "b", "b"], np.array([1, 1, 0, 0, 0]))
    np.testing.assert_allclose(prior.predict(["a", "b", "unseen"]), [6 / 13, 4 / 12, 0.4], rtol=1e-6)


def test_kuairec_tables_use_train_only() -> None:
    train = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 1]])
    tables = KuaiRecFeatureTables.from_train(train, n_users=2, n_items=2, smoothing=0, rank=2)
    np.testing.assert_allclose(tables.item_pos_rate[:2], [1.0, 0.0])
    np.testing.assert_allclose(tables.user_log_impr, np.log1p([2, 1]))
    X = tables.features(np.array([0, 1]), np.array([0, 1]))
    assert X.shape == (2, DEFAULT_FEATURES.n_features)
    assert X[:, DEFAULT_FEATURES.columns.index("ctx_same_series")].tolist() == [0, 0]


def test_training_learns_a_separable_signal() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 4)).astype(np.float32) * [1, 10, 100, 0.1]  # scales differ: normalised inside
    y = (X[:, 1] / 10 - X[:, 2] / 100 > 0).astype(np.float32)
    model = train_ranker(X[:2000], y[:2000], epochs=8)
    p = predict(model, X[2000:])
    assert p.shape == (1000,) and np.all((p >= 0) & (p <= 1))
    assert auc(y[2000:], p) > 0.95


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(KUAIREC), reason="shared kuairec data not present")
def test_kuairec_ranker_beats_popularity_prior() -> None:
    report, _, X_test, y_test = evaluate_on_kuairec(KUAIREC)
    assert X_test.shape == (50_796, DEFAULT_FEATURES.n_features) and y_test.mean() == pytest.approx(0.1439, abs=1e-3)
    assert report["ranker"]["auc"] > report["popularity_prior"]["auc"] + 0.02
    assert report["ranker"]["logloss"] < report["popularity_prior"]["logloss"]
