"""Fault injection on the arrival-ordered stream: duplicates, out-of-order, late and malformed messages.

    duplicate     the same payload (identical bytes) sent again 0.1-30 s later
    out_of_order  arrival delayed by 5 s - 3 min, so it lands after events that happened later
                  (still well within the default allowed lateness of 600 s)
    late          arrival 15-60 min after event_time: beyond the allowed lateness, must be dead-lettered
    malformed     extra messages that are not valid events, in varied ways (see `MALFORMED_KINDS`);
                  every one of them makes `cliffhanger.events.parse_event` raise EventError

Valid events are never replaced, so the stream of valid events stays the complete ground truth.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable, Sequence

import numpy as np

from cliffhanger.events import MAX_DURATION_MS, MAX_ID_LEN
from cliffhanger.synth.sessions import SimEvent, serializer_for

KINDS = ("ok", "duplicate", "out_of_order", "late", "malformed")
LATE_MIN_MS, LATE_MAX_MS = 15 * 60_000, 60 * 60_000
OUT_OF_ORDER_MIN_MS, OUT_OF_ORDER_MAX_MS = 5_000, 180_000
DUPLICATE_MIN_MS, DUPLICATE_MAX_MS = 100, 30_000


@dataclasses.dataclass(frozen=True)
class FaultKnobs:
    duplicate_rate: float = 0.0
    out_of_order_rate: float = 0.0
    late_rate: float = 0.0
    malformed_rate: float = 0.0  # malformed messages added, as a fraction of the valid events

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{f.name} must be in [0, 1], got {v}")
        if self.out_of_order_rate + self.late_rate > 1.0:
            raise ValueError("out_of_order_rate + late_rate must be <= 1")


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One message as it reaches the topic. kind is one of KINDS; detail names the malformation."""

    arrival_ms: int
    payload: bytes
    kind: str
    event_id: str | None = None
    event_type: str = ""  # of the valid event carried ("" for malformed)
    detail: str = ""


def apply_faults(events: Sequence[SimEvent], knobs: FaultKnobs, seed: int) -> list[Message]:
    """The messages as delivered: events with faults applied, sorted by arrival (stable)."""
    rng = random.Random(int(np.random.SeedSequence([seed, 3]).generate_state(1)[0]))
    out: list[Message] = []
    to_json = serializer_for(events[0].event) if events else None
    for se in events:
        payload = to_json(se.event)
        eid, etype = se.event.event_id, se.event.event_type
        r = rng.random()
        if r < knobs.late_rate:
            msg = Message(se.event.event_time_ms + rng.randint(LATE_MIN_MS, LATE_MAX_MS), payload, "late", eid, etype)
        elif r < knobs.late_rate + knobs.out_of_order_rate:
            delay = rng.randint(OUT_OF_ORDER_MIN_MS, OUT_OF_ORDER_MAX_MS)
            msg = Message(se.arrival_ms + delay, payload, "out_of_order", eid, etype)
        else:
            msg = Message(se.arrival_ms, payload, "ok", eid, etype)
        out.append(msg)
        if rng.random() < knobs.duplicate_rate:
            dup_at = msg.arrival_ms + rng.randint(DUPLICATE_MIN_MS, DUPLICATE_MAX_MS)
            out.append(Message(dup_at, payload, "duplicate", eid, etype))
    if events and knobs.malformed_rate > 0:
        for _ in range(round(knobs.malformed_rate * len(events))):
            base = events[rng.randrange(len(events))]
            kind, payload = malformed_payload(rng, base.event.to_wire())
            out.append(Message(base.arrival_ms + rng.randint(0, 5000), payload, "malformed", None, "", kind))
    out.sort(key=lambda m: m.arrival_ms)
    return out


# -- malformed payloads ---------------------------------------------------------------------------

_REQUIRED = (
    "schema_version",
    "event_id",
    "user_id",
    "series_id",
    "episode_id",
    "episode_number",
    "event_type",
    "position_ms",
    "duration_ms",
    "event_time",
    "device",
    "country",
    "session_id",
    "app_version",
)
_ID_FIELDS = ("event_id", "user_id", "series_id", "episode_id", "session_id", "app_version")


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def _with(base: dict, field: str, value: object) -> bytes:
    return _dumps({**base, field: value})


