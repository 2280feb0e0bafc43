"""The one event contract: client playback events, versioned, JSON on the wire.

Wire format (one JSON object per Pub/Sub message, UTF-8)::

    {"schema_version": 1, "event_id": "e-8f2c", "user_id": "u000042", "series_id": "s0007",
     "episode_id": "s0007e03", "episode_number": 3, "event_type": "complete",
     "position_ms": 94000, "duration_ms": 94000, "event_time": "2026-11-21T14:00:00.123Z",
     "device": "ios", "country": "US", "session_id": "u000042-17", "app_version": "5.2.1",
     "experiment_arm": "control"}

Compatibility rule (how the schema may evolve):
  * Within a major version, changes are additive only: a new OPTIONAL field with a default.
    Consumers ignore fields they do not know, so old consumers read new producers' events.
  * Removing or renaming a field, changing its type or meaning, or making an optional field
    required is a new major version (`schema_version`). Consumers state the majors they accept
    (`SUPPORTED_VERSIONS`); events of any other version are dead-lettered with the reason, never
    guessed at. Producers keep emitting the old major until every consumer accepts the new one.

Validation names the offending field: `EventError.field` is the JSON field name.
This module imports nothing beyond the standard library: Beam, PyFlink and serving all use it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

EVENT_TYPES = (
    "impression",
    "play_start",
    "progress",
    "complete",
    "skip",
    "like",
    "share",
    "hover",  # hover-then-skip: the viewer previewed the tile and moved on without playing
)
DEVICES = ("ios", "android", "web", "tv")

MAX_ID_LEN = 128
MAX_DURATION_MS = 60 * 60 * 1000
_ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]+$")
_COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class EventError(ValueError):
    """A payload that is not a valid event. `field` names the offending JSON field ('' = whole payload)."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


@dataclasses.dataclass(frozen=True, slots=True)
class PlaybackEvent:
    event_id: str
    user_id: str
    series_id: str
    episode_id: str
    episode_number: int
    event_type: str
    position_ms: int
    duration_ms: int
    event_time_ms: int  # epoch milliseconds, UTC
    device: str
    country: str
    session_id: str
    app_version: str
    experiment_arm: str = "none"
    schema_version: int = SCHEMA_VERSION

    @property
    def cohort(self) -> tuple[str, str]:
        return (self.country, self.device)

    def to_wire(self) -> dict:
        """The JSON-ready dict of this event, exactly the wire format."""
        out = dataclasses.asdict(self)
        out["event_time"] = format_time(out.pop("event_time_ms"))
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_wire(), separators=(",", ":")).encode("utf-8")


def format_time(epoch_ms: int) -> str:
    """RFC 3339 UTC with milliseconds: 2026-11-21T14:00:00.123Z."""
    t = _EPOCH + dt.timedelta(milliseconds=epoch_ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def parse_time(field: str, value: object) -> int:
    if not isinstance(value, str):
        raise EventError(field, f"must be an RFC 3339 string, got {type(value).__name__}")
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise EventError(field, f"is not an RFC 3339 timestamp: {value[:40]!r}") from None
    if t.tzinfo is None:
        raise EventError(field, "must carry a timezone (e.g. a trailing Z)")
    return (t - _EPOCH) // dt.timedelta(milliseconds=1)


def _str(obj: dict, field: str, *, pattern: re.Pattern | None = _ID_RE, required: bool = True) -> str:
    value = obj.get(field)
    if value is None:
        if required:
            raise EventError(field, "is required")
        return ""
    if not isinstance(value, str):
        raise EventError(field, f"must be a string, got {type(value).__name__}")
    if not value:
        raise EventError(field, "must not be empty")
    if len(value) > MAX_ID_LEN:
        raise EventError(field, f"is longer than {MAX_ID_LEN} characters")
    if pattern is not None and not pattern.match(value):
        raise EventError(field, f"has characters outside {pattern.pattern}: {value[:40]!r}")
    return value


def _int(obj: dict, field: str, lo: int, hi: int) -> int:
    value = obj.get(field)
    if value is None:
        raise EventError(field, "is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventError(field, f"must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise EventError(field, f"must be in [{lo}, {hi}], got {value}")
    return value


def _choice(obj: dict, field: str, choices: tuple[str, ...]) -> str:
    value = obj.get(field)
    if value is None:
        raise EventError(field, "is required")
    if value not in choices:
        raise EventError(field, f"must be one of {', '.join(choices)}; got {str(value)[:40]!r}")
    return value


def validate(obj: object) -> PlaybackEvent:
    """A decoded JSON value -> PlaybackEvent, or EventError naming the first bad field."""
    if not isinstance(obj, dict):
        raise EventError("", f"payload must be a JSON object, got {type(obj).__name__}")
    version = obj.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise EventError("schema_version", "is required and must be an integer")
    if version not in SUPPORTED_VERSIONS:
        raise EventError(
            "schema_version", f"unsupported version {version}; this consumer reads {sorted(SUPPORTED_VERSIONS)}"
        )
    event_id = _str(obj, "event_id")
    user_id = _str(obj, "user_id")
    series_id = _str(obj, "series_id")
    episode_id = _str(obj, "episode_id")
    episode_number = _int(obj, "episode_number", 1, 10_000)
    event_type = _choice(obj, "event_type", EVENT_TYPES)
    duration = _int(obj, "duration_ms", 1, MAX_DURATION_MS)
    return PlaybackEvent(
        event_id=event_id,
        user_id=user_id,
        series_id=series_id,
        episode_id=episode_id,
        episode_number=episode_number,
        event_type=event_type,
        position_ms=_int(obj, "position_ms", 0, duration),
        duration_ms=duration,
        event_time_ms=parse_time("event_time", obj.get("event_time")),
        device=_choice(obj, "device", DEVICES),
        country=_str(obj, "country", pattern=_COUNTRY_RE),
        session_id=_str(obj, "session_id"),
        app_version=_str(obj, "app_version"),
        experiment_arm=_str(obj, "experiment_arm", required=False) or "none",
        schema_version=version,
    )


def parse_event(payload: bytes | str) -> PlaybackEvent:
    """Raw wire bytes -> PlaybackEvent, or EventError naming the offending field."""
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise EventError("", "payload is not UTF-8") from None
    try:
        obj = json.loads(payload)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise EventError("", f"payload is not JSON: {str(exc)[:80]}") from None
    return validate(obj)


def timeliness_error(event_time_ms: int, arrival_ms: int, allowed_lateness_ms: int, max_skew_ms: int) -> str | None:
    """Why an event is too late or too far in the future to use, or None if it is timely.

    Lateness is measured against the event's arrival (the Pub/Sub publish time, or the `arrival`
    field of an exported log), never against a wall clock, so streaming, batch and Flink agree.
    """
    late_by = arrival_ms - event_time_ms
    if late_by > allowed_lateness_ms:
        return f"late: arrived {late_by / 1000:.1f}s after event_time, allowed lateness is {allowed_lateness_ms / 1000:.0f}s"
    if -late_by > max_skew_ms:
        return (
            f"future: event_time is {-late_by / 1000:.1f}s after arrival, max clock skew is {max_skew_ms / 1000:.0f}s"
        )
    return None
