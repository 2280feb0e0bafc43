"""SharedRows' refresh: episode rows land in the item store (and nowhere else), the other shared rows are
served as rows, and a refresh of thousands of episodes leaves nothing for the garbage collector's old
generation."""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from models.ranker_features import ITEM_COLUMNS
from serving.feature_store import FeatureRow
from serving.metrics import Metrics
from serving.shared import SharedRows
from transforms import rowkeys

pytestmark = pytest.mark.anyio


class _Store:
    """read_async over a dict of rows, as FeatureStore answers it: new objects every read (missing keys
    are absent)."""

    def __init__(self, rows: dict[bytes, FeatureRow]) -> None:
        self.rows, self.reads = rows, 0

    async def read_async(self, keys, timeout_s, column_range=None):
        self.reads += 1
        return {k: _copy(self.rows[k]) for k in keys if k in self.rows}


def _copy(row: FeatureRow) -> FeatureRow:
    return FeatureRow(
        row.key, {f: dict(c) for f, c in row.values.items()}, {f: dict(c) for f, c in row.timestamps_ms.items()}
    )


def _episode_row(i: int) -> FeatureRow:
    values = {"i": {c: float(i + k) for k, c in enumerate(ITEM_COLUMNS)}}
    return FeatureRow(rowkeys.episode_key(f"e{i:05d}"), values, {"i": dict.fromkeys(values["i"], 1)})


async def test_a_refresh_keeps_episode_rows_as_item_stats_only() -> None:
    episodes = [f"e{i:05d}" for i in range(3000)]
    cohort = rowkeys.cohort_key("US", "ios")
    rows = {rowkeys.episode_key(e): _episode_row(i) for i, e in enumerate(episodes[:-1])}  # the last: unplayed
    rows[cohort] = FeatureRow(cohort, {"t": {"trending": "[]"}}, {"t": {"trending": 1}})
    with ThreadPoolExecutor(1) as executor:
        shared = SharedRows(_Store(rows), executor, Metrics(), ttl_s=30)
        shared.track_episodes(episodes)
        shared.track([cohort])
        gc.collect()
        before = len(gc.get_objects())
        assert await shared.refresh_due()
        gc.collect(0)
        gc.collect(1)  # what the young collections leave is what reaches the old generation
        # as FeatureRow objects, 3,000 rows were 9,000 tracked objects (row, values, timestamps), replaced
        # every refresh: each refresh brought a full collection walking them
        assert len(gc.get_objects()) - before < 300

    assert shared.row(cohort) == rows[cohort]  # a shared row other than an episode: served as read
    assert shared.row(rowkeys.episode_key(episodes[0])) is None  # episodes: only in the item store
    stats, known = shared._items.lookup([episodes[7], episodes[-1], "never-tracked"])
    np.testing.assert_array_equal(stats[0], [7.0 + k for k in range(len(ITEM_COLUMNS))])
    assert known.tolist() == [True, True, False]  # an unplayed episode is known, with zeros
    np.testing.assert_array_equal(stats[1], np.zeros(len(ITEM_COLUMNS)))
