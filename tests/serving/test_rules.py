"""Series rules: next episode first (licensed, released, not completed), no completed, k per series,
licensing by country, no duplicates, unknown episodes dropped."""

from __future__ import annotations

import copy

import pytest

from cliffhanger.catalog import Catalog
from serving.rules import NEXT_EPISODE, Ranked, RuleStats, apply_rules, next_episode_to_watch
from tests.factories import CATALOG

NOW = 1_000_000


def catalog(**licensing) -> Catalog:
    doc = copy.deepcopy(CATALOG)
    for s in doc["series"]:
        if s["series_id"] in licensing:
            s["licensing"] = licensing[s["series_id"]]
    return Catalog.from_dict(doc)


def ranked(*ids: str) -> list[Ranked]:
    return [Ranked(e, 1.0 - i / 100, "two_tower") for i, e in enumerate(ids)]


def test_next_episode_pinned_first_then_ranked() -> None:
    cat = catalog()
    nxt = next_episode_to_watch(cat, "s0001e002", set(), "US", NOW)
    picks = apply_rules(
        ranked("s0002e001", "s0001e005"), catalog=cat, country="US", now_ms=NOW, completed=set(), n=3,
        max_per_series=2, next_episode=nxt,
    )  # fmt: skip
    assert [p.episode_id for p in picks] == ["s0001e003", "s0002e001", "s0001e005"]
    assert picks[0].reason == NEXT_EPISODE


def test_next_episode_not_licensed_in_country_is_not_pinned() -> None:
    cat = catalog(s0001={"BR": [0, None]})
    assert next_episode_to_watch(cat, "s0001e002", set(), "US", NOW) is None
    assert next_episode_to_watch(cat, "s0001e002", set(), "BR", NOW).episode_id == "s0001e003"


def test_next_episode_licence_window_is_half_open() -> None:
    cat = catalog(s0001={"US": [0, NOW]})
    assert next_episode_to_watch(cat, "s0001e002", set(), "US", NOW - 1) is not None
    assert next_episode_to_watch(cat, "s0001e002", set(), "US", NOW) is None


def test_completed_next_episode_skips_to_first_unwatched_and_none_after_last() -> None:
    cat = catalog()
    assert next_episode_to_watch(cat, "s0001e002", {"s0001e003", "s0001e004"}, "US", NOW).episode_id == "s0001e005"
    assert next_episode_to_watch(cat, "s0001e005", set(), "US", NOW) is None
    assert next_episode_to_watch(cat, "nope", set(), "US", NOW) is None


def test_completed_unlicensed_duplicates_unknown_and_series_cap_are_removed() -> None:
    cat = catalog(s0002={"BR": [0, None]})
    stats = RuleStats()
    picks = apply_rules(
        ranked("s0001e001", "s0001e001", "s0002e001", "zzz", "s0001e002", "s0001e003", "s0001e004"),
        catalog=cat, country="US", now_ms=NOW, completed={"s0001e002"}, n=10, max_per_series=2, stats=stats,
    )  # fmt: skip
    assert [p.episode_id for p in picks] == ["s0001e001", "s0001e003"]
    assert (stats.duplicate, stats.unlicensed, stats.unknown, stats.completed, stats.series_cap) == (1, 1, 1, 1, 1)


def test_next_episode_counts_toward_series_cap_and_is_not_repeated() -> None:
    cat = catalog()
    nxt = cat.episode("s0001e003")
    picks = apply_rules(
        ranked("s0001e003", "s0001e004", "s0001e005", "s0002e002"), catalog=cat, country="US", now_ms=NOW,
        completed=set(), n=10, max_per_series=2, next_episode=nxt,
    )  # fmt: skip
    assert [p.episode_id for p in picks] == ["s0001e003", "s0001e004", "s0002e002"]


def test_unreleased_episode_is_removed_and_n_is_respected() -> None:
    doc = copy.deepcopy(CATALOG)
    doc["series"][1]["episodes"][0]["release_time_ms"] = NOW + 1
    cat = Catalog.from_dict(doc)
    picks = apply_rules(
        ranked("s0002e001", "s0002e002", "s0001e001", "s0001e002"), catalog=cat, country="US", now_ms=NOW,
        completed=set(), n=2, max_per_series=5,
    )  # fmt: skip
    assert [p.episode_id for p in picks] == ["s0002e002", "s0001e001"]


def test_candidates_enter_a_series_at_its_start_or_where_the_user_is():
    from cliffhanger.catalog import Catalog
    from serving.rules import Ranked, apply_rules
    from tests.factories import CATALOG

    catalog = Catalog.from_dict(CATALOG)  # two series, episodes 1..5 each, licensed in US from 0
    cw = {"s0002": {"episode_number": 3, "completed": True}}
    ranked = [
        Ranked("s0001e004", 0.9, "two_tower"),
        Ranked("s0002e005", 0.8, "two_tower"),
        Ranked("s0001e002", 0.7, "two_tower"),
    ]
    picks = apply_rules(
        ranked,
        catalog=catalog,
        country="US",
        now_ms=10,
        completed={"s0001e001"},
        n=5,
        max_per_series=2,
        entry_points=cw,
    )
    # s0001 not started: the first episode not completed is e002 (e001 done); s0002: after completed e003 -> e004;
    # the third candidate maps to s0001e002 again: a duplicate, skipped
    assert [p.episode_id for p in picks] == ["s0001e002", "s0002e004"]
    assert [p.score for p in picks] == [0.9, 0.8]


