"""Rerank features through the trainer's mapping (models.ranker_features, MICRODRAMA_FEATURES): column
order, values, defaults, parity with `ranker_matrix`; ranking and its failure modes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.ranker import RankerFeatures
from models.ranker_features import ITEM_COLUMNS, MICRODRAMA_FEATURES, ranker_matrix
from models.ranker_features import Candidate as RankerCandidate
from serving.blend import Candidate, Pool
from serving.rerank import (
    SERVING_SPEC,
    EpisodeTable,
    RankerSpecError,
    check_spec,
    feature_matrix,
    rank,
    retrieval_order,
)
from serving.shared import ItemStats
from tests.factories import catalog

POOL = Pool.of(
    [
        Candidate("s0001e002", "two_tower", 0.9),
        Candidate("s0002e001", "trending", 0.1),
        Candidate("unknown-ep", "two_tower", 0.5),
    ]
)
COL = {name: j for j, name in enumerate(SERVING_SPEC.columns)}


def _stats(rows: dict[str, dict], ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    store = ItemStats()
    store.update(list(rows), np.asarray([[float(r.get(c, 0.0)) for c in ITEM_COLUMNS] for r in rows.values()]))
    return store.lookup(ids)


def test_serving_builds_the_trainers_spec() -> None:
    assert SERVING_SPEC == MICRODRAMA_FEATURES  # bundles from pipelines/train.py carry its schema hash


def test_feature_matrix_follows_the_spec() -> None:
    stats, known = _stats(
        {"s0001e002": {"plays_24h": 99, "completion_rate_24h": 0.5, "trending": 3.0}}, POOL.episode_ids
    )
    assert known.tolist() == [True, False, False]
    X = feature_matrix(
        POOL,
        user_u={"completion_rate_7d": 0.25, "binge_depth": 2, "genre_mix_30m": {"thriller": 1.0}},
        user_cw={"s0001": {"episode_number": 1, "completed": True}},
        episodes=EpisodeTable.from_catalog(catalog()),
        item_stats=stats,
    )
    assert X.shape == (3, SERVING_SPEC.n_features) and X.dtype == np.float32
    col = {name: X[:, j] for name, j in COL.items()}
    np.testing.assert_allclose(col["user_completion_rate_7d"], 0.25)
    np.testing.assert_allclose(col["user_log_binge_depth"], math.log1p(2), rtol=1e-6)
    np.testing.assert_allclose(col["item_log_plays_24h"], [math.log(100), 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(col["item_completion_rate_24h"], [0.5, 0.0, 0.0])  # no item row -> zeros
    np.testing.assert_allclose(col["item_log_trending"], [math.log1p(3.0), 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(col["item_log_episode_number"], [math.log1p(2), math.log1p(1), 0.0], rtol=1e-6)
    np.testing.assert_allclose(col["retrieval_score"], [0.9, 0.1, 0.5])
    np.testing.assert_array_equal(col["user_genre_affinity"], [0.0, 1.0, 0.0])  # s0002 is thriller only
    np.testing.assert_array_equal(col["ctx_same_series"], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(col["ctx_is_next_episode"], [1.0, 0.0, 0.0])  # finished e001 -> e002 next


def test_serving_matrix_equals_the_training_mapping() -> None:
    """Training/serving parity: the trainer's ranker_matrix on Candidate objects built from the same
    catalog and item rows gives the identical matrix."""
    cat = catalog()
    rng = np.random.default_rng(5)
    ids = [e.episode_id for e in cat.episodes()]
    pool = Pool.of([Candidate(ids[i], "two_tower", float(rng.normal())) for i in rng.integers(0, len(ids), 300)])
    rows = {
        e: {"plays_24h": float(rng.integers(0, 999)), "completion_rate_24h": float(rng.random()), "trending": 2.5}
        for e in ids[::2]
    }
    user_u = {
        "completion_rate_7d": 0.4,
        "skip_rate_7d": 0.3,
        "hover_skip_rate_7d": 0.2,
        "binge_depth": 4,
        "genre_mix_30m": {"romance": 0.7, "thriller": 0.3},
    }
    user_cw = {
        "s0002": {"episode_number": 3, "completed": False},
        "s0001": {"episode_number": 4, "completed": True},
        "s9999": {"episode_number": 1, "completed": False},  # a series the catalog no longer has
        "s0003": {},  # an empty state counts as none
    }
    stats, _ = _stats(rows, pool.episode_ids)
    got = feature_matrix(
        pool, user_u=user_u, user_cw=user_cw, episodes=EpisodeTable.from_catalog(cat), item_stats=stats
    )
    cands = []
    for eid, score in zip(pool.episode_ids, pool.retrieval_scores, strict=True):
        ep = cat.episode(eid)
        cands.append(
            RankerCandidate(eid, ep.series_id, ep.episode_number, cat.genres(ep.series_id), score, rows.get(eid))
        )
    np.testing.assert_array_equal(got, ranker_matrix(user_u, user_cw, cands))


def test_new_user_gets_zero_user_columns() -> None:
    stats, _ = _stats({}, POOL.episode_ids[:1])
    X = feature_matrix(
        Pool.of(POOL[:1]), user_u=None, user_cw=None, episodes=EpisodeTable.from_catalog(catalog()), item_stats=stats
    )
    assert X[0, COL["user_completion_rate_7d"]] == 0.0 and X[0, COL["ctx_same_series"]] == 0.0


def test_spec_with_a_column_serving_cannot_build_is_refused() -> None:
    check_spec(SERVING_SPEC)
    with pytest.raises(RankerSpecError, match="watch_time_30d"):
        check_spec(RankerFeatures(columns=("retrieval_score", "watch_time_30d")))


def test_item_stats_grow_update_and_mark_unknowns() -> None:
    store = ItemStats()
    store.update(["a", "b"], np.array([[1, 2, 3], [4, 5, 6]], np.float32))
    store.update(["b", "c"], np.array([[7, 8, 9], [0, 0, 1]], np.float32))
    stats, known = store.lookup(["c", "x", "b", "a"])
    assert known.tolist() == [True, False, True, True] and len(store) == 3
    np.testing.assert_array_equal(stats, [[0, 0, 1], [0, 0, 0], [7, 8, 9], [1, 2, 3]])


def test_rank_orders_by_score_and_keeps_pool_order_on_ties() -> None:
    got = list(rank(POOL, np.array([0.2, 0.7, 0.2], np.float32)))
    assert [r.episode_id for r in got] == ["s0002e001", "s0001e002", "unknown-ep"]
    assert got[0].reason == "trending"


@pytest.mark.parametrize("take", [0, 1, 31, 32, 33, 64, 100, 500])
def test_rank_across_conversion_chunks_equals_a_full_stable_sort(take: int) -> None:
    """rank() turns candidates into Python values a chunk at a time; any prefix the rules take, across
    chunk boundaries and with many tied scores, is the prefix of a full stable sort."""
    import itertools

    rng = np.random.default_rng(take)
    ids = [f"e{i}" for i in range(500)]
    sources = ("two_tower", "trending", "continue_watching")
    pool = Pool.of([Candidate(e, sources[i % 3], float(i)) for i, e in enumerate(ids)])
    scores = rng.integers(0, 40, 500).astype(np.float32) / 40  # ~12 candidates share each score
    order = sorted(range(500), key=lambda i: -scores[i])  # Python's sort is stable
    want = [(ids[i], float(scores[i]), sources[i % 3]) for i in order][:take]
    got = list(itertools.islice(rank(pool, scores), take))
    assert [tuple(r) for r in got] == want
    assert [tuple(r) for r in retrieval_order(pool)][:take] == [
        (e, float(i), sources[i % 3]) for i, e in enumerate(ids)
    ][:take]


def test_rank_refuses_bad_scores_so_the_caller_falls_back() -> None:
    with pytest.raises(ValueError):
        rank(POOL, np.array([0.1, np.nan, 0.3], np.float32))
    with pytest.raises(ValueError):
        rank(POOL, np.array([0.1], np.float32))
    assert [r.episode_id for r in retrieval_order(POOL)] == POOL.episode_ids


def test_500_candidates_build_fast() -> None:
    import time

    cat = catalog()
    table = EpisodeTable.from_catalog(cat)
    pool = Pool.of([Candidate(f"s0001e00{i % 5 + 1}", "two_tower", float(i)) for i in range(500)])
    rows = {e.episode_id: {"plays_24h": 10.0, "completion_rate_24h": 0.3, "trending": 1.0} for e in cat.episodes()}
    store = ItemStats()
    store.update(list(rows), np.asarray([[r[c] for c in ITEM_COLUMNS] for r in rows.values()], np.float32))
    cw = {"s0001": {"episode_number": 2, "completed": True}}
    start = time.perf_counter()
    for _ in range(20):
        stats, _ = store.lookup(pool.episode_ids)
        X = feature_matrix(pool, user_u={}, user_cw=cw, episodes=table, item_stats=stats)
    per_call_ms = (time.perf_counter() - start) * 1000 / 20
    assert X.shape == (500, SERVING_SPEC.n_features)
    assert per_call_ms < 20, per_call_ms  # ~0.2 ms here; generous bound for a loaded 2-core machine


def test_item_rows_by_table_equal_the_lookup_by_id_and_follow_new_episodes() -> None:
    from serving.shared import SharedRows

    table = EpisodeTable.from_catalog(catalog())
    shared = SharedRows.__new__(SharedRows)  # only the item store and tracking are exercised here
    shared._items, shared._fetched, shared._wake = ItemStats(), {}, type("W", (), {"set": lambda self: None})()
    ids = ["s0001e002", "s0002e001", "unknown-ep", "s0001e001"]
    shared._items.update(["s0001e002"], np.array([[1, 2, 3]], np.float32))
    rows = table.rows(ids)
    stat_rows, store = shared.item_rows_by_table(table, rows)
    stats, known = store[stat_rows], stat_rows > 0
    want_stats, want_known = shared._items.lookup(ids)
    np.testing.assert_array_equal(stats, want_stats)
    assert known.tolist() == want_known.tolist() == [True, False, False, False]
    from transforms import rowkeys

    unknown = {rowkeys.episode_key(e) for e in ("s0002e001", "s0001e001")}
    assert set(shared._fetched) == unknown  # unread catalog episodes are tracked; "unknown-ep" is no episode
    shared._items.update(["s0002e001"], np.array([[4, 5, 6]], np.float32))  # a new episode: the mapping follows
    stat_rows, store = shared.item_rows_by_table(table, rows)
    stats, known = store[stat_rows], stat_rows > 0
    assert known.tolist() == [True, True, False, False]
    np.testing.assert_array_equal(stats[1], [4, 5, 6])


def test_byte_ids_map_to_the_same_rows_as_str_ids() -> None:
    cat = catalog()
    table = EpisodeTable.from_catalog(cat)
    rng = np.random.default_rng(3)
    ids = [table.episode_ids[i] for i in rng.integers(0, len(table.episode_ids), 200)]
    ids += ["", "nope", table.episode_ids[0] + "x", table.episode_ids[0][:-1], "s" * 64]  # unknown look-alikes
    column = np.array([e.encode() for e in ids], dtype=np.bytes_)
    want = table.rows(ids)
    assert table.rows(column).tolist() == want.tolist()
    assert (want[-5:] == table.unknown).all()
    table._byte_keys.ok = False  # e.g. a key collision inside the catalog: the decoding path, same rows
    assert table.rows(column).tolist() == want.tolist()
