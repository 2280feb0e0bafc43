"""ComputeFeatures: PlaybackEvents -> per-user, per-episode, per-series and per-cohort features.

Freshness-critical features are kept in per-key state, not event-time windows: on the DirectRunner a
watermark-driven window fires tens of seconds late (../shared/ENVIRONMENT.md), while a stateful DoFn
updates a user's row within the bundle that carries the event.

Throughput: every stage works per bundle, not per element. `_BatchPerBundle` groups a bundle's events
by key so each key's state is read and written once per bundle, and the Bigtable sink writes each
bundle in one `mutate_rows` call (see benchmarks/streaming_features.py for the measured effect).

The stateful DoFns both update state and write their rows (through an injected sink) because Beam
processes a key's bundles one after another: writing from the same DoFn keeps a key's writes in state
order on every runner, so a slower, older write can never land after a newer one.

Notices. User notices (`changes`, topic `feature-changes`) tell the candidates and invalidation jobs
that what we would recommend to a user changed. Episode notices (`item_changes`, topic `item-changes`)
tell the serving nodes' edge replicas (serving/replica.py) that an episode row moved forward: version =
the row's `as_of_ms`, the number the replica compares. They are rate-limited per episode: at most one
per bundle (a bundle's events for a key are folded at once) and at most one per `notice_interval_ms` of
event time (the leading change of a burst is announced at once; what follows within the interval rides
on the next notice, or, if the episode goes quiet, on the replica's periodic reconciliation). They are
emitted in `finish_bundle`, after the bundle's rows are flushed, so a replica that reads the row on a
notice finds at least that version. They go to their own topic, not `feature-changes`: every answer is
tagged e-<episode> for its items, and the invalidation job purges a notice's key, so episode notices
there would purge every cached answer naming a trending episode about once a second.
"""

from __future__ import annotations

import time
from collections import defaultdict

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import userstate
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from cliffhanger import catalog_watch as watch
from cliffhanger.catalog import Catalog
from cliffhanger.catalog_watch import CATALOG_RECHECK_S
from cliffhanger.notices import ChangeNotice
from transforms.bigtable_sink import BigtableSink, BigtableTarget
from transforms.feature_rows import EPISODE, entity_keys, entity_update, new_entity_state, user_updates
from transforms.features import CohortState, ItemState, UserState

ROWS = "rows"
ACCEPTED = "accepted"
CHANGES = "changes"
ITEM_CHANGES = "item_changes"
ITEM_FEATURES = "item_features"  # the reason of an episode notice
NOTICE_INTERVAL_MS = 1_000  # at most one episode notice per episode per second of event time


def _beam_stamp(path: str) -> tuple:
    from apache_beam.io.filesystems import FileSystems

    meta = FileSystems.match([path])[0].metadata_list[0]
    return (meta.last_updated_in_seconds, meta.size_in_bytes)


def _beam_read(path: str) -> bytes:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as handle:
        return handle.read()


def load_catalog(path: str, recheck_s: float = CATALOG_RECHECK_S, clock=time.monotonic) -> Catalog:
    """catalog.json from a local or gs:// path (Beam FileSystems), cached per process and re-read when
    it changes: cliffhanger/catalog_watch.load_catalog (shared with the PyFlink job) on Beam's filesystems."""
    return watch.load_catalog(path, recheck_s, clock, stamp=_beam_stamp, read=_beam_read)


class _BatchPerBundle(beam.DoFn):
    """value -> (key, [values]) once per key per bundle, for every key in keys_fn(value).

    Elements stay in the global window. Keying happens here rather than in a Map before it: on the
    DirectRunner every step costs a fixed overhead per bundle."""

    def __init__(self, keys_fn):
        self._keys_fn = keys_fn

    def start_bundle(self):
        self._batches: dict = defaultdict(list)
        self._max_ts: dict = {}

    def process(self, value, timestamp=beam.DoFn.TimestampParam):
        for key in self._keys_fn(value):
            self._batches[key].append(value)
            if key not in self._max_ts or timestamp > self._max_ts[key]:
                self._max_ts[key] = timestamp

    def finish_bundle(self):
        for key, values in self._batches.items():
            yield WindowedValue((key, values), self._max_ts[key], [GlobalWindow()])
        self._batches.clear()
        self._max_ts.clear()


