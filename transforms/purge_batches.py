"""Change notices and catalog events -> surrogate keys -> one deduplicated batch per target per ~1 s.

Dedupe and batching use a processing-time trigger, not event-time windows: on the DirectRunner a
watermark-driven window fires tens of seconds late (../shared/ENVIRONMENT.md), while
`Repeatedly(AfterProcessingTime(1))` over the global window fires ~1 s after the first key of a pane
arrived, on every runner, and TestStream drives it with `advance_processing_time`.

Before the GroupByKey each bundle is reduced to one set of keys per target (`_DedupePerBundle`), so
the grouping handles a few elements per bundle instead of one per notice: a burst of thousands of
notices for the same users costs the same as a handful.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.trigger import AccumulationMode, AfterProcessingTime, Repeatedly
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from cliffhanger.catalog_events import CatalogEventError, parse_catalog_event
from cliffhanger.edge_keys import secret_from_env
from cliffhanger.notices import ChangeNotice, NoticeError
from cliffhanger.purge.keys import catalog_keys, notice_keys
from transforms.parse import DEAD_LETTER, DeadLetter, RawEvent

KEYS = "keys"
NOTICE, CATALOG = "notice", "catalog"
NAMESPACE = "invalidation"
_NOTICE_FIELDS = ("entity", "id", "reason", "version", "event_time_ms")


@dataclasses.dataclass(frozen=True, slots=True)
class PurgeBatch:
    """The distinct surrogate keys to purge at one target, sorted (deterministic requests)."""

    target: str
    keys: tuple[str, ...]


def _notice_field(err: NoticeError) -> str:
    head = str(err).split(":", 1)[0]
    return head if head in _NOTICE_FIELDS else ""


class _ParseChangeFn(beam.DoFn):
    """RawEvent -> its surrogate keys; unusable payloads -> DeadLetter(stage='parse')."""

    def __init__(self, source: str):
        if source not in (NOTICE, CATALOG):
            raise ValueError(f"source must be {NOTICE!r} or {CATALOG!r}, got {source!r}")
        self._source = source
        self._valid = Metrics.counter(NAMESPACE, f"{source}_valid")
        self._malformed = Metrics.counter(NAMESPACE, f"{source}_malformed")
        self._secret: bytes | None = None

    def setup(self):
        if self._source == NOTICE:
            self._secret = secret_from_env()  # user keys are keyed hashes; fail at start, not per element

    def process(self, raw: RawEvent):
        try:
            if self._source == NOTICE:
                keys = notice_keys(ChangeNotice.from_json(raw.payload), self._secret)
            else:
                keys = catalog_keys(parse_catalog_event(raw.payload))
        except NoticeError as err:
            yield self._dead(raw, err, _notice_field(err))
            return
        except CatalogEventError as err:
            yield self._dead(raw, err, err.field)
            return
        self._valid.inc()
        yield from keys

    def _dead(self, raw: RawEvent, err: Exception, field: str):
        self._malformed.inc()
        reason = f"{self._source}: {err}"
        return beam.pvalue.TaggedOutput(DEAD_LETTER, DeadLetter(raw.payload, reason, "parse", field, raw.arrival_ms))


class ParseChanges(beam.PTransform):
    """RawEvent (a change notice, or a catalog event) -> surrogate keys (tag `keys`) and DeadLetter
    (tag `dead_letter`, stage `parse`, the reason prefixed with the source)."""

    def __init__(self, source: str):
        super().__init__()
        self._source = source

    def expand(self, raw):
        return raw | beam.ParDo(_ParseChangeFn(self._source)).with_outputs(DEAD_LETTER, main=KEYS)


class _DedupePerBundle(beam.DoFn):
    """surrogate key -> (target, sorted distinct keys) once per target per bundle, in the global window."""

    def __init__(self, targets: tuple[str, ...]):
        self._targets = targets
        self._keys_in = Metrics.counter(NAMESPACE, "keys_in")

    def start_bundle(self):
        self._keys: set[str] = set()
        self._max_ts = MIN_TIMESTAMP

    def process(self, key: str, timestamp=beam.DoFn.TimestampParam):
        self._keys_in.inc()
        self._keys.add(key)
        self._max_ts = max(self._max_ts, timestamp)

    def finish_bundle(self):
        if self._keys:
            keys = tuple(sorted(self._keys))
            for target in self._targets:
                yield WindowedValue((target, keys), self._max_ts, [GlobalWindow()])
        self._keys.clear()


class _ToBatch(beam.DoFn):
    def __init__(self):
        self._batches = Metrics.counter(NAMESPACE, "batches")
        self._keys = Metrics.distribution(NAMESPACE, "keys_per_batch")

    def process(self, kv):
        target, key_sets = kv
        keys = tuple(sorted({k for keys in key_sets for k in keys}))
        self._batches.inc()
        self._keys.update(len(keys))
        yield PurgeBatch(target, keys)


class BatchPurges(beam.PTransform):
    """Surrogate keys -> PurgeBatch per target, each key at most once per batch window."""

    def __init__(self, targets: tuple[str, ...], window_s: int = 1):
        super().__init__()
        if not targets:
            raise ValueError("BatchPurges needs at least one target")
        if not isinstance(window_s, int) or window_s < 1:
            # AfterProcessingTime's portable form keeps whole seconds (delay_millis // 1000 on the way back)
            raise ValueError(f"window_s must be a whole number of seconds >= 1, got {window_s!r}")
        self._targets = tuple(targets)
        self._window_s = window_s

    def expand(self, keys):
        return (
            keys
            | "DedupePerBundle" >> beam.ParDo(_DedupePerBundle(self._targets))
            # Global window, a pane ~window_s after its first key, panes discarded once sent:
            # fires on processing time, so it is as prompt on the DirectRunner as on Dataflow.
            | "EverySecond"
            >> beam.WindowInto(
                GlobalWindows(),
                trigger=Repeatedly(AfterProcessingTime(self._window_s)),
                accumulation_mode=AccumulationMode.DISCARDING,
            )
            | "GroupByTarget" >> beam.GroupByKey()
            | "ToBatch" >> beam.ParDo(_ToBatch())
        )