def _not_json(rng: random.Random, base: dict) -> bytes:
    choices = ["hello", "{", "}{", "{'event_id': 'x'}", "undefined", "<event/>", '{"a":}', '{"user_id":"u1"\x00}']
    if rng.random() < 0.3:
        return bytes(rng.randint(32, 126) for _ in range(rng.randint(1, 200)))
    return rng.choice(choices).encode()


def _truncated(rng: random.Random, base: dict) -> bytes:
    raw = _dumps(base)
    return raw[: rng.randrange(1, len(raw))]  # at least 1 byte: Pub/Sub rejects empty messages


def _wrong_type(rng: random.Random, base: dict) -> bytes:
    field, value = rng.choice(
        [
            ("episode_number", str(base["episode_number"])),
            ("duration_ms", base["duration_ms"] + 0.5),
            ("position_ms", str(base["position_ms"])),
            ("position_ms", True),
            ("user_id", 42),
            ("event_time", 1_795_132_800_000),
            ("schema_version", "1"),
            ("schema_version", True),
            ("event_type", 3),
            ("device", [base["device"]]),
            ("country", {"code": base["country"]}),
            ("experiment_arm", 7),
            ("session_id", False),
        ]
    )
    return _with(base, field, value)


def _missing_field(rng: random.Random, base: dict) -> bytes:
    drop = rng.choice(_REQUIRED)
    return _dumps({k: v for k, v in base.items() if k != drop})


def _null_field(rng: random.Random, base: dict) -> bytes:
    return _with(base, rng.choice(_REQUIRED), None)


def _bad_enum(rng: random.Random, base: dict) -> bytes:
    if rng.random() < 0.5:
        return _with(base, "event_type", rng.choice(["watch", "PLAY_START", "Complete", "", "pause", "progress "]))
    return _with(base, "device", rng.choice(["playstation", "IOS", "", "roku", "android-tv"]))


def _negative(rng: random.Random, base: dict) -> bytes:
    field = rng.choice(["position_ms", "duration_ms", "episode_number"])
    return _with(base, field, -rng.randint(1, 100_000))


def _out_of_range(rng: random.Random, base: dict) -> bytes:
    field, value = rng.choice(
        [
            ("position_ms", base["duration_ms"] + rng.randint(1, 10_000)),
            ("duration_ms", MAX_DURATION_MS + rng.randint(1, 10**9)),
            ("duration_ms", 0),
            ("episode_number", 0),
            ("episode_number", 10_001 + rng.randint(0, 10**6)),
        ]
    )
    return _with(base, field, value)


def _bad_version(rng: random.Random, base: dict) -> bytes:
    return _with(base, "schema_version", rng.choice([0, 2, 3, 99, -1, 1.0, 10**12]))


