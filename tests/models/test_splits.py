"""models/splits.py: loading, re-indexing of arbitrary ids, SplitError naming file and line."""

from __future__ import annotations

import os

import numpy as np
import pytest

from models.splits import SplitError, load_split, write_split

ROWS = {
    "train": [("u1", "itemA", 1), ("u1", "itemB", 0), ("u2", "itemB", 1)],
    "valid": [("u2", "itemC", 1)],
    "test": [("u3", "itemA", 1), ("u1", "itemD", 0)],
}


def test_string_ids_reindexed_in_order_of_appearance(tmp_path):
    write_split(str(tmp_path), ROWS)
    s = load_split(str(tmp_path))
    assert s.user_ids == ("u1", "u2", "u3")
    assert s.item_ids == ("itemA", "itemB", "itemC", "itemD")  # itemD only in test: still rankable
    np.testing.assert_array_equal(s.train.users, [0, 0, 1])
    np.testing.assert_array_equal(s.train.items, [0, 1, 1])
    np.testing.assert_array_equal(s.train.is_positive, [True, False, True])
    assert s.summary()["test"] == {"pairs": 2, "positives": 1, "negatives": 1}


def test_integer_ids_keep_numeric_order(tmp_path):
    write_split(str(tmp_path), {"train": [(10, 2, 1), (9, 11, 0)], "valid": [(9, 2, 1)], "test": [(10, 11, 1)]})
    s = load_split(str(tmp_path))
    assert s.user_ids == ("9", "10") and s.item_ids == ("2", "11")


def _write(tmp_path, name, text):
    write_split(str(tmp_path), ROWS)
    path = tmp_path / f"{name}.txt"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


@pytest.mark.parametrize(
    ("name", "text", "needle", "line"),
    [
        ("train", "", "empty file", 0),
        ("valid", "u1 itemA 1.00\nu1,itemB,1\n", "expected 3", 2),
        ("test", "u1 itemA yes\n", "not a number", 1),
        ("train", "u1 itemA nan\n", "not finite", 1),
        ("valid", b"\xff\xfe\x00binary", "", 0),
        ("train", "u1 itemA 0\n", "no positive pairs", 0),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, name, text, needle, line):
    path = _write(tmp_path, name, text)
    with pytest.raises(SplitError) as err:
        load_split(str(tmp_path))
    assert err.value.path == path and path in str(err.value)
    assert needle in str(err.value)
    assert err.value.line == line


def test_missing_dir_and_missing_file(tmp_path):
    with pytest.raises(SplitError, match="split directory not found"):
        load_split(str(tmp_path / "nope"))
    write_split(str(tmp_path), ROWS)
    os.remove(tmp_path / "test.txt")
    with pytest.raises(SplitError, match=r"test\.txt: file not found"):
        load_split(str(tmp_path))
