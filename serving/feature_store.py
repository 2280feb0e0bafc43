"""Read features back from Bigtable: one `read_rows` call for any set of row keys.

Knows nothing of HTTP; used by serving, the demo summary, benchmarks and tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import orjson

from transforms.features import decode


@dataclasses.dataclass
class FeatureRow:
    """Latest cell of every column of one row: values decoded, and their cell timestamps (ms)."""

    key: bytes
    values: dict[str, dict[str, Any]]  # family -> column -> value
    timestamps_ms: dict[str, dict[str, int]]  # family -> column -> cell timestamp

    def get(self, family: str, column: str, default: Any = None) -> Any:
        return self.values.get(family, {}).get(column, default)

    def newest_ms(self, family: str) -> int:
        return max(self.timestamps_ms.get(family, {}).values(), default=0)


class FeatureStore:
    def __init__(self, table):
        self._table = table
        self._direct_call = None  # raw ReadRows stub, built on first read_direct()

    @classmethod
    def open(cls, project: str, instance: str, table: str) -> FeatureStore:
        from google.cloud import bigtable

        client = bigtable.Client(project=project, admin=False)
        return cls(client.instance(instance).table(table))

    def read(self, row_keys: Iterable[bytes], timeout_s: float | None = None) -> dict[bytes, FeatureRow]:
        """Rows that exist among `row_keys`, in one round trip; missing keys are absent from the result."""
        from google.cloud.bigtable.row_filters import CellsColumnLimitFilter
        from google.cloud.bigtable.row_set import RowSet

        keys = list(dict.fromkeys(row_keys))
        if not keys:
            return {}
        row_set = RowSet()
        for k in keys:
            row_set.add_row_key(k)
        kwargs = {"row_set": row_set, "filter_": CellsColumnLimitFilter(1)}
        if timeout_s is not None:
            from google.api_core.retry import Retry

            kwargs["retry"] = Retry(timeout=timeout_s, initial=0.01, maximum=0.05)
        out: dict[bytes, FeatureRow] = {}
        for row in self._table.read_rows(**kwargs):
            values: dict[str, dict[str, Any]] = {}
            stamps: dict[str, dict[str, int]] = {}
            for family, columns in row.cells.items():
                for col, cells in columns.items():
                    name = col.decode()
                    values.setdefault(family, {})[name] = decode(cells[0].value)
                    stamps.setdefault(family, {})[name] = int(cells[0].timestamp.timestamp() * 1000)
            out[row.row_key] = FeatureRow(row.row_key, values, stamps)
        return out

    def read_direct(
        self, row_keys: Iterable[bytes], timeout_s: float, column_range: tuple[str, str, str] | None = None
    ) -> dict[bytes, FeatureRow]:
        """Same result as `read`, for the request path: the raw ReadRows stub on the client's own gRPC
        channel, one hard gRPC deadline and no retries (the caller's degradation ladder is the retry).

        Why: the client's row-merging layer costs about as much CPU as the read itself for a user row;
        here protobuf parsing stays in C and we fold chunks in one loop. Raises grpc.RpcError on a
        deadline or an unreachable server; the thread is free again when the deadline passes.
        """
        keys = list(dict.fromkeys(row_keys))
        if not keys:
            return {}
        call, request_cls = self._direct()
        request = request_cls(table_name=self._table.name)
        request.rows.row_keys.extend(keys)
        if column_range is None:
            request.filter.cells_per_column_limit_filter = 1
        else:
            request.filter.chain.filters.add().cells_per_column_limit_filter = 1
            columns = request.filter.chain.filters.add().column_range_filter
            columns.family_name = column_range[0]
            columns.start_qualifier_closed = column_range[1].encode()
            columns.end_qualifier_closed = column_range[2].encode()
        out: dict[bytes, FeatureRow] = {}
        values: dict[str, dict[str, Any]] = {}
        stamps: dict[str, dict[str, int]] = {}
        row_key, family, column, parts = b"", "", "", []
        for response in call(request, timeout=timeout_s):
            for chunk in response.chunks:
                if chunk.reset_row:
                    values, stamps, parts = {}, {}, []
                    continue
                if chunk.row_key:
                    row_key = chunk.row_key
                if chunk.HasField("family_name"):
                    family = chunk.family_name.value
                if chunk.HasField("qualifier"):
                    column = chunk.qualifier.value.decode()
                    values.setdefault(family, {})
                    stamps.setdefault(family, {})[column] = chunk.timestamp_micros // 1000
                parts.append(chunk.value)
                if chunk.value_size == 0:  # the cell is complete (split cells carry value_size > 0)
                    raw = parts[0] if len(parts) == 1 else b"".join(parts)
                    parts = []
                    if column not in values[family]:  # cells_per_column_limit(1): first is newest
                        values[family][column] = orjson.loads(raw)  # same JSON as transforms.features
                if chunk.commit_row:
                    out[row_key] = FeatureRow(row_key, values, stamps)
                    values, stamps = {}, {}
        return out

    def _direct_channel(self):
        """The emulator gets its own channel with a short reconnect backoff (gRPC's default grows to
        120 s, so a restarted emulator would stay 'down' for minutes); in the cloud, the client's own
        authenticated channel."""
        import os

        import grpc

        emulator = os.environ.get("BIGTABLE_EMULATOR_HOST")
        if emulator:
            options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]
            return grpc.insecure_channel(emulator, options=options)
        return self._table._instance._client.table_data_client._transport.grpc_channel

    def _direct(self):
        if self._direct_call is None:
            from google.cloud.bigtable_v2.types import bigtable as bigtable_types

            request_cls = bigtable_types.ReadRowsRequest.pb()
            response_cls = bigtable_types.ReadRowsResponse.pb()
            channel = self._direct_channel()
            call = channel.unary_stream(
                "/google.bigtable.v2.Bigtable/ReadRows",
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString,
            )
            self._direct_call = (call, request_cls)
        return self._direct_call
