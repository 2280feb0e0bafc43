"""One versioned model bundle, written to staging, verified, and published by switching a pointer.

Layout under a root (a local directory, or gs://bucket/prefix in the cloud):

    <root>/CURRENT                     the published version's name (one line)
    <root>/versions/<version>/
        manifest.json                  version, created_at, feature_schema_hash, item_count, embedding_dim,
                                       sha256 of every other file, gates (all passed) and headline metrics
        query_tower/                   TF SavedModel (+ bundle_version.txt)
        item_embeddings.npy            [item_count, embedding_dim] float32, row i is item_ids[i]
        item_ids.json                  {"version", "ids"}
        scann/                         serialized ScaNN searcher (+ ids, config, version)
        ranker.onnx [ranker.int8.onnx] metadata: bundle_version, feature_schema_hash
        metrics.json                   {"version", evaluation metrics, gates, embedding drift vs previous}

Atomicity. Locally the bundle is written under <root>/.staging/<version>, verified with the same
`load_bundle` serving uses, renamed into versions/ (one rename on one filesystem), and only then is
CURRENT replaced (temp file + os.replace). A reader sees the old version or the new one, never a
part-written one. On GCS, objects are immutable and there is no directory rename: the verified local
staging directory is copied object by object under versions/<version>/ (invisible to readers, which
only follow CURRENT), then the CURRENT object is overwritten; a single object write is atomic, so
the pointer switch is too. Serving's hot-swap polls CURRENT.

This module is the format and its reader (`load_bundle`, which verifies); models/bundle_writer.py
writes, gates and publishes (`BundleWriter`, `publish`) and verifies with the same `load_bundle`.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np

from models.ann_index import ScannIndex
from models.onnx_export import OnnxRanker

MANIFEST = "manifest.json"
CURRENT = "CURRENT"
REQUIRED_PARTS = ("query_tower", "item_embeddings.npy", "item_ids.json", "scann", "ranker.onnx", "metrics.json")
REQUIRED_GATES = ("ann_recall_at_10", "onnx_parity")
_QT_VERSION_FILE = "bundle_version.txt"


class BundleError(RuntimeError):
    """The bundle is incomplete, corrupt or mixed; the message names the offending part."""


class BundleGateError(BundleError):
    """A quality gate failed (or is missing), so the bundle must not be published."""


@dataclasses.dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    value: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _is_gcs(path: str) -> bool:
    return path.startswith("gs://")


def _join(*parts: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(*parts) if _is_gcs(parts[0]) else os.path.join(*parts)


def new_version() -> str:
    """Sortable, unique version name: UTC time + random suffix."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _list_files(directory: str) -> list[str]:
    """Relative paths of all files under directory, sorted, '/'-separated."""
    out = []
    for dirpath, _, files in os.walk(directory):
        out += [os.path.relpath(os.path.join(dirpath, f), directory).replace(os.sep, "/") for f in files]
    return sorted(out)


def _read_json(path: str, part: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"part {part!r} unreadable at {path}: {exc}") from exc


def current_version(root: str) -> str | None:
    """The published version name at root, or None if nothing is published yet."""
    from apache_beam.io.filesystems import FileSystems

    pointer = _join(root, CURRENT)
    if not FileSystems.exists(pointer):
        return None
    with FileSystems.open(pointer) as f:
        return f.read().decode().strip() or None


@dataclasses.dataclass
class LoadedBundle:
    """A verified bundle. `index` and `ranker` are ready to serve; the query tower loads on demand."""

    path: str
    version: str
    manifest: dict[str, Any]
    item_ids: list[Any]
    item_embeddings: np.ndarray
    metrics: dict[str, Any]
    index: ScannIndex | None
    ranker: OnnxRanker | None

    @property
    def feature_schema_hash(self) -> str:
        return self.manifest["feature_schema_hash"]

    def load_query_tower(self) -> Any:
        import tensorflow as tf

        return tf.saved_model.load(os.path.join(self.path, "query_tower"))


def _localize(path: str) -> str:
    """gs:// root or version dir -> local copy of the version dir (ScaNN and ORT read local files)."""
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(_join(path, MANIFEST)):
        version = current_version(path)
        if version is None:
            raise BundleError(f"no {CURRENT} pointer and no {MANIFEST} at {path}")
        path = _join(path, "versions", version)
    prefix = path.rstrip("/") + "/"
    local = os.path.join(tempfile.mkdtemp(prefix="bundle-"), path.rstrip("/").rsplit("/", 1)[-1])
    for meta in FileSystems.match([prefix + "**"])[0].metadata_list:
        dest = os.path.join(local, meta.path[len(prefix) :])
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with FileSystems.open(meta.path) as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return local


def _resolve(path: str) -> str:
    if _is_gcs(path):
        return _localize(path)
    if os.path.isfile(os.path.join(path, MANIFEST)):
        return path
    version = current_version(path)
    if version is None:
        raise BundleError(f"{path} is neither a bundle version directory (no {MANIFEST}) nor a root with {CURRENT}")
    return os.path.join(path, "versions", version)


