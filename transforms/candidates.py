"""Candidates: change notices -> each user's top-N two-tower list, precomputed into Bigtable.

    notices = raw | ParseNotices()                           # {'notices', 'dead_letter'}
    batches = notices['notices'] | CoalesceNotices()         # one list per bundle, one notice per user
    refreshed = batches | RefreshCandidates(root, target, n) # lists written; 'candidates_refreshed' notices out

Work is per bundle (../shared/ENVIRONMENT.md: per-element round trips cap a DirectRunner job near
260/s): `CoalesceNotices` turns a bundle into ONE element, the users' newest notices, and
`RefreshCandidates` handles it with one Bigtable read of those users' rows, batched query-tower calls,
one batched ScaNN search per call and batched `mutate_rows` writes. Writes are idempotent: the cell
timestamp is the notice's event time (see transforms/candidate_lists.py for why order takes care of
itself).

The DoFn uses the CURRENT model bundle, loaded in `setup()` once per process (`_Models`);
`start_bundle()` looks at CURRENT at most every `reload_check_s` seconds and swaps in a new version (a
version that fails to load is logged, counted and not retried; the old one keeps working).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from cliffhanger.notices import ChangeNotice, NoticeError
from transforms import candidate_lists
from transforms.bigtable_sink import BigtableTarget
from transforms.parse import DEAD_LETTER, DeadLetter, RawEvent

NOTICES = "notices"
NAMESPACE = "candidates"
_FIELDS = ("entity", "id", "reason", "version", "event_time_ms", "country", "device")
_LOG = logging.getLogger(__name__)


class _ParseNoticeFn(beam.DoFn):
    """RawEvent -> ChangeNotice of a user; malformed payloads -> DeadLetter(stage='parse')."""

    def __init__(self):
        self._valid = Metrics.counter(NAMESPACE, "notices_valid")
        self._malformed = Metrics.counter(NAMESPACE, "notices_malformed")
        self._not_user = Metrics.counter(NAMESPACE, "notices_not_user")

    def process(self, raw: RawEvent):
        try:
            notice = ChangeNotice.from_json(raw.payload)
        except NoticeError as err:
            self._malformed.inc()
            head = str(err).split(":", 1)[0]
            field = head if head in _FIELDS else ""
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER, DeadLetter(raw.payload, f"notice: {err}", "parse", field, raw.arrival_ms)
            )
            return
        if notice.entity != "user":  # valid, but lists are per user: counted, not dead-lettered
            self._not_user.inc()
            return
        self._valid.inc()
        yield notice


class ParseNotices(beam.PTransform):
    """RawEvent -> user ChangeNotices (tag `notices`) and DeadLetters (tag `dead_letter`)."""

    def expand(self, raw):
        return raw | beam.ParDo(_ParseNoticeFn()).with_outputs(DEAD_LETTER, main=NOTICES)


class _CoalescePerBundle(beam.DoFn):
    """ChangeNotices -> one tuple per bundle holding each user's newest notice (global window)."""

    def __init__(self):
        self._superseded = Metrics.counter(NAMESPACE, "notices_superseded")

    def start_bundle(self):
        self._pending: list[ChangeNotice] = []

    def process(self, notice: ChangeNotice):
        self._pending.append(notice)

    def finish_bundle(self):
        if not self._pending:
            return
        latest = candidate_lists.coalesce(self._pending)
        self._superseded.inc(len(self._pending) - len(latest))
        ts = Timestamp.of(max(n.event_time_ms for n in latest) / 1000.0)
        self._pending = []
        yield WindowedValue(tuple(latest), max(MIN_TIMESTAMP, min(ts, MAX_TIMESTAMP)), [GlobalWindow()])


class CoalesceNotices(beam.PTransform):
    """ChangeNotices -> tuples of ChangeNotices, at most one per user per tuple (the newest version)."""

    def expand(self, notices):
        return notices | beam.ParDo(_CoalescePerBundle())


class _Models:
    """One bundle root's loaded query tower + index, shared by every DoFn instance in the process: the
    DirectRunner deserializes DoFns and calls setup() per bundle, and loading a SavedModel per bundle
    would cost seconds. `checked` / `refused` throttle and remember CURRENT look-ups (see below)."""

    def __init__(self, root: str):
        self.root = root
        self.current: tuple[str, object, object] | None = None  # (version, encoder, index): swapped as one
        self.checked = float("-inf")
        self.refused: str | None = None
        self.lock = threading.Lock()

    def load(self, version: str) -> None:
        import os

        from models.bundle import load_bundle
        from serving.retrieval import QueryEncoder

        path = self.root if self.root.startswith("gs://") else os.path.join(self.root, "versions", version)
        bundle = load_bundle(path, load_ranker=False)
        if bundle.index is None:
            raise RuntimeError(f"bundle {bundle.version} has no ScaNN index")
        self.current = (bundle.version, QueryEncoder(bundle.load_query_tower()), bundle.index)

    @property
    def version(self) -> str | None:
        return self.current[0] if self.current is not None else None


