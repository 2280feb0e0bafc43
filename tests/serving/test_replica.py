"""The edge replica (issue 5, section 3): an older version never overwrites a newer one whatever the
delivery order or duplication; notices are fetched; reconciliation against the Bigtable emulator heals
missed notices so the replica matches Bigtable; embeddings come from the loaded bundle."""

from __future__ import annotations

import asyncio
import random
import types

import numpy as np
import pytest

from cliffhanger.catalog import Catalog, Episode, Series
from cliffhanger.notices import ChangeNotice
from serving import candidates as cand_mod
from serving.feature_store import FeatureRow, FeatureStore
from serving.replica import EdgeReplica, ItemUpdate, hot_episodes, row_version
from transforms import rowkeys
from transforms.feature_rows import RowUpdate, _cells

EPISODES = [f"s1e{i:03d}" for i in range(1, 7)]


def _row(episode_id: str, version: int, plays: int) -> FeatureRow:
    values = {"i": {"plays_24h": plays, "trending": plays / 10, "as_of_ms": version}}
    return FeatureRow(rowkeys.episode_key(episode_id), values, {"i": {"plays_24h": version}})


class _Store:
    """read_direct over a dict of rows (the FeatureStore method the replica calls)."""

    def __init__(self, rows: dict[bytes, FeatureRow]) -> None:
        self.rows = rows

    def read_direct(self, keys, timeout_s, column_range=None):
        return {k: self.rows[k] for k in keys if k in self.rows}


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_and_duplicated_deliveries_end_at_the_newest(seed: int) -> None:
    rng = random.Random(seed)
    updates = [(e, v) for e in EPISODES[:3] for v in range(1000, 1010)]
    deliveries = updates + rng.choices(updates, k=40)  # at-least-once: every version, some many times
    rng.shuffle(deliveries)
    replica = EdgeReplica(_Store({}))
    applied: dict[str, list[int]] = {}
    for e, v in deliveries:
        source = _row(e, v, plays=v) if rng.random() < 0.5 else ItemUpdate(e, {"plays_24h": v, "as_of_ms": v})
        if replica.apply(source, None if isinstance(source, FeatureRow) else v):
            applied.setdefault(e, []).append(v)
        assert replica.entries[e].features["plays_24h"] == replica.version(e)  # never a mix of versions
    for e in EPISODES[:3]:
        assert replica.version(e) == 1009 and replica.entries[e].features["plays_24h"] == 1009
        assert applied[e] == sorted(set(applied[e]))  # what moved the replica moved it strictly forward


def test_equal_versions_only_from_reconcile_and_notices_are_fetched() -> None:
    rows = {rowkeys.episode_key("s1e001"): _row("s1e001", 2000, plays=7)}
    seen: list[tuple[str, object]] = []
    replica = EdgeReplica(_Store(rows), on_update=lambda e, f: seen.append((e, f["plays_24h"])))
    assert replica.apply(_row("s1e001", 2000, plays=5))
    assert not replica.apply(_row("s1e001", 2000, plays=6))  # a duplicate version from a notice path
    assert replica.apply(_row("s1e001", 2000, plays=7), authoritative=True)  # the store's truth (late events)
    assert not replica.apply(_row("s1e001", 1999, plays=1), authoritative=True)  # older: never
    assert replica.entries["s1e001"].features["plays_24h"] == 7

    notice = ChangeNotice("episode", "s1e002", "plays", 3000, 3000)
    assert replica.apply(notice) and replica.pending == {"s1e002": 3000}
    assert not replica.apply(notice)  # duplicate notice
    assert not replica.apply(ChangeNotice("episode", "s1e001", "plays", 1500, 1500))  # older than held
    assert not replica.apply(ChangeNotice("user", "u1", "x", 9, 9))  # not replica data
    rows[rowkeys.episode_key("s1e002")] = _row("s1e002", 3000, plays=11)
    assert asyncio.run(replica.fetch_pending()) == 1
    assert replica.version("s1e002") == 3000 and replica.pending == {}
    assert seen == [("s1e001", 5), ("s1e001", 7), ("s1e002", 11)]  # request-path stats follow


