"""serving/kernels.py: the compiled id mapping agrees with a dict on any ids, refuses a table it cannot
index, checks bounds, and warm() compiles every type the request path passes (no request compiles).
blend_rows is pinned by tests/serving/test_blend.py (against the first, pure-Python blend)."""

from __future__ import annotations

import numpy as np
import pytest

from serving import kernels
from serving.rerank import EpisodeTable, _ByteKeys


def _ids(rng: np.random.Generator, n: int) -> list[str]:
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789_.:-") + ["é", "ß", "漢"]  # multi-byte UTF-8 too
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(alphabet, int(rng.integers(1, 22)))))
    return sorted(out)


@pytest.mark.parametrize("seed", range(8))
def test_byte_ids_map_like_a_dict_whatever_their_widths(seed: int) -> None:
    rng = np.random.default_rng(seed)
    table_ids = _ids(rng, int(rng.integers(1, 3000)))
    index = {e: i for i, e in enumerate(table_ids)}
    keys = _ByteKeys(table_ids)
    assert keys.ok
    strangers = [e + "x" for e in table_ids[:20]] + [e[:-1] for e in table_ids[:20] if len(e) > 1] + ["zz" * 30]
    query = list(rng.choice(table_ids + strangers, 600))
    for width in (None, 64):  # the ids' own width, and padded wider than the table's
        column = np.array([q.encode() for q in query], dtype=f"S{width}" if width else np.bytes_)
        got = keys.rows(column, len(table_ids))
        assert got.tolist() == [index.get(q, len(table_ids)) for q in query]


def test_a_read_only_cell_maps_like_a_writable_one() -> None:
    table = EpisodeTable(["s1e1", "s1e2", "s2e1"], ["s1", "s1", "s2"], [1, 2, 1], [(), (), ()])
    column = np.array([b"s2e1", b"nope", b"s1e1"])
    cell = np.frombuffer(column.tobytes(), dtype=column.dtype)  # as serving/candidates.py parses a cell
    assert not cell.flags.writeable
    assert table.rows(cell).tolist() == table.rows(column).tolist() == [2, 3, 0]


def test_a_table_with_a_repeated_id_is_refused_and_the_dict_path_maps_instead() -> None:
    assert not _ByteKeys(["a", "b", "a"]).ok
    table = EpisodeTable(["a", "b", "a"], ["s", "s", "s"], [1, 2, 3], [(), (), ()])
    assert table.rows(np.array([b"b", b"c"])).tolist() == [1, 3]


def test_bounds_are_checked() -> None:
    rows = np.array([0, 7], dtype=np.intp)  # 7 is outside a universe of size 3
    with pytest.raises(IndexError):
        kernels.blend_rows(rows, np.array([0, 2], dtype=np.intp), np.ones(1), rows, np.zeros(2), 2, 3)


def test_warm_compiles_every_type_the_request_path_passes() -> None:
    from serving.blend import blend
    from serving.candidates import encode_list, parse

    kernels.warm()
    compiled = {
        k: len(getattr(kernels, k).signatures)
        for k in ("build_slots", "byte_key_rows", "blend_rows", "pick_rows", "gather_candidates")
    }
    ids = [f"s{i // 10:03d}e{i % 10:03d}" for i in range(200)]
    table = EpisodeTable(ids, [e[:4] for e in ids], [1] * len(ids), [()] * len(ids))
    cell = parse(encode_list("v1", 0, [(e, 1.0 - i / 200) for i, e in enumerate(ids[::-1])]))  # read-only arrays
    pool = blend(
        {"two_tower": cell.head(150), "continue_watching": [(ids[3], 5.0)], "trending": [(ids[9], 2.0), ("x", 1.0)]},
        {"two_tower": 0.8, "continue_watching": 0.1, "trending": 0.1},
        100,
        index=table,
    )
    assert len(pool) == 100 and pool.unknown == 1
    from serving.rerank import rank_order
    from serving.rules import apply_rules_rows
    from tests.factories import catalog

    cat_table = EpisodeTable.from_catalog(catalog())
    cat_pool = blend({"two_tower": [(e, 1.0) for e in cat_table.episode_ids]}, {"two_tower": 1.0}, 10, index=cat_table)
    for order, scores in (
        rank_order(cat_pool, np.linspace(0, 1, len(cat_pool))),
        (np.arange(len(cat_pool)), cat_pool.retrieval_scores),
    ):
        picks = apply_rules_rows(
            cat_pool.rows, order, scores, cat_pool.source_codes, cat_pool.names, table=cat_table, country="US",
            now_ms=1, completed={"s0001e001"}, n=2, max_per_series=2, entry_points={"s0002": {"episode_number": 2}},
        )  # fmt: skip
        assert [p.episode_id for p in picks] in (["s0002e002", "s0001e002"], ["s0001e002", "s0002e002"])
    from serving.rerank import feature_matrix
    from serving.shared import ItemStats

    store = ItemStats()
    store.update(cat_table.episode_ids[:3], np.ones((3, 3), np.float32))
    stat_rows = store.rows_of(cat_table)[cat_pool.rows]
    for kwargs in ({"item_stats": store.table, "stat_rows": stat_rows}, {"item_stats": store.table[stat_rows]}):
        X = feature_matrix(cat_pool, user_u={}, user_cw={"s0001": {"episode_number": 1}}, episodes=cat_table, **kwargs)
        assert X.shape == (len(cat_pool), 12)
    assert {k: len(getattr(kernels, k).signatures) for k in compiled} == compiled
