"""Parse and validate raw payloads into PlaybackEvents; bad ones go to a tagged dead-letter output.

Input elements are `RawEvent`s: the exact payload bytes and their arrival time (the Pub/Sub publish
time in streaming, the log's `arrival_ms` in batch), so the lateness rule is the same everywhere. The
accept / refuse decision and the DeadLetter record are cliffhanger/dead_letters.py (Beam-free: the
PyFlink job uses the same).
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue

from cliffhanger.dead_letters import DeadLetter, classify
from cliffhanger.events import PlaybackEvent

__all__ = ["DEAD_LETTER", "EVENTS", "DeadLetter", "ParseEvents", "RawEvent", "from_pubsub", "with_event_time"]

EVENTS = "events"
DEAD_LETTER = "dead_letter"


@dataclasses.dataclass(frozen=True, slots=True)
class RawEvent:
    payload: bytes
    arrival_ms: int


def from_pubsub(message) -> RawEvent:
    """A Beam PubsubMessage (read with_attributes=True) -> RawEvent stamped with its publish time."""
    publish_time = message.publish_time
    arrival_ms = int(publish_time.timestamp() * 1000) if publish_time is not None else 0
    return RawEvent(message.data, arrival_ms)


class _ParseFn(beam.DoFn):
    def __init__(self, allowed_lateness_s: int, max_clock_skew_s: int):
        self._lateness_ms = allowed_lateness_s * 1000
        self._skew_ms = max_clock_skew_s * 1000
        self._valid = Metrics.counter("parse", "valid")
        self._malformed = Metrics.counter("parse", "malformed")
        self._late = Metrics.counter("parse", "too_late")
        self._future = Metrics.counter("parse", "too_far_in_future")

    def process(self, raw):
        if not isinstance(raw, RawEvent):
            raw = from_pubsub(raw)  # a PubsubMessage straight from ReadFromPubSub: one step fewer per bundle
        result = classify(raw.payload, raw.arrival_ms, self._lateness_ms, self._skew_ms)
        if isinstance(result, DeadLetter):
            if result.stage == "parse":
                self._malformed.inc()
            else:
                (self._late if result.reason.startswith("late") else self._future).inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, result)
            return
        self._valid.inc()
        yield result


class ParseEvents(beam.PTransform):
    """RawEvent or PubsubMessage -> PlaybackEvent (tag `events`) and DeadLetter (tag `dead_letter`)."""

    def __init__(self, allowed_lateness_s: int, max_clock_skew_s: int):
        super().__init__()
        self._allowed_lateness_s = allowed_lateness_s
        self._max_clock_skew_s = max_clock_skew_s

    def expand(self, raw):
        return raw | beam.ParDo(_ParseFn(self._allowed_lateness_s, self._max_clock_skew_s)).with_outputs(
            DEAD_LETTER, main=EVENTS
        )


def with_event_time(event: PlaybackEvent) -> TimestampedValue:
    """The element timestamp of an event is its event time (seconds)."""
    return TimestampedValue(event, event.event_time_ms / 1000.0)


class WriteDeadLetters(beam.PTransform):
    """DeadLetter records -> a Pub/Sub topic, payload as-is, reason / stage / field as attributes."""

    def __init__(self, topic_path: str):
        super().__init__()
        self._topic_path = topic_path

    def expand(self, dead_letters):
        return (
            dead_letters
            | "ToMessage" >> beam.Map(lambda d: d.to_pubsub())
            | "Publish" >> beam.io.WriteToPubSub(self._topic_path, with_attributes=True)
        )
