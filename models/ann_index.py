"""The ScaNN item index: built offline over the item embeddings, gated on recall, loaded by serving.

The index is an offline artifact (STYLE.md): `build_index` runs in the training job, `ScannIndex.save`
writes it into the model bundle, and serving only ever calls `ScannIndex.load`. Similarity is the dot
product, the score the two-tower model is trained on.

Configuration is chosen by catalogue size (`config_for_size`): below `BRUTE_FORCE_MAX_ITEMS` the
k-means tree cannot be trained sensibly (too few points per leaf) and exact search is cheap anyway, so
the searcher is ScaNN's exact brute force; above it, tree partitioning + asymmetric hashing (AH) +
exact float reordering. Either way the artifact is a ScaNN searcher, so save/load is one code path.

Seeds: ScaNN exposes `clustering_seed` / `sampling_seed` only in its text config, so they are spliced
into the builder's config. Measured here with scann 1.4.2, builds are still not bit-reproducible
(multi-threaded k-means), which is why tests compare save -> load of one searcher, not two builds.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # `import scann` imports TensorFlow when it is installed
from scann.scann_ops.py import scann_ops_pybind  # noqa: E402

BRUTE_FORCE_MAX_ITEMS = 20_000
DEFAULT_MIN_RECALL = 0.95
_META_FILE = "cliffhanger_index.json"


class IndexGateError(RuntimeError):
    """The index missed its recall gate; it must not be published."""


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """How the ScaNN searcher is built. `kind` is "brute_force" or "tree_ah"."""

    kind: str = "tree_ah"
    num_leaves: int = 0
    num_leaves_to_search: int = 0
    dims_per_block: int = 2
    anisotropic_threshold: float = 0.2
    reorder_k: int = 100
    training_sample_size: int = 100_000
    num_neighbors: int = 10
    seed: int = 42

    def __post_init__(self) -> None:
        if self.kind not in ("brute_force", "tree_ah"):
            raise ValueError(f"unknown index kind {self.kind!r}")
        if self.kind == "tree_ah" and not 0 < self.num_leaves_to_search <= self.num_leaves:
            raise ValueError(f"need 0 < num_leaves_to_search <= num_leaves, got {self}")


def config_for_size(num_items: int, dim: int) -> IndexConfig:
    """Default config for a catalogue of `num_items` x `dim` embeddings.

    ~sqrt(n) leaves, searching 10% of them, AH with 2 dims per block and a float reorder of the top 100.
    Measured on the 100k x 64 gaussian-mixture benchmark: searching 4% of leaves gave recall@10 0.91,
    6% 0.975, 10% 0.993, so 10% leaves headroom over the 0.95 gate; at 1M x 64 this is the benchmark's config.
    """
    if num_items < BRUTE_FORCE_MAX_ITEMS:
        return IndexConfig(kind="brute_force")
    num_leaves = int(min(max(np.sqrt(num_items), 100), 4000))
    return IndexConfig(
        kind="tree_ah",
        num_leaves=num_leaves,
        num_leaves_to_search=max(8, num_leaves // 10),
        dims_per_block=2,
        reorder_k=100,
        training_sample_size=min(num_items, 250_000),
    )


def _scann_config_text(embeddings: np.ndarray, config: IndexConfig) -> str:
    builder = scann_ops_pybind.builder(embeddings, config.num_neighbors, "dot_product")
    if config.kind == "brute_force":
        return builder.score_brute_force().create_config()
    builder = (
        builder.tree(
            num_leaves=config.num_leaves,
            num_leaves_to_search=config.num_leaves_to_search,
            training_sample_size=config.training_sample_size,
        )
        .score_ah(
            config.dims_per_block,
            anisotropic_quantization_threshold=config.anisotropic_threshold,
            training_sample_size=config.training_sample_size,
        )
        .reorder(config.reorder_k)
    )
    text = builder.create_config()
    seed = int(config.seed)
    text = text.replace("partitioning {", f"partitioning {{\n clustering_seed: {seed}", 1)
    return text.replace("asymmetric_hash {", f"asymmetric_hash {{\n clustering_seed: {seed}\n sampling_seed: {seed}", 1)


class ScannIndex:
    """A ScaNN searcher plus the item ids its rows stand for (row i of the embeddings is ids[i])."""

    def __init__(self, searcher: Any, ids: Sequence[Any], config: IndexConfig, dim: int, version: str = "") -> None:
        if searcher.size() != len(ids):
            raise ValueError(f"searcher holds {searcher.size()} points but {len(ids)} ids were given")
        self.searcher = searcher
        self.ids = np.asarray(list(ids))
        self.config = config
        self.dim = int(dim)
        self.version = version

    def __len__(self) -> int:
        return int(self.searcher.size())

    def search_positions(self, query_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """query_embeddings: [q, d] -> (row positions [q, k] int, dot-product scores [q, k] float32)."""
        queries = np.ascontiguousarray(query_embeddings, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be [q, {self.dim}], got {queries.shape}")
        k = min(int(k), len(self))
        pre = max(self.config.reorder_k, k) if self.config.kind == "tree_ah" else None
        positions, scores = self.searcher.search_batched(queries, final_num_neighbors=k, pre_reorder_num_neighbors=pre)
        return np.asarray(positions, dtype=np.int64), np.asarray(scores, dtype=np.float32)

    def search(self, query_embeddings: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """query_embeddings: [q, d] -> (item ids [q, k], dot-product scores [q, k]), best first."""
        positions, scores = self.search_positions(query_embeddings, k)
        return self.ids[positions], scores

    def search_one(self, query_embedding: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Single-query path (what serving does per request): query_embedding [d] -> (ids [k], scores [k])."""
        query = np.ascontiguousarray(query_embedding, dtype=np.float32).reshape(-1)
        pre = max(self.config.reorder_k, k) if self.config.kind == "tree_ah" else -1
        positions, scores = self.searcher.search(query, final_num_neighbors=k, pre_reorder_num_neighbors=pre)
        return self.ids[np.asarray(positions, dtype=np.int64)], np.asarray(scores, dtype=np.float32)

    def save(self, directory: str) -> str:
        """Serialize the searcher (relative asset paths, so the directory can be moved) and the ids."""
        os.makedirs(directory, exist_ok=True)
        self.searcher.serialize(directory, relative_path=True)
        meta = {
            "version": self.version,
            "size": len(self),
            "dim": self.dim,
            "config": dataclasses.asdict(self.config),
            "ids": self.ids.tolist(),
        }
        with open(os.path.join(directory, _META_FILE), "w") as f:
            json.dump(meta, f)
        return directory

    @classmethod
    def load(cls, directory: str) -> ScannIndex:
        meta_path = os.path.join(directory, _META_FILE)
        if not os.path.isfile(meta_path):
            raise FileNotFoundError(f"{directory} is not a saved ScannIndex (no {_META_FILE})")
        with open(meta_path) as f:
            meta = json.load(f)
        searcher = scann_ops_pybind.load_searcher(directory)
        return cls(searcher, meta["ids"], IndexConfig(**meta["config"]), meta["dim"], meta.get("version", ""))