def test_hot_set_from_cohorts_and_top_plays() -> None:
    eps = tuple(Episode(f"s1e{i:03d}", "s1", i, 60_000, 0) for i in range(1, 5))
    eps2 = tuple(Episode(f"s2e{i:03d}", "s2", i, 60_000, 0) for i in range(1, 5))
    cat = Catalog([Series("s1", "a", (), 0.5, eps, {}), Series("s2", "b", (), 0.5, eps2, {})])
    cohort = FeatureRow(b"c#US#ios", {"i": {"trending_series": [["s2", 3.0], ["gone", 1.0]]}}, {})
    raw = cand_mod.to_json("v1", 0, [("s1e003", 9.0), ("s2e001", 8.0), ("s1e004", 1.0)])
    glob = FeatureRow(b"g#global", {cand_mod.FAMILY: {cand_mod.COLUMN: raw}}, {})
    assert hot_episodes(cat, [cohort, None], glob, per_series=2, top_plays=2) == ["s2e001", "s2e002", "s1e003"]
    assert hot_episodes(cat, [], None) == []


@pytest.mark.emulators
def test_reconcile_heals_missed_notices_against_bigtable(clean_bigtable) -> None:
    from transforms.bigtable_sink import BigtableSink, BigtableTarget

    s = clean_bigtable.settings
    sink = BigtableSink(BigtableTarget(s.project, s.bigtable_instance, "features"))
    store = FeatureStore.open(s.project, s.bigtable_instance, "features")

    def write(version: int) -> None:
        for k, e in enumerate(EPISODES):
            feats = {"plays_24h": version // 1000 + k, "trending": float(k), "as_of_ms": version}
            sink.add(RowUpdate(rowkeys.episode_key(e), "i", _cells(feats), version, version))
        sink.flush()

    item_ids = [*EPISODES, "other"]
    bundle = types.SimpleNamespace(version="v7", item_ids=item_ids, item_embeddings=np.eye(7, 4, dtype=np.float32))
    replica = EdgeReplica(store)

    async def scenario() -> None:
        write(1_000_000)
        await replica.reconcile(EPISODES, bundle=bundle)
        assert {e: replica.version(e) for e in EPISODES} == dict.fromkeys(EPISODES, 1_000_000)
        write(2_000_000)
        write(3_000_000)
        # notices: only the first three episodes' arrive (shuffled, duplicated, one stale); the rest are lost
        notices = [ChangeNotice("episode", e, "plays", v, v) for e in EPISODES[:3] for v in (2_000_000, 3_000_000)]
        notices += notices[:2] + [ChangeNotice("episode", EPISODES[0], "plays", 1_000_000, 1_000_000)]
        random.Random(3).shuffle(notices)
        for n in notices:
            replica.apply(n)
        await replica.fetch_pending()
        assert [replica.version(e) for e in EPISODES] == [3_000_000] * 3 + [1_000_000] * 3  # a gap
        await replica.reconcile(EPISODES[1:], bundle=bundle)  # s1e001 left the hot set

    asyncio.run(scenario())
    truth = store.read([rowkeys.episode_key(e) for e in EPISODES[1:]])
    expected = {rowkeys.parse_key(k)[1]: (row_version(r), r.values["i"]) for k, r in truth.items()}
    assert replica.snapshot() == expected and len(expected) == 5
    assert all(v == 3_000_000 for v, _ in expected.values())
    assert replica.embeddings_version == "v7" and set(replica.embeddings) == set(EPISODES[1:])
    np.testing.assert_array_equal(replica.embeddings["s1e002"], np.eye(7, 4, dtype=np.float32)[1])
