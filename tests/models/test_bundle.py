"""Bundle: atomic publish, gate refusal, corrupt / mixed / stale parts refused with the part named."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from models import bundle as bundle_mod
from models.ann_index import build_index
from models.bundle import BundleError, BundleGateError, current_version, load_bundle
from models.bundle_writer import BundleWriter, publish
from models.onnx_export import export_ranker
from models.ranker import DEFAULT_FEATURES, train_ranker

SCHEMA = DEFAULT_FEATURES.schema_hash
N_ITEMS, DIM = 400, 8


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, str]:
    """A query-tower SavedModel and an exported ranker, made once and copied into every bundle."""
    import tf_keras

    base = tmp_path_factory.mktemp("artifacts")
    tower = tf_keras.Sequential([tf_keras.Input(shape=(3,)), tf_keras.layers.Dense(DIM)])
    tower_dir = str(base / "query_tower")
    tower.save(tower_dir, save_format="tf")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((512, DEFAULT_FEATURES.n_features)).astype(np.float32)
    ranker = train_ranker(X, (X[:, 0] > 0).astype(np.float32), epochs=1, validation_fraction=0.0)
    onnx_path = export_ranker(ranker, str(base / "ranker.onnx"), DEFAULT_FEATURES.n_features)
    return {"tower": tower_dir, "onnx": onnx_path}


def _writer(root: str, artifacts: dict[str, str], version: str, seed: int = 0, recall: float = 0.99) -> BundleWriter:
    rng = np.random.default_rng(seed)
    embeddings = rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)
    ids = [f"item-{i}" for i in range(N_ITEMS)]
    writer = BundleWriter(root, SCHEMA, version=version)
    writer.write_query_tower(artifacts["tower"])
    writer.write_items(embeddings, ids)
    writer.write_index(build_index(embeddings, ids))
    writer.write_ranker(artifacts["onnx"])
    writer.add_gate("ann_recall_at_10", recall >= 0.95, recall, 0.95)
    writer.add_gate("onnx_parity", True, 2e-7, 1e-5)
    writer.finalize({"ranker_auc": 0.9})
    return writer


@pytest.fixture
def published(tmp_path, artifacts) -> str:
    root = str(tmp_path / "bundles")
    _writer(root, artifacts, "v1").publish()
    return root


def test_publish_then_load_round_trip(published, artifacts) -> None:
    assert current_version(published) == "v1"
    assert os.listdir(os.path.join(published, ".staging")) == []  # staging was renamed away
    loaded = load_bundle(published, expected_schema_hash=SCHEMA)
    assert (loaded.version, len(loaded.item_ids), loaded.item_embeddings.shape) == ("v1", N_ITEMS, (N_ITEMS, DIM))
    manifest = loaded.manifest
    assert manifest["item_count"] == N_ITEMS and manifest["feature_schema_hash"] == SCHEMA
    assert set(manifest["gates"]) == {"ann_recall_at_10", "onnx_parity"} and manifest["metrics"]["ranker_auc"] == 0.9
    # the loaded (brute-force, 400-item) index agrees with exact dot-product search
    emb = loaded.item_embeddings
    ids, _ = loaded.index.search(emb[:3], k=5)
    exact = np.argsort(-(emb[:3] @ emb.T), axis=1)[:, :5]
    assert ids.tolist() == [[f"item-{j}" for j in row] for row in exact]
    assert loaded.ranker.score(np.zeros((2, DEFAULT_FEATURES.n_features), np.float32)).shape == (2,)
    tower = loaded.load_query_tower()
    assert tower.signatures["serving_default"] is not None


def test_staged_bundle_is_invisible_until_published(tmp_path, artifacts) -> None:
    root = str(tmp_path / "bundles")
    writer = _writer(root, artifacts, "v1")
    assert current_version(root) is None and not os.path.exists(os.path.join(root, "versions"))
    with pytest.raises(BundleError, match="CURRENT"):
        load_bundle(root)
    assert writer.publish() == "v1" and current_version(root) == "v1"


def test_failed_gate_is_not_published_and_current_is_unchanged(published, artifacts) -> None:
    writer = _writer(published, artifacts, "v2", seed=1, recall=0.90)
    with pytest.raises(BundleGateError, match=r"ann_recall_at_10 = 0\.9 \(threshold 0\.95\)"):
        writer.publish()
    assert current_version(published) == "v1"
    assert os.listdir(os.path.join(published, "versions")) == ["v1"]
    assert os.path.isdir(writer.staging)  # left for inspection


def test_missing_gate_is_not_published(tmp_path, artifacts) -> None:
    writer = _writer(str(tmp_path), artifacts, "v1")
    del writer.gates["onnx_parity"]
    with pytest.raises(BundleGateError, match="onnx_parity not measured"):
        publish(writer.staging, str(tmp_path), writer.gates)


def test_crash_before_pointer_switch_keeps_old_version(published, artifacts, monkeypatch) -> None:
    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    writer = _writer(published, artifacts, "v2", seed=1)
    monkeypatch.setattr(bundle_mod.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        writer.publish()
    monkeypatch.undo()
    assert current_version(published) == "v1" and load_bundle(published).version == "v1"
    assert not [f for f in os.listdir(published) if f.startswith(".CURRENT")]  # temp pointer tidied


def test_second_version_reports_embedding_drift(published, artifacts) -> None:
    _writer(published, artifacts, "v2", seed=0).publish()  # same embeddings as v1
    drift = load_bundle(published).metrics["embedding_drift"]
    assert drift["vs_version"] == "v1" and drift["mean_jaccard"] == pytest.approx(1.0)
    _writer(published, artifacts, "v3", seed=5).publish()  # unrelated embeddings
    assert load_bundle(published).metrics["embedding_drift"]["mean_jaccard"] < 0.2


def test_flipped_bytes_are_refused_naming_the_part(published) -> None:
    path = os.path.join(published, "versions", "v1", "item_embeddings.npy")
    with open(path, "r+b") as f:
        f.seek(-8, os.SEEK_END)
        tail = f.read(8)
        f.seek(-8, os.SEEK_END)
        f.write(bytes(b ^ 0xFF for b in tail))
    with pytest.raises(BundleError, match="'item_embeddings.npy' fails its sha256"):
        load_bundle(published)


def test_mixed_bundle_is_refused_naming_the_part(published, artifacts, tmp_path) -> None:
    other = _writer(str(tmp_path / "other"), artifacts, "v9", seed=1)
    v1 = os.path.join(published, "versions", "v1")
    shutil.copy(os.path.join(other.staging, "item_ids.json"), os.path.join(v1, "item_ids.json"))
    with pytest.raises(BundleError, match="'item_ids.json' fails its sha256"):
        load_bundle(v1)
    # even if someone re-writes the checksums, the part's own version stamp gives it away
    manifest_path = os.path.join(v1, "manifest.json")
    with open(manifest_path) as f:
        manifest = json.load(f)
    manifest["files"]["item_ids.json"] = bundle_mod._sha256(os.path.join(v1, "item_ids.json"))
    with open(manifest_path, "w") as f:
        json.dump(manifest, f)
    with pytest.raises(BundleError, match="'item_ids.json' belongs to version 'v9'"):
        load_bundle(v1)


def test_missing_and_unlisted_files_are_refused(published) -> None:
    v1 = os.path.join(published, "versions", "v1")
    with open(os.path.join(v1, "stray.bin"), "wb") as f:
        f.write(b"x")
    with pytest.raises(BundleError, match="unexpected file 'stray.bin'"):
        load_bundle(v1)
    os.remove(os.path.join(v1, "stray.bin"))
    os.remove(os.path.join(v1, "ranker.onnx"))
    with pytest.raises(BundleError, match="'ranker.onnx' is missing"):
        load_bundle(v1)


def test_schema_hash_mismatch_is_refused(published) -> None:
    with pytest.raises(BundleError, match="feature schema"):
        load_bundle(published, expected_schema_hash="0000000000000000")


def test_ranker_from_another_schema_cannot_be_written(tmp_path, artifacts) -> None:
    import onnx

    model = onnx.load(artifacts["onnx"])
    model.metadata_props.add(key="feature_schema_hash", value="other")
    odd = str(tmp_path / "odd.onnx")
    onnx.save(model, odd)
    writer = BundleWriter(str(tmp_path / "root"), SCHEMA, version="v1")
    with pytest.raises(BundleError, match="exported for schema 'other'"):
        writer.write_ranker(odd)
