"""Read an exported event log (JSON Lines, `cliffhanger.synth.log` format) into RawEvents, in batch.

Each line is `{"arrival_ms": int, "data": str}` or `{"arrival_ms": int, "data_b64": str}` (an export of
the events topic: publish time + payload). Lines that are not such records go to the dead-letter
output with the reason; they are counted, never dropped silently. The element timestamp of each
RawEvent is its arrival time, as a Pub/Sub read stamps the publish time in streaming, so
`ParseEvents` outputs keep their arrival time (`with_arrival`).

`check_event_log` / `check_catalog` run before a pipeline is built: a missing or empty file, or one
that is not what it claims, fails fast with an error naming the file instead of a pipeline that
dead-letters every line.
"""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from cliffhanger.catalog import Catalog
from cliffhanger.synth.log import LogError, decode_line  # the one decoder of the log format
from transforms.parse import DEAD_LETTER, DeadLetter, RawEvent

RECORDS = "records"
_PROBE_LINES = 5


class InputError(ValueError):
    """Unusable input for a batch job; the message names the offending file."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}")


def check_event_log(path: str) -> None:
    """Fail fast unless `path` exists, is non-empty and its first lines are event-log records."""
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        raise InputError(path, "event log not found")
    with FileSystems.open(path) as handle:
        head = handle.read(1 << 16)
    lines = [line for line in head.split(b"\n")[:_PROBE_LINES] if line.strip()]
    if not lines:
        raise InputError(path, "event log is empty (expected JSON lines of {arrival_ms, data|data_b64})")
    try:
        for n, line in enumerate(lines, 1):
            decode_line(line.decode("utf-8"), f"line {n}")
    except (LogError, UnicodeDecodeError) as exc:
        raise InputError(
            path, f"not an event log (JSON lines of {{arrival_ms, data|data_b64}} records): {exc}"
        ) from None


def check_catalog(path: str) -> Catalog:
    """Load catalog.json (local or gs://) or fail with an error naming it."""
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        raise InputError(path, "catalog not found")
    try:
        with FileSystems.open(path) as handle:
            catalog = Catalog.from_dict(json.loads(handle.read()))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise InputError(path, f"not a catalog.json: {type(exc).__name__}: {exc}") from None
    if not len(catalog):
        raise InputError(path, "catalog has no series")
    return catalog


def record_to_raw(line: bytes, where: str = "event log") -> RawEvent:
    """One log line -> RawEvent (payload bytes + arrival time); LogError / UnicodeDecodeError if unreadable."""
    record = decode_line(line.decode("utf-8"), where)
    return RawEvent(record.payload, record.arrival_ms)


class _DecodeRecordFn(beam.DoFn):
    def __init__(self) -> None:
        self._records = Metrics.counter("event_log", "records")
        self._bad = Metrics.counter("event_log", "bad_records")

    def process(self, line: bytes):
        if not line.strip():
            return
        try:
            raw = record_to_raw(line)
        except (LogError, UnicodeDecodeError) as exc:
            self._bad.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, DeadLetter(line, str(exc), "record", "", 0))
            return
        self._records.inc()
        yield TimestampedValue(raw, Timestamp(micros=raw.arrival_ms * 1000))


class ReadEventLog(beam.PTransform):
    """PBegin -> {'records': RawEvent timestamped with its arrival, 'dead_letter': DeadLetter}."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, pbegin):
        return (
            pbegin
            | "ReadLines" >> beam.io.ReadFromText(self._path, coder=beam.coders.BytesCoder())
            | "DecodeRecords" >> beam.ParDo(_DecodeRecordFn()).with_outputs(DEAD_LETTER, main=RECORDS)
        )


def with_arrival(event, timestamp=beam.DoFn.TimestampParam) -> tuple[int, object]:
    """A parsed event (element timestamp = arrival, see ReadEventLog) -> (arrival_ms, event)."""
    return (timestamp.micros // 1000, event)