def _user_key(e) -> tuple[str]:
    return (e.user_id,)


class _SinkingDoFn(beam.DoFn):
    """Base for the stateful stages: owns the optional Bigtable sink and flushes it per bundle."""

    def __init__(self, target: BigtableTarget | None):
        self._target = target
        self._sink: BigtableSink | None = None

    def setup(self):
        if self._target is not None:
            self._sink = BigtableSink(self._target)

    def _emit_rows(self, updates):
        """Rows go to Bigtable when there is a sink, else to the ROWS output (tests, batch)."""
        if self._sink is not None:
            for u in updates:
                self._sink.add(u)
            return
        for u in updates:
            yield beam.pvalue.TaggedOutput(ROWS, u)

    def finish_bundle(self):
        if self._sink is not None:
            self._sink.flush()


def user_change(user_id: str, state: UserState, accepted: list, session_before: str) -> ChangeNotice | None:
    """A notice when what we would recommend to this user changed: an episode finished, a new session.

    It carries the country and device of the latest accepted event (the candidates pipeline's query
    context; the user row does not store them)."""
    if any(e.event_type == "complete" for e in accepted):
        reason = "completed_episode"
    elif state.latest[3] != session_before:
        reason = "new_session"
    else:
        return None
    latest = max(accepted, key=lambda e: (e.event_time_ms, e.event_id))
    return ChangeNotice("user", user_id, reason, state.applied, state.as_of_ms, latest.country, latest.device)


@beam.typehints.with_input_types(tuple[str, list])
class _UpdateUserState(_SinkingDoFn):
    """(user_id, [events]) -> user rows; forwards each event accepted for the first time (dedupe)."""

    STATE = userstate.ReadModifyWriteStateSpec("user", PickleCoder())

    def __init__(self, catalog_path: str, target: BigtableTarget | None):
        super().__init__(target)
        self._catalog_path = catalog_path
        self._duplicates = Metrics.counter("features", "duplicate_events")
        self._applied = Metrics.counter("features", "events_applied")
        self._unknown_series = Metrics.counter("features", "unknown_series")

    def start_bundle(self):
        self._catalog = load_catalog(self._catalog_path)  # a dict read; re-read when catalog.json changes

    def _genres(self, series_id: str) -> tuple[str, ...]:
        try:
            return self._catalog.genres(series_id)
        except KeyError:
            self._unknown_series.inc()
            return ()

    def process(self, kv, state=beam.DoFn.StateParam(STATE)):
        user_id, events = kv
        s = state.read() or UserState()
        session_before = s.latest[3]
        accepted = [e for e in events if s.apply(e, self._genres(e.series_id))]
        if len(accepted) < len(events):
            self._duplicates.inc(len(events) - len(accepted))
        if not accepted:
            return
        state.write(s)
        self._applied.inc(len(accepted))
        yield from self._emit_rows(user_updates(user_id, s, accepted))
        yield from accepted
        notice = user_change(user_id, s, accepted, session_before)
        if notice is not None:
            yield beam.pvalue.TaggedOutput(CHANGES, notice)


def episode_change(
    entity_key: str, state: ItemState | CohortState, notified_ms: int | None, interval_ms: int = NOTICE_INTERVAL_MS
) -> ChangeNotice | None:
    """A notice for the edge replicas when an episode's row moved forward, or None: not an episode, or
    its `as_of_ms` is less than `interval_ms` past the last announced one (`notified_ms`; None = never)."""
    kind, _, episode_id = entity_key.partition("|")
    if kind != EPISODE:
        return None
    if notified_ms is not None and state.as_of_ms < notified_ms + max(1, interval_ms):
        return None
    return ChangeNotice("episode", episode_id, ITEM_FEATURES, state.as_of_ms, state.as_of_ms)


