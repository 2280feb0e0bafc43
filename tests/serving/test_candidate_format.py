"""The candidate-list cell: binary (fixed-width ids + float64 scores) written and read; the JSON formats
(columnar ids + scores, and the first [[id, score]]) still read; malformed cells name what is wrong."""

from __future__ import annotations

import numpy as np
import pytest

from serving import candidates as cand_mod
from transforms.features import decode


def test_round_trip_is_columnar_and_best_first() -> None:
    cell = cand_mod.to_json("v7", 1234, [("e1", 0.9), ("e2", 0.5), ("e3", 0.25)])
    assert cell == {"bundle_version": "v7", "generated_ms": 1234, "ids": ["e1", "e2", "e3"], "scores": [0.9, 0.5, 0.25]}
    parsed = cand_mod.parse(cell)
    assert (parsed.bundle_version, parsed.generated_ms, len(parsed)) == ("v7", 1234, 3)
    assert parsed.items == [("e1", 0.9), ("e2", 0.5), ("e3", 0.25)]
    assert parsed.head(2).items == [("e1", 0.9), ("e2", 0.5)]
    assert parsed.head(5) is parsed


def test_first_format_is_still_read() -> None:
    parsed = cand_mod.parse({"bundle_version": "v1", "generated_ms": 5, "items": [["a", 1], ["b", 0.5]]})
    assert parsed.ids == ["a", "b"] and parsed.items == [("a", 1.0), ("b", 0.5)]


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ([1, 2], "must be an object"),
        ({"ids": ["a"], "scores": [1.0, 2.0]}, "same length"),
        ({"ids": "ab", "scores": [1.0, 2.0]}, "same length"),
        ({"ids": ["a", 7], "scores": [1.0, 2.0]}, "every id must be a string"),
        ({"ids": ["a", "b"], "scores": [1.0, "high"]}, "every score must be a number"),
        ({"items": [["a"]]}, "every item must be"),
        ({"bundle_version": "v"}, "needs ids"),
    ],
)
def test_malformed_cells_name_the_problem(cell, message: str) -> None:
    with pytest.raises(cand_mod.CandidateListError, match=message):
        cand_mod.parse(cell)


def test_binary_cell_round_trip_keeps_ids_scores_and_order() -> None:
    items = [("s0001e001", 0.9), ("s0120e047", -1.25), ("é-unicode", 1e-9), ("x", 0.5)]
    cell = cand_mod.encode_list("v9", 777, items)
    assert cell.startswith(cand_mod.MAGIC) and decode(cell) == cell  # the generic cell decoder hands it over
    parsed = cand_mod.parse(cell)
    assert (parsed.bundle_version, parsed.generated_ms, len(parsed)) == ("v9", 777, 4)
    assert parsed.items == items  # float64: scores exact
    assert isinstance(parsed.id_column, np.ndarray) and parsed.id_column.dtype.kind == "S"
    assert parsed.head(2).ids == ["s0001e001", "s0120e047"]
    assert len(cand_mod.parse(cand_mod.encode_list("v", 1, []))) == 0


def test_the_writer_writes_binary_cells() -> None:
    class Table:  # the two calls write_candidate_lists makes on a Bigtable table
        def __init__(self) -> None:
            self.cells = {}

        def direct_row(self, key):
            table = self

            class Row:
                def set_cell(self, family, column, value, timestamp):
                    table.cells[key] = (family, column, value, timestamp)

            return Row()

        def mutate_rows(self, rows):
            return [type("Status", (), {"code": 0})() for _ in rows]

    table = Table()
    assert cand_mod.write_candidate_lists(table, [(b"u#1", "v1", 5, [("a", 1.0), ("b", 0.5)])]) == 1
    family, column, value, _ = table.cells[b"u#1"]
    assert (family, column) == (cand_mod.FAMILY, cand_mod.COLUMN.encode())
    assert cand_mod.parse(value).items == [("a", 1.0), ("b", 0.5)]


def _binary(n_ids: int = 2) -> bytes:
    return cand_mod.encode_list("v1", 1, [(f"e{i}", float(i)) for i in range(n_ids)])


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        (b"\0XXXX", "without the CHL1 magic"),
        (cand_mod.MAGIC + b"\1", "shorter than its header"),
        (_binary()[:-1], "does not hold n=2"),
        (_binary() + b"x", "does not hold n=2"),
        (cand_mod.MAGIC + b"\x03\0\0\0{x}", "bad binary header"),
        (cand_mod.encode_list("v", 1, [("a", float("nan"))]), "finite"),
    ],
)
def test_malformed_binary_cells_name_the_problem(cell: bytes, message: str) -> None:
    with pytest.raises(cand_mod.CandidateListError, match=message):
        cand_mod.parse(cell)


def test_ids_with_nul_bytes_are_refused_at_write() -> None:
    with pytest.raises(cand_mod.CandidateListError, match="NUL"):
        cand_mod.encode_list("v", 1, [("a\0b", 1.0)])