def _verify_files(path: str, manifest: Mapping[str, Any]) -> None:
    listed: dict[str, str] = manifest["files"]
    present = set(_list_files(path)) - {MANIFEST}
    for part in REQUIRED_PARTS:
        if not any(f == part or f.startswith(part + "/") for f in listed):
            raise BundleError(f"bundle {path}: required part {part!r} is not in the manifest")
    missing, extra = sorted(set(listed) - present), sorted(present - set(listed))
    if missing:
        raise BundleError(f"bundle {path}: part {missing[0]!r} is missing ({len(missing)} listed files absent)")
    if extra:
        raise BundleError(f"bundle {path}: unexpected file {extra[0]!r} not in the manifest (mixed bundle?)")
    for rel, expected in listed.items():
        if _sha256(os.path.join(path, rel)) != expected:
            raise BundleError(
                f"bundle {path}: part {rel!r} fails its sha256 checksum: corrupt, or copied from another version"
            )


def load_bundle(
    root_or_version_dir: str,
    expected_schema_hash: str | None = None,
    load_index: bool = True,
    load_ranker: bool = True,
) -> LoadedBundle:
    """Open the CURRENT version of a root (or one version directory) and verify that its parts agree.

    Checks: manifest present; version == directory name; every listed file present, no unlisted file,
    sha256 matches; every part stamped with this version; item count and dim agree across manifest,
    embeddings, ids and index; the ranker's feature-schema hash matches the manifest (and
    `expected_schema_hash` if given). Any failure raises BundleError naming the part.
    """
    path = _resolve(root_or_version_dir)
    manifest = _read_json(os.path.join(path, MANIFEST), MANIFEST)
    for key in ("version", "feature_schema_hash", "item_count", "embedding_dim", "files", "gates"):
        if key not in manifest:
            raise BundleError(f"bundle {path}: {MANIFEST} lacks {key!r}")
    version = manifest["version"]
    if os.path.basename(os.path.normpath(path)) != version:
        raise BundleError(f"bundle {path}: {MANIFEST} says version {version!r}, directory says otherwise")
    _verify_files(path, manifest)

    def check_version(part: str, found: Any) -> None:
        if found != version:
            raise BundleError(f"bundle {path}: part {part!r} belongs to version {found!r}, not {version!r}")

    ids_doc = _read_json(os.path.join(path, "item_ids.json"), "item_ids.json")
    check_version("item_ids.json", ids_doc.get("version"))
    metrics = _read_json(os.path.join(path, "metrics.json"), "metrics.json")
    check_version("metrics.json", metrics.get("version"))
    with open(os.path.join(path, "query_tower", _QT_VERSION_FILE)) as f:
        check_version("query_tower", f.read().strip())
    embeddings = np.load(os.path.join(path, "item_embeddings.npy"), mmap_mode="r")
    n, dim = manifest["item_count"], manifest["embedding_dim"]
    if embeddings.shape != (n, dim):
        raise BundleError(
            f"bundle {path}: part 'item_embeddings.npy' has shape {embeddings.shape}, manifest ({n}, {dim})"
        )
    if len(ids_doc["ids"]) != n:
        raise BundleError(f"bundle {path}: part 'item_ids.json' has {len(ids_doc['ids'])} ids, manifest {n}")

    index = None
    if load_index:
        index = ScannIndex.load(os.path.join(path, "scann"))
        check_version("scann", index.version)
        if len(index) != n or index.dim != dim:
            raise BundleError(f"bundle {path}: part 'scann' indexes {len(index)} x {index.dim}, manifest {n} x {dim}")
        if index.ids.tolist() != ids_doc["ids"]:
            raise BundleError(f"bundle {path}: part 'scann' maps rows to different item ids than item_ids.json")
    ranker = None
    if load_ranker:
        for name in ("ranker.onnx", "ranker.int8.onnx"):
            if name not in manifest["files"]:
                continue
            candidate = OnnxRanker(os.path.join(path, name))
            check_version(name, candidate.metadata.get("bundle_version"))
            schema = candidate.metadata.get("feature_schema_hash")
            if schema != manifest["feature_schema_hash"]:
                raise BundleError(
                    f"bundle {path}: part {name!r} expects feature schema {schema!r}, "
                    f"manifest {manifest['feature_schema_hash']!r}"
                )
            if name == manifest.get("serving_ranker", "ranker.onnx"):
                ranker = candidate
    if expected_schema_hash is not None and manifest["feature_schema_hash"] != expected_schema_hash:
        raise BundleError(
            f"bundle {path}: feature schema {manifest['feature_schema_hash']!r} != serving's {expected_schema_hash!r}"
        )
    return LoadedBundle(path, version, manifest, ids_doc["ids"], np.asarray(embeddings), metrics, index, ranker)
