"""serving/feature_store.py's request-path read: the hand-assembled ReadRowsRequest is the message the
client library would build, and read_async returns what the client library reads, from the emulator."""

from __future__ import annotations

import asyncio
import types

import pytest

from serving.feature_store import FeatureStore
from transforms import rowkeys
from transforms.feature_rows import RowUpdate, _cells


@pytest.mark.parametrize("lengths", [[1], [7, 7, 30], [127, 128], [300], [16_383, 16_384, 5]])
def test_the_point_read_bytes_parse_to_the_same_request(lengths: list[int]) -> None:
    from google.cloud.bigtable_v2.types import bigtable as bigtable_types

    store = FeatureStore(types.SimpleNamespace(name="projects/p/instances/i/tables/features"))
    keys = [bytes([65 + i % 26]) * n for i, n in enumerate(lengths)]  # varint lengths of one to three bytes
    parsed = bigtable_types.ReadRowsRequest.pb().FromString(store._point_read_bytes(keys))
    assert parsed == store._request(keys, None)
    assert list(parsed.rows.row_keys) == keys and parsed.filter.cells_per_column_limit_filter == 1


@pytest.mark.emulators
def test_read_async_returns_what_the_client_library_reads(clean_bigtable) -> None:
    from transforms.bigtable_sink import BigtableSink, BigtableTarget

    s = clean_bigtable.settings
    sink = BigtableSink(BigtableTarget(s.project, s.bigtable_instance, "features"))
    users = ["u1", "u2", "u3"]
    for k, user in enumerate(users):
        feats = {"completion_rate_7d": 0.1 * k, "binge_depth": k, "genre_mix_30m": {"romance": 1.0}}
        sink.add(RowUpdate(rowkeys.user_key(user), "u", _cells(feats), 1_000 + k, 1_000 + k))
        sink.add(RowUpdate(rowkeys.user_key(user), "u", _cells({"binge_depth": 10 + k}), 2_000 + k, 2_000 + k))
    sink.flush()
    store = FeatureStore.open(s.project, s.bigtable_instance, "features")
    keys = [rowkeys.user_key(u) for u in [*users, "nobody"]]

    async def read_each() -> list[dict]:
        return [await store.read_async([k], 1.0) for k in keys]

    got = asyncio.run(read_each())
    want = store.read(keys)
    assert [row for one in got for row in one.values()] == [want[k] for k in keys[:3]]
    assert got[3] == {}  # an unknown user: no row
    assert got[1][keys[1]].get("u", "binge_depth") == 11  # the latest cell
    assert asyncio.run(store.read_async(keys, 1.0)) == want  # several keys in one request
