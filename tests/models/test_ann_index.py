"""ScaNN index: gate, save -> load -> compare, brute-force path, drift report."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from benchmarks.scann_vs_bruteforce import clustered_embeddings
from models.ann_index import (
    IndexConfig,
    IndexGateError,
    ScannIndex,
    build_index,
    check_recall_gate,
    config_for_size,
    drift_report,
    exact_top_k,
    recall_at_k_vs_bruteforce,
)

N_ITEMS, DIM = 30_000, 16


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    items, queries = clustered_embeddings(N_ITEMS, DIM, 200, num_clusters=200, seed=3)
    return items, np.array([f"item-{i}" for i in range(N_ITEMS)]), queries


@pytest.fixture(scope="module")
def tree_index(data) -> ScannIndex:
    items, ids, _ = data
    return build_index(items, ids, version="v-test")


def test_config_is_chosen_by_catalogue_size() -> None:
    assert config_for_size(3_327, 64).kind == "brute_force"  # kuairec-sized: exact
    big = config_for_size(1_000_000, 64)
    assert (big.kind, big.num_leaves, big.num_leaves_to_search) == ("tree_ah", 1000, 100)
    with pytest.raises(ValueError):
        IndexConfig(kind="tree_ah", num_leaves=10, num_leaves_to_search=11)


def test_exact_top_k_arithmetic() -> None:
    items = np.array([[1, 0], [0, 1], [2, 2], [-1, 0]], dtype=np.float32)
    # q = [1, 0.5]: scores 1, 0.5, 3, -1 -> rows 2, 0, 1
    rows, scores = exact_top_k(items, np.array([[1, 0.5]], dtype=np.float32), 3)
    assert rows.tolist() == [[2, 0, 1]]
    np.testing.assert_allclose(scores, [[3, 1, 0.5]])


def test_tree_index_passes_gate_and_returns_ids_with_exact_scores(tree_index, data) -> None:
    items, ids, queries = data
    assert tree_index.config.kind == "tree_ah"
    recall = check_recall_gate(tree_index, items, queries, k=10)
    assert recall >= 0.95
    found, scores = tree_index.search(queries[:5], k=10)
    assert found.shape == (5, 10) and found[0, 0].startswith("item-")
    rows = np.array([[int(s.split("-")[1]) for s in row] for row in found])
    # the float reorder makes returned scores the exact dot products, sorted best first
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries[:5], items[rows]), rtol=1e-4, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    one_ids, one_scores = tree_index.search_one(queries[0], k=10)
    assert one_ids.tolist() == found[0].tolist()


def test_save_move_load_gives_same_neighbours(tree_index, data, tmp_path) -> None:
    _, _, queries = data
    saved = tree_index.save(str(tmp_path / "scann"))
    moved = str(tmp_path / "elsewhere")
    shutil.move(saved, moved)  # bundles are staged then renamed: asset paths must be relative
    loaded = ScannIndex.load(moved)
    assert (len(loaded), loaded.dim, loaded.version, loaded.config) == (N_ITEMS, DIM, "v-test", tree_index.config)
    before_ids, before_scores = tree_index.search(queries, k=10)
    after_ids, after_scores = loaded.search(queries, k=10)
    assert (before_ids == after_ids).all()
    np.testing.assert_allclose(before_scores, after_scores, rtol=1e-6)


def test_load_refuses_a_directory_without_index(tmp_path) -> None:
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not a saved ScannIndex"):
        ScannIndex.load(str(tmp_path / "empty"))


def test_bad_config_fails_the_gate(data) -> None:
    items, ids, queries = data
    starved = IndexConfig(kind="tree_ah", num_leaves=300, num_leaves_to_search=1, reorder_k=10)
    index = build_index(items, ids, starved)
    with pytest.raises(IndexGateError, match="recall@10"):
        check_recall_gate(index, items, queries, k=10)


def test_tiny_catalogue_uses_exact_search(data) -> None:
    items, ids, queries = data
    index = build_index(items[:500], ids[:500])
    assert index.config.kind == "brute_force"
    assert recall_at_k_vs_bruteforce(index, items[:500], queries, k=10) == 1.0


def test_drift_report_detects_perturbation() -> None:
    items, _ = clustered_embeddings(2_000, 16, 1, num_clusters=50, seed=5)
    ids = list(range(2_000))
    rng = np.random.default_rng(0)
    # same vectors, rows shuffled and listed under the same ids: neighbourhoods identical
    perm = rng.permutation(2_000)
    same = drift_report(items, ids, items[perm], [ids[i] for i in perm], k=10)
    assert same["mean_jaccard"] == pytest.approx(1.0) and same["shared_items"] == 2_000
    # a small perturbation keeps most neighbours; items 0-9 replaced by noise lose theirs
    nudged = items + rng.normal(0, 0.01, items.shape).astype(np.float32)
    nudged[:10] = rng.normal(0, 1, (10, 16))
    report = drift_report(items, ids, nudged, ids, k=10, worst=10)
    assert 0.5 < report["mean_overlap"] < 1.0
    assert {w["item"] for w in report["worst_items"]} == set(range(10))
    assert all(w["jaccard"] < 0.2 for w in report["worst_items"])
    # unrelated embeddings share almost no neighbours; added/removed items are counted
    other = drift_report(items, ids, rng.normal(0, 1, (2_100, 16)), list(range(100, 2_200)), k=10)
    assert other["mean_jaccard"] < 0.1
    assert (other["shared_items"], other["added_items"], other["removed_items"]) == (1_900, 200, 100)
