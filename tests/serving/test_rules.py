"""Series rules: next episode first (licensed, released, not completed), no completed, k per series,
licensing by country, no duplicates, unknown episodes dropped."""

from __future__ import annotations

import copy

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
