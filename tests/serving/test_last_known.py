"""LastKnown: rows come back equal to what was put, binary cells included, and the held rows are out of
the garbage collector's view; the LRU bound holds."""

from __future__ import annotations

import gc
import sys

from serving.feature_store import FeatureRow
from serving.last_known import LastKnown, freeze, thaw
from tests.heap import traced_bytes_each


def _row(i: int) -> FeatureRow:
    values = {
        "u": {"plays_7d": i, "genre_affinity": [0.1, 0.2, 0.7], "country": "US", "last_series": None},
        "cw": {"s0001": {"episode_id": "s0001e003", "completed": True, "updated_ms": 1000 + i}},
        "done": {"s0001e001": 1, "s0001e002": 1},
        "cand": {"list": b"\0CHL1" + bytes(range(40)) * 3},  # a binary candidate list: bytes, not JSON
    }
    stamps = {family: {column: 1_000 + i for column in columns} for family, columns in values.items()}
    return FeatureRow(f"u#{i}".encode(), values, stamps)


def test_a_row_comes_back_as_it_was_put() -> None:
    row = _row(7)
    assert thaw(freeze(row)) == row
    plain = FeatureRow(b"u#8", {"u": {"plays_7d": 3}}, {"u": {"plays_7d": 5}})  # no binary cell
    assert thaw(freeze(plain)) == plain
    assert row.values["cand"]["list"][:1] == b"\0"  # freezing did not strip the cell from the caller's row


def test_lru_bound_and_misses() -> None:
    last = LastKnown(max_entries=3)
    for i in range(5):
        last.put(f"h{i}", _row(i))
    assert len(last) == 3 and last.get("h0") is None and last.get("h1") is None
    assert last.get("h4") == _row(4)
    last.put("h2", _row(22))  # a newer read of the same user replaces it and counts as recent
    last.put("h5", _row(5))
    assert last.get("h3") is None and last.get("h2") == _row(22)


def test_held_rows_are_untracked_by_the_first_young_collection() -> None:
    """Only a full collection looks at the old generation again: a held row still tracked when it gets
    there is walked by every full collection until one untracks it, and rows reaching it tracked are
    what trigger those collections. So one young collection must untrack every held row (a nested
    tuple needs one pass per level, and the first would leave it tracked)."""
    last = LastKnown(max_entries=100)
    gc.collect()  # the store is old, as in a running server; the rows put next are young
    for i in range(50):
        last.put(f"h{i}", _row(i))
    gc.collect(0)
    assert not any(gc.is_tracked(frozen) for frozen in last._rows.values())
    as_rows = [_row(i) for i in range(50)]  # what LastKnown held before: several tracked objects a row
    assert all(gc.is_tracked(r) and gc.is_tracked(r.values) for r in as_rows)


def test_several_binary_cells_come_back_in_their_families() -> None:
    row = _row(3)
    row.values["u"]["embedding"] = b"\x01\x02"
    row.timestamps_ms["u"]["embedding"] = 7
    frozen = freeze(row)
    assert thaw(frozen) == row and thaw(frozen).values["u"]["embedding"] == b"\x01\x02"
    assert len(frozen) == 3 + 3 * 2  # key, two JSON documents, then (family, column, bytes) per cell


def test_a_held_row_takes_its_documents_length() -> None:
    """A frozen row allocates its tuple and two JSON documents of their own length (the binary cells are
    the row's own bytes, shared); an encoder's buffer held instead was ~4-16 KB a document."""
    row = _row(5)
    row.values["done"] |= {f"s0002e{k:03d}": 1 for k in range(40)}  # a longer history: a bigger document
    row.timestamps_ms["done"] |= dict.fromkeys(row.values["done"], 1_000)
    per_row, kept = traced_bytes_each(lambda: freeze(row))
    frozen = kept[0]
    own = sys.getsizeof(frozen) + sys.getsizeof(frozen[1]) + sys.getsizeof(frozen[2])
    assert frozen[5] is row.values["cand"]["list"]  # shared, not copied
    assert per_row < own + 64, (per_row, own)
