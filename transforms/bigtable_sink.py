"""Batched, idempotent Bigtable writes of RowUpdates.

A `BigtableSink` is built in a DoFn's `setup()` (never in `__init__`), buffers a bundle's updates, and
`flush()`es them in one `mutate_rows` call at `finish_bundle`. Updates to the same cell within a
bundle collapse to the newest (timestamp, seq), so a hot row (a cohort) costs one mutation per bundle.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools

from transforms.feature_rows import RowUpdate

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class BigtableWriteError(RuntimeError):
    """Some mutations were rejected; raising fails the bundle so the runner retries it (writes are idempotent)."""


@dataclasses.dataclass(frozen=True)
class BigtableTarget:
    """Where features go. Plain values, so DoFns holding it pickle cleanly."""

    project: str
    instance: str
    table: str

    def open_table(self):
        """A Table handle, one client per process and target (clients are thread-safe; the
        DirectRunner calls DoFn.setup() per bundle, and a new gRPC channel per bundle is slow)."""
        return _open_table(self)


@functools.lru_cache(maxsize=8)
def _open_table(target: BigtableTarget):
    from google.cloud import bigtable

    client = bigtable.Client(project=target.project, admin=False)
    return client.instance(target.instance).table(target.table)


class BigtableSink:
    def __init__(self, target: BigtableTarget, max_buffered_cells: int = 20_000):
        self._table = target.open_table()
        self._max = max_buffered_cells
        self._cells: dict[tuple[bytes, str, str], tuple[int, int, bytes]] = {}

    def add(self, update: RowUpdate) -> None:
        for col, val in update.cells:
            key = (update.row_key, update.family, col)
            cand = (update.timestamp_ms, update.seq, val)
            old = self._cells.get(key)
            if old is None or cand[:2] >= old[:2]:
                self._cells[key] = cand
        if len(self._cells) >= self._max:
            self.flush()

    def flush(self) -> int:
        """Write everything buffered; returns the number of rows written."""
        if not self._cells:
            return 0
        rows = {}
        for (row_key, family, col), (ts_ms, _, val) in self._cells.items():
            row = rows.get(row_key)
            if row is None:
                row = rows[row_key] = self._table.direct_row(row_key)
            row.set_cell(family, col.encode(), val, timestamp=_EPOCH + dt.timedelta(milliseconds=ts_ms))
        statuses = self._table.mutate_rows(list(rows.values()))
        failed = [(key, s) for key, s in zip(rows, statuses, strict=True) if s.code != 0]
        if failed:
            key, status = failed[0]
            raise BigtableWriteError(f"{len(failed)} of {len(rows)} rows failed; first {key!r}: {status.message}")
        self._cells.clear()
        return len(rows)
