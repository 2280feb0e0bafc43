"""Write one model bundle into staging, gate it, verify it and publish it by switching CURRENT.

The layout, the atomicity argument and the reader are in models/bundle.py; `publish` runs the same
`load_bundle` serving runs before anyone can see the version.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.ann_index import ScannIndex, drift_report
from models.bundle import (
    _QT_VERSION_FILE,
    CURRENT,
    MANIFEST,
    REQUIRED_GATES,
    BundleError,
    BundleGateError,
    Gate,
    _is_gcs,
    _join,
    _list_files,
    _read_json,
    _sha256,
    current_version,
    load_bundle,
    new_version,
)


def _write_pointer(root: str, version: str) -> None:
    if _is_gcs(root):
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.create(_join(root, CURRENT)) as f:  # one object upload: atomic on close
            f.write(version.encode() + b"\n")
        return
    fd, tmp = tempfile.mkstemp(prefix=".CURRENT.", dir=root)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(version + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(root, CURRENT))
    except BaseException:
        os.unlink(tmp)  # CURRENT still names the previous version; re-raise after tidying the temp file
        raise


class BundleWriter:
    """Writes one bundle version into a staging directory; `finalize()` seals it, `publish()` releases it."""

    def __init__(self, root: str, feature_schema_hash: str, version: str | None = None) -> None:
        self.root = root
        self.version = version or new_version()
        self.feature_schema_hash = feature_schema_hash
        if _is_gcs(root):
            self.staging = os.path.join(tempfile.mkdtemp(prefix="bundle-staging-"), self.version)
        else:
            self.staging = os.path.join(root, ".staging", self.version)
        os.makedirs(self.staging)
        self.gates: dict[str, Gate] = {}
        self.metrics: dict[str, Any] = {}
        self.serving_ranker = "ranker.onnx"
        self._items: tuple[int, int] | None = None
        self._ids: list[Any] | None = None
        self._embeddings: np.ndarray | None = None

    def _part(self, name: str) -> str:
        return os.path.join(self.staging, name)

    def write_query_tower(self, model_or_saved_model_dir: Any) -> None:
        """A Keras/TF model (saved as a SavedModel) or the path of an existing SavedModel directory."""
        dest = self._part("query_tower")
        if isinstance(model_or_saved_model_dir, str):
            shutil.copytree(model_or_saved_model_dir, dest)
        else:
            import tensorflow as tf

            tf.saved_model.save(model_or_saved_model_dir, dest)
        with open(os.path.join(dest, _QT_VERSION_FILE), "w") as f:
            f.write(self.version)

    def write_items(self, embeddings: np.ndarray, ids: Sequence[Any]) -> None:
        """embeddings: [n, d] float32, row i is item ids[i]."""
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(ids):
            raise BundleError(f"item embeddings {embeddings.shape} do not match {len(ids)} ids")
        np.save(self._part("item_embeddings.npy"), embeddings)
        self._ids = [i.item() if isinstance(i, np.generic) else i for i in ids]
        with open(self._part("item_ids.json"), "w") as f:
            json.dump({"version": self.version, "ids": self._ids}, f)
        self._items, self._embeddings = embeddings.shape, embeddings

    def write_index(self, index: ScannIndex) -> None:
        index.version = self.version
        index.save(self._part("scann"))

    def write_ranker(self, onnx_path: str, int8_path: str | None = None, serve_int8: bool = False) -> None:
        """Copy the exported ranker(s), stamping bundle_version and feature_schema_hash into their metadata."""
        import onnx

        for src, name in ((onnx_path, "ranker.onnx"), (int8_path, "ranker.int8.onnx")):
            if src is None:
                continue
            model = onnx.load(src)
            stamp = {"bundle_version": self.version, "feature_schema_hash": self.feature_schema_hash}
            found = {p.key: p.value for p in model.metadata_props}
            if found.get("feature_schema_hash", self.feature_schema_hash) != self.feature_schema_hash:
                raise BundleError(f"{src} was exported for schema {found['feature_schema_hash']!r}")
            kept = [p for p in model.metadata_props if p.key not in stamp]
            del model.metadata_props[:]
            model.metadata_props.extend(kept)
            for key, value in stamp.items():
                model.metadata_props.add(key=key, value=value)
            onnx.save(model, self._part(name))
        self.serving_ranker = "ranker.int8.onnx" if serve_int8 and int8_path else "ranker.onnx"

    def add_gate(self, name: str, passed: bool, value: float, threshold: float) -> None:
        self.gates[name] = Gate(name, bool(passed), float(value), float(threshold))

    def finalize(self, metrics: Mapping[str, Any] | None = None) -> str:
        """Write metrics.json (incl. drift vs the published version) and the manifest; returns staging dir."""
        if self._items is None:
            raise BundleError("write_items() was not called")
        self.metrics.update(metrics or {})
        self.metrics["embedding_drift"] = self._drift_vs_current()
        doc = {"version": self.version, "gates": {k: g.to_dict() for k, g in self.gates.items()}, **self.metrics}
        with open(self._part("metrics.json"), "w") as f:
            json.dump(doc, f, indent=2, default=float)
        files = {rel: _sha256(self._part(rel)) for rel in _list_files(self.staging) if rel != MANIFEST}
        manifest = {
            "version": self.version,
            "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
            "feature_schema_hash": self.feature_schema_hash,
            "item_count": int(self._items[0]),
            "embedding_dim": int(self._items[1]),
            "serving_ranker": self.serving_ranker,
            "files": files,
            "gates": {k: g.to_dict() for k, g in self.gates.items()},
            "metrics": {k: v for k, v in self.metrics.items() if isinstance(v, int | float | str)},
        }
        with open(self._part(MANIFEST), "w") as f:
            json.dump(manifest, f, indent=2)
        return self.staging

    def _drift_vs_current(self) -> dict[str, Any] | None:
        previous = current_version(self.root)
        if previous is None or self._embeddings is None or self._ids is None:
            return None
        try:
            old = load_bundle(self.root, load_index=False, load_ranker=False)
        except BundleError as exc:  # reported in metrics.json; a bad old bundle must not block a good new one
            return {"vs_version": previous, "error": str(exc)}
        report = drift_report(old.item_embeddings, old.item_ids, self._embeddings, self._ids)
        return {"vs_version": previous, **report}

    def publish(self) -> str:
        return publish(self.staging, self.root, self.gates)


def publish(staging: str, root: str, gates: Mapping[str, Gate] | None = None) -> str:
    """Verify a finalized staging dir, move it under <root>/versions/, then switch CURRENT. Returns the version.

    Refuses (BundleGateError) when a gate failed or a required gate is missing; the staging dir is left
    in place for inspection and CURRENT is untouched.
    """
    manifest = _read_json(os.path.join(staging, MANIFEST), MANIFEST)
    gates = gates if gates is not None else {k: Gate(**v) for k, v in manifest.get("gates", {}).items()}
    failed = sorted(name for name, gate in gates.items() if not gate.passed)
    missing = sorted(set(REQUIRED_GATES) - set(gates))
    if failed or missing:
        detail = ", ".join(
            [f"{n} = {gates[n].value:.6g} (threshold {gates[n].threshold:g})" for n in failed]
            + [f"{n} not measured" for n in missing]
        )
        raise BundleGateError(f"not publishing {manifest.get('version')!r}: gate(s) failed: {detail}")
    version = load_bundle(staging).version  # the same verification serving runs, before anyone can see it
    if _is_gcs(root):
        from apache_beam.io.filesystems import FileSystems

        dest = _join(root, "versions", version)
        for rel in _list_files(staging):
            with open(os.path.join(staging, rel), "rb") as src, FileSystems.create(dest + "/" + rel) as dst:
                shutil.copyfileobj(src, dst)
    else:
        dest = os.path.join(root, "versions", version)
        if os.path.exists(dest):
            raise BundleError(f"version {version!r} already exists at {dest}; versions are immutable")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.rename(staging, dest)
    _write_pointer(root, version)
    return version
