"""cliffhanger/notices.py: the optional cohort fields are backward compatible both ways."""

from __future__ import annotations

import json

import pytest

from cliffhanger.notices import ChangeNotice, NoticeError


def test_round_trip_with_and_without_cohort():
    full = ChangeNotice("user", "u1", "completed_episode", 3, 1_000, "BR", "android")
    assert ChangeNotice.from_json(full.to_json()) == full
    bare = ChangeNotice("series", "s0001", "trending", 1, 1_000)
    assert json.loads(bare.to_json()) == {
        "entity": "series",
        "id": "s0001",
        "reason": "trending",
        "version": 1,
        "event_time_ms": 1_000,
    }  # unchanged wire format when the optional fields are empty
    old = b'{"entity":"user","event_time_ms":5,"id":"u1","reason":"new_session","version":2}'
    assert ChangeNotice.from_json(old) == ChangeNotice("user", "u1", "new_session", 2, 5, "", "")


def test_optional_fields_must_be_strings():
    with pytest.raises(NoticeError, match="^country"):
        ChangeNotice.from_json(b'{"entity":"user","event_time_ms":5,"id":"u1","reason":"r","version":2,"country":7}')
