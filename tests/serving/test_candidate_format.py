"""The candidate-list cell: columnar (ids + scores) written and read; the first format ([[id, score]]) still
read; malformed cells name what is wrong."""

from __future__ import annotations

import pytest

from serving import candidates as cand_mod


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
