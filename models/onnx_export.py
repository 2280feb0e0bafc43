"""Keras ranker -> ONNX (tf2onnx) with a parity gate, an int8 variant judged on AUC and speed, and the runtime.

`export_ranker` converts, then scores 10,000 random rows in Keras and in ONNX Runtime; if the max abs
difference exceeds 1e-5 the file is deleted and `OnnxParityError` is raised with the measured
difference, so a bad export can never reach a bundle. `OnnxRanker` is what serving uses: one
intra-op thread, sequential execution, one session per process.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from models.ranker import auc

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

PARITY_ROWS = 10_000
PARITY_TOL = 1e-5
INPUT_NAME = "features"


class OnnxParityError(RuntimeError):
    """ONNX Runtime disagrees with Keras beyond the tolerance; the export is refused."""


class OnnxRanker:
    """ONNX Runtime session for the ranker: features [n, f] float32 -> scores [n] float32."""

    def __init__(self, path: str, max_batch: int = 1024) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = path
        self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        self.n_features = int(inp.shape[1])
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        # Reused for inputs that need a dtype/layout conversion, so the hot path does not allocate.
        self._buffer = np.empty((max_batch, self.n_features), dtype=np.float32)

    def score(self, features: np.ndarray) -> np.ndarray:
        """features: [n, n_features] -> P(positive) [n]."""
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise ValueError(f"features must be [n, {self.n_features}], got {features.shape}")
        if features.dtype != np.float32 or not features.flags.c_contiguous:
            n = features.shape[0]
            if n > self._buffer.shape[0]:
                self._buffer = np.empty((n, self.n_features), dtype=np.float32)
            np.copyto(self._buffer[:n], features, casting="same_kind")
            features = self._buffer[:n]
        return self.session.run([self.output_name], {self.input_name: features})[0].reshape(-1)


def parity_rows(
    n_features: int, n: int = PARITY_ROWS, reference: np.ndarray | None = None, seed: int = 0
) -> np.ndarray:
    """Random rows [n, f]: N(0, 1) if no reference, else N(mean, std) of the reference feature columns."""
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((n, n_features)).astype(np.float32)
    if reference is not None:
        rows = rows * reference.std(axis=0).astype(np.float32) + reference.mean(axis=0).astype(np.float32)
    return rows


def check_parity(keras_model: Any, onnx_path: str, rows: np.ndarray, tol: float = PARITY_TOL) -> float:
    """Max abs diff between Keras and ONNX Runtime on rows [n, f]; OnnxParityError above `tol`."""
    expected = np.asarray(keras_model(rows, training=False)).reshape(-1)
    got = OnnxRanker(onnx_path, max_batch=len(rows)).score(rows)
    diff = float(np.max(np.abs(expected - got)))
    if not diff <= tol:  # also catches NaN
        raise OnnxParityError(f"ONNX parity gate failed for {onnx_path}: max abs diff {diff:.3g} > {tol:g}")
    return diff


def export_ranker(
    keras_model: Any,
    path: str,
    n_features: int,
    *,
    reference: np.ndarray | None = None,
    metadata: dict[str, str] | None = None,
    opset: int = 17,
    tol: float = PARITY_TOL,
) -> str:
    """Convert with tf2onnx, stamp `metadata` (e.g. feature_schema_hash) into the model, run the parity gate.

    On a parity failure the written file is removed and OnnxParityError propagates.
    """
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, n_features), tf.float32, name=INPUT_NAME),)
    model_proto, _ = tf2onnx.convert.from_keras(keras_model, input_signature=spec, opset=opset)
    for key, value in (metadata or {}).items():
        model_proto.metadata_props.add(key=key, value=str(value))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    onnx.save(model_proto, path)
    try:
        check_parity(keras_model, path, parity_rows(n_features, reference=reference), tol)
    except Exception:
        os.remove(path)
        raise
    return path


def quantize_int8(path: str, out: str) -> str:
    """Dynamic int8 quantization of the weights (activations quantized at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(path, out, weight_type=QuantType.QInt8)
    model = onnx.load(out)
    present = {p.key for p in model.metadata_props}
    missing = [p for p in onnx.load(path).metadata_props if p.key not in present]
    if missing:  # keep the schema hash on the quantized copy
        for prop in missing:
            model.metadata_props.add(key=prop.key, value=prop.value)
        onnx.save(model, out)
    return out


def latency_ms(ranker: OnnxRanker, features: np.ndarray, iterations: int = 1000, warmup: int = 50) -> np.ndarray:
    """Per-call wall times in ms of `ranker.score(features)`."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    for _ in range(warmup):
        ranker.score(features)
    times = np.empty(iterations)
    for i in range(iterations):
        start = time.perf_counter()
        ranker.score(features)
        times[i] = (time.perf_counter() - start) * 1000
    return times


def summarize_latency(times_ms: np.ndarray) -> dict[str, float]:
    return {
        "p50_ms": float(np.percentile(times_ms, 50)),
        "p90_ms": float(np.percentile(times_ms, 90)),
        "p99_ms": float(np.percentile(times_ms, 99)),
        "mean_ms": float(times_ms.mean()),
    }


def compare_quantized(
    fp32_path: str,
    int8_path: str,
    X: np.ndarray,
    y: np.ndarray,
    *,
    candidates: int = 500,
    iterations: int = 1000,
    max_auc_loss: float = 0.001,
) -> dict[str, Any]:
    """AUC on (X, y) and latency on `candidates` rows for both models, and whether int8 is kept.

    Decision: keep int8 only if it loses at most `max_auc_loss` AUC AND both its p50 and p99 are lower.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    fp32, int8 = OnnxRanker(fp32_path, max_batch=len(X)), OnnxRanker(int8_path, max_batch=len(X))
    batch = X[np.arange(candidates) % len(X)]
    report: dict[str, Any] = {"candidates": candidates, "iterations": iterations, "max_auc_loss": max_auc_loss}
    for name, ranker in (("fp32", fp32), ("int8", int8)):
        report[name] = {"auc": auc(y, ranker.score(X)), **summarize_latency(latency_ms(ranker, batch, iterations))}
    report["auc_loss"] = report["fp32"]["auc"] - report["int8"]["auc"]
    accurate = report["auc_loss"] <= max_auc_loss
    faster = all(report["int8"][q] < report["fp32"][q] for q in ("p50_ms", "p99_ms"))
    report["keep_int8"] = bool(accurate and faster)
    report["decision"] = (
        "keep int8: no material AUC loss and faster"
        if report["keep_int8"]
        else f"drop int8: AUC loss {report['auc_loss']:.4f} ({'ok' if accurate else 'too high'}), "
        f"p50/p99 {report['int8']['p50_ms']:.3f}/{report['int8']['p99_ms']:.3f} ms vs fp32 "
        f"{report['fp32']['p50_ms']:.3f}/{report['fp32']['p99_ms']:.3f} ms "
        f"({'faster' if faster else 'not faster'})"
    )
    return report