def test_a_finished_series_offers_nothing():
    from cliffhanger.catalog import Catalog
    from serving.rules import Ranked, RuleStats, apply_rules
    from tests.factories import CATALOG

    catalog = Catalog.from_dict(CATALOG)
    done = {f"s0001e{n:03d}" for n in range(1, 6)}
    stats = RuleStats()
    picks = apply_rules(
        [Ranked("s0001e003", 1.0, "two_tower")],
        catalog=catalog,
        country="US",
        now_ms=10,
        completed=done,
        n=5,
        max_per_series=2,
        entry_points={},
        stats=stats,
    )
    assert picks == [] and stats.completed == 1


def _random_world(rng):
    """A catalog with licensing windows opening and closing around NOW and unreleased episodes."""

    def window():
        kind = rng.randrange(4)
        if kind == 0:
            return None
        start = rng.choice([0, NOW - 5, NOW, NOW + 5])
        return [start, None if kind == 1 else start + rng.choice([0, 1, 5, 10])]

    series = []
    for k in range(rng.randint(1, 7)):
        sid = f"s{k + 1:04d}"
        licensing = {c: w for c in ("US", "BR") if (w := window()) is not None}
        episodes = [
            {
                "episode_id": f"{sid}e{m:03d}",
                "episode_number": m,
                "duration_ms": 90_000,
                "release_time_ms": rng.choice([0, 0, 0, NOW, NOW + 1]),
            }
            for m in range(1, rng.randint(1, 8) + 1)
        ]
        series.append(
            {"series_id": sid, "title": sid, "genres": ["romance"], "cliffhanger_strength": 0.5,
             "licensing": licensing, "episodes": episodes}
        )  # fmt: skip
    return Catalog.from_dict({"catalog_version": 1, "series": series})


@pytest.mark.parametrize("seed", range(200))
def test_rules_over_rows_pick_exactly_what_apply_rules_picks(seed: int) -> None:
    """apply_rules_rows (the request path's compiled loop) against apply_rules, the specification: the
    same picks, scores, reasons and drop counts on random catalogs, users, pools and rankings."""
    import itertools
    import random

    import numpy as np

    from serving.blend import Candidate, Pool
    from serving.rerank import EpisodeTable, rank, rank_order
    from serving.rules import apply_rules_rows

    rng = random.Random(seed)
    cat = _random_world(rng)
    ids = [e.episode_id for e in cat.episodes()]
    some = lambda k: rng.sample(ids + ["gone-1", "gone-2"], min(k, len(ids) + 2))  # noqa: E731
    completed = set(rng.sample(ids, rng.randint(0, len(ids))))
    cw = {}
    watched = [*cat.series_ids(), "s0999"]
    for sid in rng.sample(watched, rng.randint(0, min(3, len(watched)))):
        cw[sid] = rng.choice([{}, {"episode_number": rng.randint(0, 9), "completed": rng.random() < 0.5}])
    sources = ("two_tower", "trending", "continue_watching")
    pool = Pool.of(
        [Candidate(e, rng.choice(sources), rng.random()) for e in rng.choices(ids + ["gone-3"], k=rng.randint(0, 40))]
    )
    scores = np.asarray([rng.choice([0.25, 0.5, 0.75, rng.random()]) for _ in range(len(pool))], np.float32)
    backfill = [Ranked(e, 0.0, "segment") for e in some(rng.randint(0, 6))]
    country = rng.choice(["US", "BR", "FR"])
    finished = rng.choice([None, *ids])
    nxt = next_episode_to_watch(cat, finished, completed, country, NOW)
    kwargs = dict(
        country=country, now_ms=NOW, completed=completed, n=rng.randint(0, 10), max_per_series=rng.randint(0, 3),
        next_episode=nxt, next_score=0.9, entry_points=cw,
    )  # fmt: skip
    want_stats, got_stats = RuleStats(), RuleStats()
    want = apply_rules(itertools.chain(rank(pool, scores), backfill), catalog=cat, stats=want_stats, **kwargs)
    table = EpisodeTable.from_catalog(cat)
    order, values = rank_order(pool, scores)
    got = apply_rules_rows(
        pool.rows_in(table), order, values, pool.source_codes, pool.names, table=table, stats=got_stats,
        backfill=iter(backfill), **kwargs,
    )  # fmt: skip
    assert got == want
    assert got_stats == want_stats


def test_licensing_per_country_follows_windows_opening_and_closing_over_time() -> None:
    """RuleRows caches a country's licensed series until the next window edge: asked along a timeline
    (one cache, times going back and forth), it agrees with Catalog.is_licensed at every instant."""
    from serving.rerank import EpisodeTable

    cat = catalog(s0001={"US": [100, 200]}, s0002={"US": [150, None], "BR": [0, 120]})
    rr = EpisodeTable.from_catalog(cat).rule_rows
    for t in [0, 99, 100, 120, 149, 150, 199, 200, 50, 10**15, 119, 120, 5]:
        for country in ("US", "BR", "FR"):
            want = [cat.is_licensed(sid, country, t) for sid in ("s0001", "s0002")]
            assert rr.licensed(country, t).tolist() == want, (t, country)