@beam.typehints.with_input_types(tuple[str, list])
class _UpdateEntityState(_SinkingDoFn):
    """(entity_key, [accepted events]) -> the episode / series / cohort row; episode notices (tag
    ITEM_CHANGES) emitted after the bundle's rows are flushed."""

    STATE = userstate.ReadModifyWriteStateSpec("entity", PickleCoder())
    NOTIFIED = userstate.ReadModifyWriteStateSpec("notified", VarIntCoder())  # as_of_ms last announced

    def __init__(self, target: BigtableTarget | None, notice_interval_ms: int = NOTICE_INTERVAL_MS):
        super().__init__(target)
        self._interval_ms = notice_interval_ms
        self._notices_out = Metrics.counter("features", "episode_notices")

    def start_bundle(self):
        self._notices: dict[str, tuple[ChangeNotice, Timestamp]] = {}  # episode -> its newest notice

    def process(
        self,
        kv,
        state=beam.DoFn.StateParam(STATE),
        notified=beam.DoFn.StateParam(NOTIFIED),
        timestamp=beam.DoFn.TimestampParam,
    ):
        entity_key, events = kv
        s = state.read() or new_entity_state(entity_key)
        changed = [e for e in events if s.apply(e)]
        if not changed:
            return
        state.write(s)
        yield from self._emit_rows([entity_update(entity_key, s)])
        if entity_key.startswith(EPISODE + "|"):
            notice = episode_change(entity_key, s, notified.read(), self._interval_ms)
            if notice is not None:
                notified.write(notice.version)
                held = self._notices.get(notice.id)
                if held is None or notice.version > held[0].version:
                    self._notices[notice.id] = (notice, timestamp)

    def finish_bundle(self):
        super().finish_bundle()  # rows first: a notice never announces a row that is not written yet
        self._notices_out.inc(len(self._notices))
        for notice, ts in self._notices.values():
            yield beam.pvalue.TaggedOutput(ITEM_CHANGES, WindowedValue(notice, ts, [GlobalWindow()]))
        self._notices = {}


class ComputeFeatures(beam.PTransform):
    """Timestamped PlaybackEvents -> {'accepted': deduplicated events, 'rows': RowUpdates,
    'changes': user ChangeNotices (candidates, invalidation), 'item_changes': episode ChangeNotices
    (the serving nodes' edge replicas)}.

    With a `target`, rows are written to Bigtable inside the stateful stages and `rows` is empty.
    """

    def __init__(
        self, catalog_path: str, target: BigtableTarget | None = None, notice_interval_ms: int = NOTICE_INTERVAL_MS
    ):
        super().__init__()
        self._catalog_path = catalog_path
        self._target = target
        self._notice_interval_ms = notice_interval_ms

    def expand(self, events):
        users = (
            events
            | "BatchPerUser" >> beam.ParDo(_BatchPerBundle(_user_key))
            | "UserFeatures"
            >> beam.ParDo(_UpdateUserState(self._catalog_path, self._target)).with_outputs(ROWS, CHANGES, main=ACCEPTED)
        )
        entities = (
            users[ACCEPTED]
            | "BatchPerEntity" >> beam.ParDo(_BatchPerBundle(entity_keys))
            | "EntityFeatures"
            >> beam.ParDo(_UpdateEntityState(self._target, self._notice_interval_ms)).with_outputs(
                ROWS, ITEM_CHANGES, main="unused"
            )
        )
        rows = (users[ROWS], entities[ROWS]) | "AllRows" >> beam.Flatten()
        return {ACCEPTED: users[ACCEPTED], ROWS: rows, CHANGES: users[CHANGES], ITEM_CHANGES: entities[ITEM_CHANGES]}


class PublishNotices(beam.PTransform):
    """ChangeNotices -> a Pub/Sub topic (JSON, one notice per message)."""

    def __init__(self, topic_path: str):
        super().__init__()
        self._topic_path = topic_path

    def expand(self, notices):
        return (
            notices | "ToJson" >> beam.Map(lambda n: n.to_json()) | "Publish" >> beam.io.WriteToPubSub(self._topic_path)
        )