_MODELS: dict[str, _Models] = {}
_MODELS_LOCK = threading.Lock()


def _models(root: str) -> _Models:
    with _MODELS_LOCK:
        return _MODELS.setdefault(root, _Models(root))


class _RefreshCandidatesFn(beam.DoFn):
    """A batch of user notices -> their lists rewritten in Bigtable; yields a `candidates_refreshed`
    notice per user once the batch's writes succeeded (a failed write fails the bundle: it is retried)."""

    def __init__(
        self,
        bundle_root: str,
        target: BigtableTarget,
        top_n: int,
        reload_check_s: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._root = bundle_root
        self._target = target
        self._top_n = top_n
        self._reload_check_s = reload_check_s
        self._clock = clock
        self._written = Metrics.counter(NAMESPACE, "lists_written")
        self._missing_row = Metrics.counter(NAMESPACE, "user_row_missing")
        self._no_cohort = Metrics.counter(NAMESPACE, "notice_without_cohort")
        self._reloads = Metrics.counter(NAMESPACE, "bundle_reloads")
        self._reload_failed = Metrics.counter(NAMESPACE, "bundle_reload_failed")

    def setup(self):
        from models.bundle import BundleError, current_version
        from serving.feature_store import FeatureStore

        self._table = self._target.open_table()
        self._store = FeatureStore(self._table)
        self._models = _models(self._root)
        with self._models.lock:
            if self._models.version is None:
                version = current_version(self._root)
                if version is None:
                    raise BundleError(f"no published model bundle at {self._root} (no CURRENT)")
                self._models.load(version)
                self._models.checked = self._clock()

    def start_bundle(self):
        """Look at CURRENT at most every reload_check_s; swap in a new version, or keep the old one."""
        m = self._models
        with m.lock:
            now = self._clock()
            if now - m.checked < self._reload_check_s:
                return
            m.checked = now
            from models.bundle import current_version

            version = current_version(self._root)
            if version is None or version in (m.version, m.refused):
                return
            previous = m.version
            try:
                m.load(version)
            except Exception as exc:  # a bad new bundle must not stop the lists: keep the old one, say why
                m.refused = version
                self._reload_failed.inc()
                _LOG.error("candidates: refusing bundle %s (%s); still on %s", version, exc, previous)
                return
        self._reloads.inc()
        _LOG.info("candidates: bundle %s -> %s", previous, version)

    def process(self, batch: tuple[ChangeNotice, ...]):
        from serving import candidates as cand_mod
        from transforms import rowkeys

        notices = candidate_lists.coalesce(batch)  # idempotent; guards callers that skip CoalesceNotices
        rows = self._store.read([rowkeys.user_key(n.id) for n in notices])  # ONE read for the batch
        contexts = []
        for n in notices:
            row = rows.get(rowkeys.user_key(n.id))
            if row is None:
                self._missing_row.inc()  # features not visible yet: a new user's list from context alone
            if not (n.country and n.device):
                self._no_cohort.inc()
            contexts.append(candidate_lists.query_context(n, row.values.get("u") if row is not None else None))
        version, encoder, index = self._models.current  # one consistent bundle for the whole batch
        lists = candidate_lists.top_n(encoder, index, contexts, self._top_n)
        written = cand_mod.write_candidate_lists(
            self._table,
            [
                (cand_mod.user_row(n.id), version, n.event_time_ms, items)
                for n, items in zip(notices, lists, strict=True)
            ],
        )
        self._written.inc(written)
        for n in notices:
            yield candidate_lists.refreshed_notice(n)


class RefreshCandidates(beam.PTransform):
    """Tuples of user notices -> lists in Bigtable (family `cand`, column `two_tower`) -> one
    `candidates_refreshed` ChangeNotice per user."""

    def __init__(self, bundle_root: str, target: BigtableTarget, top_n: int = 200, reload_check_s: float = 30.0):
        super().__init__()
        self._fn = _RefreshCandidatesFn(bundle_root, target, top_n, reload_check_s)

    def expand(self, batches):
        return batches | beam.ParDo(self._fn)