def build_index(
    embeddings: np.ndarray, ids: Sequence[Any], config: IndexConfig | None = None, version: str = ""
) -> ScannIndex:
    """embeddings: [n, d] float32, ids: n item ids -> ScannIndex (config from `config_for_size` if None)."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(ids) != embeddings.shape[0]:
        raise ValueError(f"need embeddings [n, d] and n ids, got {embeddings.shape} and {len(ids)} ids")
    config = config or config_for_size(*embeddings.shape)
    searcher = scann_ops_pybind.create_searcher(embeddings, _scann_config_text(embeddings, config), 0)
    return ScannIndex(searcher, ids, config, embeddings.shape[1], version)


def exact_top_k(
    embeddings: np.ndarray, queries: np.ndarray, k: int, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Exact dot-product top-k by batched matmul + argpartition: queries [q, d] -> (rows [q, k], scores [q, k])."""
    k = min(k, embeddings.shape[0])
    out_rows = np.empty((queries.shape[0], k), dtype=np.int64)
    out_scores = np.empty((queries.shape[0], k), dtype=np.float32)
    for start in range(0, queries.shape[0], batch_size):
        scores = queries[start : start + batch_size] @ embeddings.T  # [b, n]
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1)
        out_rows[start : start + batch_size] = np.take_along_axis(part, order, axis=1)
        out_scores[start : start + batch_size] = np.take_along_axis(part_scores, order, axis=1)
    return out_rows, out_scores


