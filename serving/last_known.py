"""The last successfully read row of each recent user: what a request serves when the read fails.

    last = LastKnown(max_entries=20_000)
    last.put(user_hash, row)      # after every successful read (a FeatureRow)
    row = last.get(user_hash)     # a FeatureRow equal to the one put, or None

Rows are held as bytes, not as FeatureRow objects. A FeatureRow's nested dicts are about six objects
that the garbage collector tracks, and a full LastKnown holds 20,000 rows. Every full (generation 2)
collection would walk those 120,000 objects, and its pause stalls every request in flight. The
collector runs one whenever the old generation grows by a quarter, and each miss replaces a row there.
Frozen, a row is one flat tuple of bytes and strings, which the collector stops tracking at its first
young collection (a nested tuple would reach the old generation still tracked: serving/cache.py says
why that matters); see benchmarks/gc_pause.py for the measured pauses.

Freezing costs a few microseconds per read: the JSON values go through orjson, and binary cells (a
candidate list, serving/candidates.py) are kept aside as bytes. A row is thawed only when it is
served, which happens only on the degraded path.
"""

from __future__ import annotations

from collections import OrderedDict

import orjson

from serving.cache import held_json
from serving.feature_store import FeatureRow

Frozen = tuple  # (key, values JSON, timestamps JSON, family, column, cell bytes, family, column, ...)


def freeze(row: FeatureRow) -> Frozen:
    """(key, JSON values without binary cells, JSON timestamps, then family, column and bytes of each
    binary cell in turn): flat, so the collector stops tracking it at once."""
    cells: list[str | bytes] = []  # family, column, value, family, ...
    values = row.values
    for family, columns in values.items():
        for column, value in columns.items():
            if type(value) is bytes:
                cells += (family, column, value)
    if cells:  # only the families holding a binary cell are copied
        binary = set(cells[::3])
        values = {
            family: ({c: v for c, v in columns.items() if type(v) is not bytes} if family in binary else columns)
            for family, columns in values.items()
        }
    return (row.key, held_json(values), held_json(row.timestamps_ms), *cells)


def thaw(frozen: Frozen) -> FeatureRow:
    key, values_json, stamps_json = frozen[:3]
    values = orjson.loads(values_json)
    cells = frozen[3:]
    for family, column, value in zip(cells[::3], cells[1::3], cells[2::3], strict=True):
        values[family][column] = value
    return FeatureRow(key, values, orjson.loads(stamps_json))


class LastKnown:
    """Bounded LRU of frozen rows, keyed by the user's keyed hash (never the user id in clear)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._rows: OrderedDict[str, Frozen] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    def put(self, key: str, row: FeatureRow) -> None:
        self._rows[key] = freeze(row)
        self._rows.move_to_end(key)
        while len(self._rows) > self.max_entries:
            self._rows.popitem(last=False)

    def get(self, key: str) -> FeatureRow | None:
        frozen = self._rows.get(key)
        return None if frozen is None else thaw(frozen)
