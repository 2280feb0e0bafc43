"""Read features back from Bigtable: one `read_rows` call for any set of row keys.

Knows nothing of HTTP; used by serving, the demo summary, benchmarks and tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

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