def _non_utf8(rng: random.Random, base: dict) -> bytes:
    raw = _dumps(base)
    at = rng.randrange(len(raw) + 1)
    bad = rng.choice([b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xe9", b"\xa0\xa1", b"\xed\xa0\x80"])
    return raw[:at] + bad + raw[at:]


def _huge_string(rng: random.Random, base: dict) -> bytes:
    n = rng.randint(MAX_ID_LEN + 1, 20_000)
    if rng.random() < 0.2:
        return b"x" * n  # a huge non-JSON blob
    return _with(base, rng.choice(_ID_FIELDS), "x" * n)


def _json_not_object(rng: random.Random, base: dict) -> bytes:
    return rng.choice([_dumps([base]), b"[]", b"null", b"42", b'"event"', b"true", _dumps([base, base])])


def _bad_time(rng: random.Random, base: dict) -> bytes:
    value = rng.choice(
        ["yesterday", "2026-11-21T14:00:00", "2026-13-01T00:00:00Z", "", "1795132800000", "21/11/2026 14:00"]
    )
    return _with(base, "event_time", value)


def _bad_id(rng: random.Random, base: dict) -> bytes:
    return _with(base, rng.choice(_ID_FIELDS), rng.choice(["u 42", "u/42", "\u00fc42", "", "a\nb", "s0001;DROP"]))


def _bad_country(rng: random.Random, base: dict) -> bytes:
    return _with(base, "country", rng.choice(["usa", "us", "U1", "", "USA", "\u00dcS"]))


def _bom(rng: random.Random, base: dict) -> bytes:
    return b"\xef\xbb\xbf" + _dumps(base)


def _duplicate_key(rng: random.Random, base: dict) -> bytes:
    raw = _dumps(base)  # with duplicate keys JSON parsers keep the last one: an unsupported version
    return raw[:-1] + b',"schema_version":' + str(rng.choice([0, 2, 7])).encode() + b"}"


def _nan(rng: random.Random, base: dict) -> bytes:
    field = rng.choice(["duration_ms", "position_ms", "episode_number"])
    raw = _dumps({**base, field: 0}).replace(
        f'"{field}":0'.encode(), f'"{field}":{rng.choice(["NaN", "Infinity"])}'.encode()
    )
    return raw


def _deep_nesting(rng: random.Random, base: dict) -> bytes:
    depth = rng.randint(2_000, 20_000)
    return b"[" * depth + b"]" * depth


def _trailing_garbage(rng: random.Random, base: dict) -> bytes:
    raw = _dumps(base)
    return raw + rng.choice([b"xyz", raw, b",", b"}"])


MALFORMED_KINDS: dict[str, Callable[[random.Random, dict], bytes]] = {
    "not_json": _not_json,
    "truncated": _truncated,
    "wrong_type": _wrong_type,
    "missing_field": _missing_field,
    "null_field": _null_field,
    "bad_enum": _bad_enum,
    "negative_number": _negative,
    "out_of_range": _out_of_range,
    "unknown_schema_version": _bad_version,
    "non_utf8": _non_utf8,
    "huge_string": _huge_string,
    "json_not_object": _json_not_object,
    "bad_time": _bad_time,
    "bad_id": _bad_id,
    "bad_country": _bad_country,
    "utf8_bom": _bom,
    "duplicate_key": _duplicate_key,
    "nan": _nan,
    "deep_nesting": _deep_nesting,
    "trailing_garbage": _trailing_garbage,
    "blank": lambda rng, base: b" \n",  # whitespace only (an empty message cannot be published)
}
_KIND_NAMES = tuple(MALFORMED_KINDS)


def malformed_payload(rng: random.Random, base: dict) -> tuple[str, bytes]:
    """One malformed payload derived from `base` (a valid event's wire dict) -> (kind, payload)."""
    kind = rng.choice(_KIND_NAMES)
    return kind, MALFORMED_KINDS[kind](rng, base)


def malformed_payloads(
    rng: random.Random | np.random.Generator | int, n: int, bases: Sequence[dict] | None = None
) -> list[bytes]:
    """n varied malformed payloads (every kind appears once n >= a few hundred), for fuzz tests."""
    if isinstance(rng, np.random.Generator):
        rng = random.Random(int(rng.integers(2**63)))
    elif not isinstance(rng, random.Random):
        rng = random.Random(rng)
    bases = list(bases) if bases else [_example_wire(rng) for _ in range(8)]
    return [malformed_payload(rng, rng.choice(bases))[1] for _ in range(n)]


def _example_wire(rng: random.Random) -> dict:
    dur = rng.randint(60_000, 180_000)
    return {
        "schema_version": 1,
        "event_id": f"e-0-{rng.randint(1, 999999):06d}-00001",
        "user_id": f"u{rng.randint(1, 999999):06d}",
        "series_id": "s0007",
        "episode_id": "s0007e003",
        "episode_number": 3,
        "event_type": rng.choice(["play_start", "progress", "complete"]),
        "position_ms": rng.randint(0, dur),
        "duration_ms": dur,
        "event_time": "2026-11-21T14:00:00.123Z",
        "device": "ios",
        "country": "US",
        "session_id": "u000042-17",
        "app_version": "5.2.1",
        "experiment_arm": "none",
    }
