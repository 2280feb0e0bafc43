from __future__ import annotations

import collections
import random

import numpy as np
import pytest

from cliffhanger.config import Settings
from cliffhanger.events import EventError, parse_event, timeliness_error
from cliffhanger.synth import FaultKnobs, Generated, apply_faults, malformed_payloads
from cliffhanger.synth.faults import MALFORMED_KINDS, malformed_payload

SETTINGS = Settings()
ALLOWED_MS = SETTINGS.allowed_lateness_s * 1000
SKEW_MS = SETTINGS.max_clock_skew_s * 1000


def test_every_malformed_payload_fails_to_parse():
    payloads = malformed_payloads(random.Random(1), 5000)
    assert len(payloads) == 5000 and len(set(payloads)) > 2000  # varied, not one payload repeated
    for p in payloads:
        with pytest.raises(EventError):
            parse_event(p)


def test_every_malformation_kind_fails_for_real_events(small: Generated):
    rng = random.Random(2)
    bases = [se.event.to_wire() for se in small.events[:200]]
    seen = collections.Counter()
    for _ in range(3000):
        kind, payload = malformed_payload(rng, rng.choice(bases))
        seen[kind] += 1
        with pytest.raises(EventError):
            parse_event(payload)
    assert set(seen) == set(MALFORMED_KINDS)


def test_malformed_payloads_accepts_numpy_rng_and_seeds_and_is_deterministic():
    assert malformed_payloads(np.random.default_rng(5), 50) == malformed_payloads(np.random.default_rng(5), 50)
    assert malformed_payloads(3, 50) == malformed_payloads(random.Random(3), 50)
    assert malformed_payloads(3, 50) != malformed_payloads(4, 50)
    assert any(_not_utf8(p) for p in malformed_payloads(3, 500))


def _not_utf8(p: bytes) -> bool:
    try:
        p.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_faulty_stream_keeps_every_valid_event_once(small: Generated):
    originals = [m for m in small.messages if m.kind in ("ok", "out_of_order", "late")]
    assert sorted(m.event_id for m in originals) == sorted(se.event.event_id for se in small.events)
    assert [m.arrival_ms for m in small.messages] == sorted(m.arrival_ms for m in small.messages)
    for m in small.messages:
        if m.kind == "malformed":
            with pytest.raises(EventError):
                parse_event(m.payload)
        else:
            assert parse_event(m.payload).event_id == m.event_id


def test_fault_rates_follow_the_knobs(small: Generated):
    n = len(small.events)
    counts = collections.Counter(m.kind for m in small.messages)
    for kind, rate in [("duplicate", 0.03), ("out_of_order", 0.03), ("late", 0.02), ("malformed", 0.02)]:
        assert 0.4 * rate * n < counts[kind] < 2.0 * rate * n, (kind, counts[kind])


def test_duplicates_are_byte_identical_and_later(small: Generated):
    first = {}
    for m in small.messages:
        if m.kind != "duplicate" and m.kind != "malformed":
            first[m.event_id] = m
    dups = [m for m in small.messages if m.kind == "duplicate"]
    assert dups
    for d in dups:
        assert d.payload == first[d.event_id].payload
        assert d.arrival_ms > first[d.event_id].arrival_ms


def test_late_events_are_beyond_allowed_lateness(small: Generated):
    late = [m for m in small.messages if m.kind == "late"]
    assert late
    for m in late:
        e = parse_event(m.payload)
        assert m.arrival_ms - e.event_time_ms > ALLOWED_MS
        assert timeliness_error(e.event_time_ms, m.arrival_ms, ALLOWED_MS, SKEW_MS).startswith("late")


def test_out_of_order_events_arrive_after_later_events_but_are_timely(small: Generated):
    times = [(m, parse_event(m.payload).event_time_ms) for m in small.messages if m.kind != "malformed"]
    max_seen, overtaken = -1, 0
    for m, t in times:
        if m.kind == "out_of_order":
            assert timeliness_error(t, m.arrival_ms, ALLOWED_MS, SKEW_MS) is None
            overtaken += t < max_seen  # something that happened later already arrived
        max_seen = max(max_seen, t)
    assert overtaken > 0.8 * sum(1 for m, _ in times if m.kind == "out_of_order")
    # without faults, every valid event is timely
    for m, t in times:
        if m.kind == "ok":
            assert timeliness_error(t, m.arrival_ms, ALLOWED_MS, SKEW_MS) is None


def test_no_knobs_no_faults(small: Generated):
    clean = apply_faults(small.events, FaultKnobs(), seed=7)
    assert [m.kind for m in clean] == ["ok"] * len(small.events)
    assert [m.payload for m in clean] == [se.event.to_json() for se in small.events]


def test_faults_are_deterministic(small: Generated):
    knobs = FaultKnobs(0.1, 0.1, 0.1, 0.1)
    assert apply_faults(small.events, knobs, 1) == apply_faults(small.events, knobs, 1)
    assert apply_faults(small.events, knobs, 1) != apply_faults(small.events, knobs, 2)


@pytest.mark.parametrize(
    "bad", [{"duplicate_rate": -0.1}, {"late_rate": 1.5}, {"late_rate": 0.6, "out_of_order_rate": 0.6}]
)
def test_knobs_are_validated(bad):
    with pytest.raises(ValueError):
        FaultKnobs(**bad)
