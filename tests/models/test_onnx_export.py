"""Keras -> ONNX: save -> load -> compare within 1e-5, the parity gate's failure path, int8 decision."""

from __future__ import annotations

import os

import numpy as np
import pytest

from models.onnx_export import (
    PARITY_TOL,
    OnnxParityError,
    OnnxRanker,
    check_parity,
    compare_quantized,
    export_ranker,
    parity_rows,
    quantize_int8,
)
from models.ranker import DEFAULT_FEATURES, predict, train_ranker

N_FEATURES = DEFAULT_FEATURES.n_features


def _data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((2000, N_FEATURES)).astype(np.float32)
    y = (X[:, 0] - X[:, 3] + 0.5 * rng.standard_normal(2000) > 0).astype(np.float32)
    return X, y


@pytest.fixture(scope="module")
def trained() -> tuple[object, np.ndarray, np.ndarray]:
    X, y = _data(0)
    return train_ranker(X, y, epochs=3), X, y


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> str:
    model, X, _ = trained
    path = str(tmp_path_factory.mktemp("onnx") / "ranker.onnx")
    return export_ranker(model, path, N_FEATURES, reference=X, metadata={"feature_schema_hash": "abc"})


def test_export_load_compare_within_bound(trained, exported) -> None:
    model, X, _ = trained
    ranker = OnnxRanker(exported)
    assert ranker.n_features == N_FEATURES and ranker.metadata["feature_schema_hash"] == "abc"
    got = ranker.score(X)
    assert got.shape == (len(X),)
    assert np.max(np.abs(got - predict(model, X))) <= PARITY_TOL
    assert check_parity(model, exported, parity_rows(N_FEATURES)) <= PARITY_TOL


def test_score_converts_float64_and_strided_input(exported, trained) -> None:
    _, X, _ = trained
    ranker = OnnxRanker(exported, max_batch=4)
    wide = np.asfortranarray(X[:10].astype(np.float64))  # larger than the buffer, wrong dtype and layout
    np.testing.assert_allclose(ranker.score(wide), ranker.score(X[:10]), atol=1e-7)
    with pytest.raises(ValueError, match="features must be"):
        ranker.score(X[:, :3])


def test_parity_gate_fails_against_a_different_model(exported) -> None:
    other = train_ranker(*_data(1), epochs=1, seed=7)
    with pytest.raises(OnnxParityError, match=r"max abs diff \d"):
        check_parity(other, exported, parity_rows(N_FEATURES))


def test_failed_export_leaves_no_file(trained, tmp_path) -> None:
    model, _, _ = trained
    path = str(tmp_path / "bad.onnx")
    with pytest.raises(OnnxParityError):
        export_ranker(model, path, N_FEATURES, tol=-1.0)  # an impossible bound forces the failure path
    assert not os.path.exists(path)


def test_int8_variant_is_measured_and_decided(trained, exported, tmp_path) -> None:
    _, X, y = trained
    int8 = quantize_int8(exported, str(tmp_path / "ranker.int8.onnx"))
    assert OnnxRanker(int8).metadata["feature_schema_hash"] == "abc"
    report = compare_quantized(exported, int8, X, y, candidates=500, iterations=50)
    assert report["auc_loss"] < 0.05  # dynamic int8 barely moves a 32-16-1 MLP
    faster = all(report["int8"][q] < report["fp32"][q] for q in ("p50_ms", "p99_ms"))
    expected = report["auc_loss"] <= report["max_auc_loss"] and faster
    assert report["keep_int8"] == expected
    assert report["decision"].startswith("keep" if expected else "drop")
