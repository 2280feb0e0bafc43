"""The one accept / refuse decision every job makes on a raw payload (Beam and PyFlink alike)."""

from __future__ import annotations

import base64
import json

from cliffhanger.dead_letters import DeadLetter, classify
from cliffhanger.events import PlaybackEvent
from tests.factories import event

LATE_MS, SKEW_MS = 15 * 60_000, 60_000


def test_a_timely_event_is_accepted() -> None:
    e = event("play_start", t=1_000_000)
    got = classify(e.to_json(), 1_000_500, LATE_MS, SKEW_MS)
    assert isinstance(got, PlaybackEvent) and got == e


def test_refusals_name_stage_field_and_keep_the_payload() -> None:
    malformed = classify(b'{"schema_version": 1}', 7, LATE_MS, SKEW_MS)
    assert isinstance(malformed, DeadLetter) and (malformed.stage, malformed.arrival_ms) == ("parse", 7)
    assert malformed.field and malformed.reason and malformed.payload == b'{"schema_version": 1}'
    assert classify(b"\xff not json", 7, LATE_MS, SKEW_MS).field == ""  # the payload as a whole is bad
    late = event("play_start", t=1_000_000)
    too_late = classify(late.to_json(), 1_000_000 + LATE_MS + 1, LATE_MS, SKEW_MS)
    assert (too_late.stage, too_late.field) == ("timeliness", "event_time") and too_late.reason.startswith("late")
    future = classify(late.to_json(), 1_000_000 - SKEW_MS - 1, LATE_MS, SKEW_MS)
    assert future.stage == "timeliness" and not future.reason.startswith("late")


def test_the_json_line_keeps_a_non_utf8_payload() -> None:
    line = json.loads(DeadLetter(b"\xff\x00", "bad", "parse", "", 3).to_json())
    assert base64.b64decode(line["payload_b64"]) == b"\xff\x00"
    assert {k: line[k] for k in ("reason", "stage", "field", "arrival_ms")} == {
        "reason": "bad",
        "stage": "parse",
        "field": "",
        "arrival_ms": 3,
    }