def recall_at_k_vs_bruteforce(index: ScannIndex, embeddings: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    """Mean |approx top-k ∩ exact top-k| / k over queries [q, d]; embeddings [n, d] are the indexed rows."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    exact, _ = exact_top_k(np.asarray(embeddings, dtype=np.float32), queries, k)
    approx, _ = index.search_positions(queries, k)
    hits = [len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(hits) / k)


def check_recall_gate(
    index: ScannIndex, embeddings: np.ndarray, queries: np.ndarray, k: int = 10, min_recall: float = DEFAULT_MIN_RECALL
) -> float:
    """Measure recall@k vs brute force; raise IndexGateError below `min_recall`, else return it."""
    recall = recall_at_k_vs_bruteforce(index, embeddings, queries, k)
    if recall < min_recall:
        raise IndexGateError(
            f"ScaNN recall@{k} vs brute force is {recall:.4f} < {min_recall} with {index.config}; not publishing"
        )
    return recall


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _neighbour_sets(emb: np.ndarray, anchors: np.ndarray, k: int) -> np.ndarray:
    """Top-k cosine neighbours (rows) of emb[anchors] within emb, excluding the anchor itself: [a, k]."""
    unit = _normalize(emb.astype(np.float32))
    rows, _ = exact_top_k(unit, unit[anchors], k + 1)
    out = np.empty((len(anchors), k), dtype=np.int64)
    for i, (anchor, row) in enumerate(zip(anchors, rows, strict=True)):
        out[i] = [r for r in row if r != anchor][:k]
    return out


def drift_report(
    old_embeddings: np.ndarray,
    old_ids: Sequence[Any],
    new_embeddings: np.ndarray,
    new_ids: Sequence[Any],
    k: int = 10,
    max_anchors: int = 5_000,
    worst: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """How far item neighbourhoods moved between two embedding versions (reported, not gated).

    For items present in both versions, the top-k cosine neighbours (among shared items) of up to
    `max_anchors` sampled anchors are compared across versions. Returns mean Jaccard, mean overlap
    (|old ∩ new| / k), the number of shared / added / removed items, and the `worst` anchors.
    Embedding spaces of two trainings are not aligned, so this compares neighbour sets, never vectors.
    """
    old_pos = {item: i for i, item in enumerate(old_ids)}
    shared = [item for item in new_ids if item in old_pos]
    new_pos = {item: i for i, item in enumerate(new_ids)}
    report: dict[str, Any] = {
        "k": k,
        "shared_items": len(shared),
        "added_items": len(new_ids) - len(shared),
        "removed_items": len(old_ids) - len(shared),
    }
    if len(shared) <= k:
        report.update(anchors=0, mean_jaccard=float("nan"), mean_overlap=float("nan"), worst_items=[])
        return report
    old_sub = np.asarray(old_embeddings)[[old_pos[s] for s in shared]]
    new_sub = np.asarray(new_embeddings)[[new_pos[s] for s in shared]]
    rng = np.random.default_rng(seed)
    anchors = np.arange(len(shared))
    if len(shared) > max_anchors:
        anchors = np.sort(rng.choice(len(shared), max_anchors, replace=False))
    old_nn, new_nn = _neighbour_sets(old_sub, anchors, k), _neighbour_sets(new_sub, anchors, k)
    inter = np.array([len(set(a.tolist()) & set(b.tolist())) for a, b in zip(old_nn, new_nn, strict=True)])
    jaccard = inter / (2 * k - inter)
    order = np.argsort(jaccard, kind="stable")[:worst]
    report.update(
        anchors=len(anchors),
        mean_jaccard=float(jaccard.mean()),
        mean_overlap=float((inter / k).mean()),
        worst_items=[{"item": _jsonable(shared[anchors[i]]), "jaccard": float(jaccard[i])} for i in order],
    )
    return report


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
