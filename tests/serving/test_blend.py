"""Blending: ratios from config hold in the pool, short sources give their share away, no duplicates,
retrieval scores from the retrieval list (floor for others); continue-watching and trending entries."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from serving.blend import blend, continue_watching_items, trending_items
from serving.settings import ServingConfigError, parse_blend
from tests.factories import catalog


def items(prefix: str, n: int) -> list[tuple[str, float]]:
    return [(f"{prefix}{i}", float(n - i)) for i in range(n)]


def test_ratios_hold_in_the_pool_and_sources_interleave() -> None:
    pool = blend(
        {"two_tower": items("t", 100), "continue_watching": items("c", 100), "trending": items("r", 100)},
        {"two_tower": 0.6, "continue_watching": 0.2, "trending": 0.2},
        pool_size=50,
    )
    counts = Counter(c.source for c in pool)
    assert counts == {"two_tower": 30, "continue_watching": 10, "trending": 10}
    # smooth interleave: the first 5 slots already hold every source
    assert {c.source for c in pool[:5]} == {"two_tower", "continue_watching", "trending"}


def test_short_source_gives_its_share_to_the_others_and_duplicates_collapse() -> None:
    pool = blend(
        {"two_tower": items("t", 100), "continue_watching": [("t0", 9.0), ("c1", 8.0)], "trending": []},
        {"two_tower": 0.5, "continue_watching": 0.5, "trending": 0.0},
        pool_size=20,
    )
    ids = [c.episode_id for c in pool]
    assert len(ids) == len(set(ids)) == 20
    assert Counter(c.source for c in pool) == {"two_tower": 18, "continue_watching": 2}  # t0 is continue-watching


def test_retrieval_scores_and_floor() -> None:
    pool = blend(
        {"two_tower": [("a", 0.9), ("b", 0.4)], "trending": [("x", 100.0)]},
        {"two_tower": 0.5, "trending": 0.5},
        pool_size=10,
    )
    scores = {c.episode_id: c.retrieval_score for c in pool}
    assert scores == {"a": 0.9, "b": 0.4, "x": 0.4}


def test_pool_size_caps_and_empty_sources() -> None:
    assert len(blend({}, {"two_tower": 1.0}, 10)) == 0
    assert len(blend({"two_tower": items("t", 600)}, {"two_tower": 1.0}, 500)) == 500


def test_continue_watching_resumes_or_moves_on() -> None:
    cw = {
        "s0001": {"episode_id": "s0001e002", "completed": True, "updated_ms": 20},
        "s0002": {"episode_id": "s0002e004", "completed": False, "updated_ms": 30},
        "s0003": {"episode_id": "s0001e005", "completed": True, "updated_ms": 40},  # finished the series
    }
    assert continue_watching_items(cw, catalog()) == [("s0002e004", 30.0), ("s0001e003", 20.0)]


def test_trending_enters_where_the_user_is_or_at_episode_one() -> None:
    cw = {"s0002": {"episode_id": "s0002e003", "completed": True, "updated_ms": 1}}
    got = trending_items([["s0001", 5.0], ["s0002", 3.0], ["s9999", 1.0]], cw, catalog())
    assert got == [("s0001e001", 5.0), ("s0002e004", 3.0)]


def test_blend_config_parsing() -> None:
    assert parse_blend("two_tower=3,trending=1") == {"two_tower": 0.75, "trending": 0.25}
    with pytest.raises(ServingConfigError, match="unknown source 'tiktok'"):
        parse_blend("tiktok=1")
    with pytest.raises(ServingConfigError, match="sum to more than 0"):
        parse_blend("two_tower=0")


def _reference_blend(sources, ratios, pool_size, retrieval_source="two_tower"):
    """The first implementation (one Python step per candidate), kept as the specification."""
    retrieval: dict[str, float] = {}
    for eid, score in sources.get(retrieval_source, ()):
        retrieval.setdefault(eid, score)  # a repeated episode keeps its first (best) score
    floor = min((score for _, score in sources.get(retrieval_source, ())), default=0.0)
    names = sorted((n for n, it in sources.items() if it and ratios.get(n, 0.0) > 0), key=lambda n: len(sources[n]))
    left, ratio_left = pool_size, sum(ratios[n] for n in names)
    seen, keyed = set(), []
    for rank_, name in enumerate(names):
        quota = left if rank_ == len(names) - 1 else round(left * ratios[name] / ratio_left)
        taken = 0
        for eid, _ in sources[name]:
            if taken >= quota:
                break
            if eid in seen:
                continue
            seen.add(eid)
            keyed.append(((taken + 0.5) / ratios[name], rank_, eid, name))
            taken += 1
        left -= taken
        ratio_left -= ratios[name]
    keyed.sort()
    return [(k[2], k[3], retrieval.get(k[2], floor)) for k in keyed]


@pytest.mark.parametrize("seed", range(30))
def test_columnar_blend_matches_the_reference_on_overlaps_and_repeats(seed: int) -> None:
    import random

    from serving.candidates import CandidateList, encode_list, parse

    rng = random.Random(seed)
    universe = [f"e{i}" for i in range(rng.randint(5, 80))]

    def source(n: int, repeats: bool) -> list[tuple[str, float]]:
        ids = rng.choices(universe, k=n) if repeats else rng.sample(universe, min(n, len(universe)))
        return [(e, round(rng.random(), 4)) for e in ids]

    sources = {
        "two_tower": source(rng.randint(0, 60), repeats=seed % 5 == 0),
        "continue_watching": source(rng.randint(0, 6), repeats=True),
        "trending": source(rng.randint(0, 10), repeats=False),
    }
    ratios = {
        "two_tower": rng.choice([0.0, 0.5, 0.7, 1.0]),
        "continue_watching": 0.2,
        "trending": rng.choice([0.0, 0.3]),
    }
    pool_size = rng.randint(1, 70)
    want = _reference_blend(sources, ratios, pool_size)
    columns = dict(sources)
    ids, scores = [e for e, _ in sources["two_tower"]], [x for _, x in sources["two_tower"]]
    columns["two_tower"] = CandidateList("v", 0, ids, np.asarray(scores, np.float64))  # a JSON cell, parsed
    binary = dict(sources)
    binary["two_tower"] = parse(encode_list("v", 0, sources["two_tower"]))  # the binary cell, parsed
    for given in (sources, columns, binary):
        pool = blend(given, ratios, pool_size)
        assert [(c.episode_id, c.source, pytest.approx(c.retrieval_score)) for c in pool] == want


def test_with_the_catalog_table_unknown_ids_are_left_out_and_rows_are_the_tables() -> None:
    from serving.rerank import EpisodeTable

    table = EpisodeTable.from_catalog(catalog())
    known = [e for e in table.episode_ids[:12]]
    two_tower = [(known[0], 0.9), ("not-in-catalog", 0.8), (known[1], 0.7), (known[2], 0.6), (known[0], 0.5)]
    sources = {"two_tower": two_tower, "trending": [(known[5], 3.0), ("gone", 2.0), (known[1], 1.0)]}
    ratios = {"two_tower": 0.5, "trending": 0.5}
    pool = blend(sources, ratios, pool_size=10, index=table)
    assert pool.unknown == 2
    assert pool.rows.tolist() == table.rows(pool.episode_ids).tolist()  # rows of the catalog table itself
    assert pool.rows_in(table) is pool.rows
    # the same answer as blending the known ids alone (the catalog-free path is the specification)
    clean = {name: [(e, x) for e, x in items if e in table.index] for name, items in sources.items()}
    want = blend(clean, ratios, pool_size=10)
    assert list(pool) == list(want)
    assert dict((c.episode_id, c.retrieval_score) for c in pool)[known[5]] == 0.5  # floor: the list's minimum
    from serving.candidates import encode_list, parse

    binary = {**sources, "two_tower": parse(encode_list("v", 0, two_tower))}  # ids stay bytes until the table
    assert list(blend(binary, ratios, pool_size=10, index=table)) == list(pool)
