"""What every job does with a raw payload: a timely PlaybackEvent, or a DeadLetter saying why not.

Beam-free (the Beam parse step, transforms/parse.py, and the PyFlink job, pipelines/flink_features.py,
both call `classify`), so a payload is accepted or refused for the same reason on every runner.

    classify(payload, arrival_ms, lateness_ms, skew_ms) -> PlaybackEvent | DeadLetter

Stages: `parse` (not a valid event; `field` names the offending JSON field, '' when the payload as a
whole is bad) and `timeliness` (too late or too far in the future against its arrival time); readers of
event logs add `record` for a line that is not a log record at all.
"""

from __future__ import annotations

import base64
import dataclasses
import json

from cliffhanger.events import EventError, PlaybackEvent, parse_event, timeliness_error


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be used, with the raw payload so nothing is lost."""

    payload: bytes
    reason: str
    stage: str  # record | parse | timeliness
    field: str  # the offending JSON field, '' when the payload as a whole is bad
    arrival_ms: int

    def to_pubsub(self):
        """A Beam PubsubMessage for the dead-letter topic (Beam imported only here)."""
        from apache_beam.io.gcp.pubsub import PubsubMessage

        attrs = {
            "reason": self.reason[:1024],
            "stage": self.stage,
            "field": self.field,
            "arrival_ms": str(self.arrival_ms),
        }
        return PubsubMessage(self.payload, attrs)

    def to_json(self) -> str:
        """A JSON line for file sinks: the payload base64-encoded, it may not be UTF-8."""
        record = dataclasses.asdict(self)
        record["payload_b64"] = base64.b64encode(record.pop("payload")).decode()
        return json.dumps(record, sort_keys=True)


def classify(payload: bytes, arrival_ms: int, lateness_ms: int, skew_ms: int) -> PlaybackEvent | DeadLetter:
    """The event, or why it is refused: malformed (`parse`) or outside the lateness / skew bounds (`timeliness`)."""
    try:
        event = parse_event(payload)
    except EventError as err:
        return DeadLetter(payload, str(err), "parse", err.field, arrival_ms)
    problem = timeliness_error(event.event_time_ms, arrival_ms, lateness_ms, skew_ms)
    if problem is not None:
        return DeadLetter(payload, problem, "timeliness", "event_time", arrival_ms)
    return event
