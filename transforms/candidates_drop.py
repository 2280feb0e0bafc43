"""Candidates after an episode drop: a `series:drop` catalog event -> the viewers waiting for that
episode -> one user notice each (reason `new_episode`) on `candidate-changes` -> the invalidation job
purges their cached answers, and their next request is computed with the new episode.

    drops = raw | ParseDrops()                      # {'drops', 'dead_letter'}
    notices = drops['drops'] | WaitingViewers(target)

What "the affected candidate lists are updated" means here, and why no stored list is rewritten:
  * A precomputed list (family `cand`) holds episodes of the bundle's index. The new episode has no
    embedding until the next retrain, so the query tower + index would return the same list again:
    rewriting it would cost a read, a tower call and a write per viewer and change nothing.
  * Serving does not show listed episodes as they are. It maps every candidate to the viewer's ENTRY
    episode of its series (serving/rules.py: where they are, else the episode after the last one they
    completed) and builds its continue-watching source from `cw`, both against its live catalog, which
    the drop itself updates (serving/catalog_feed.py). So once serving has the drop, a series in a
    viewer's list or continue-watching leads to the new episode: the lists' effective content moved.
  * What stays stale is the ANSWER cached for a viewer (in process and at the edge) that does not name
    the series, so the drop's s-<series> purge misses it: a viewer who had completed the last episode
    (the series had left their answers: nothing in it to watch) is exactly such a viewer, and exactly
    who is waiting for the new episode. Their notice makes the invalidation job purge u-<user>.

Waiting viewers: `cw[series]` says the latest playback in the series completed episode n - 1 or later
(n = the dropped episode's number, from the drop's optional `episode` object, serving/live_catalog.py);
when the event does not carry the number, every viewer whose latest playback there was a completion
(a superset: a few extra purges, never a missed viewer).

Finding them: one Bigtable scan over the user rows, restricted on the server to the series' single
`cw` column (rows without it are not returned). That reads O(users) on the server per drop: fine for
drops (a handful per series per day) at this scale; where it is not, a per-series viewer index written
by the features job replaces the scan and nothing else changes.

Notices: entity `user`, reason `new_episode`, version = the catalog's revision of the series (it
orders drops, not the user's other notices: cliffhanger/notices.py), event time = the drop's. A
redelivered drop repeats the notices, and so the purges, which are idempotent.
Catalog payloads that cannot be parsed go to the dead-letter output (stage `parse`, reason prefixed
`catalog:`); other event types are counted and skipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from cliffhanger.catalog_events import SERIES_DROP, CatalogEventError
from cliffhanger.notices import ChangeNotice
from transforms import rowkeys
from transforms.bigtable_sink import BigtableTarget
from transforms.parse import DEAD_LETTER, DeadLetter, RawEvent

DROPS = "drops"
NEW_EPISODE = "new_episode"
NAMESPACE = "candidates"
_USER_ROWS = (b"u#", b"u$")  # every user row key starts with u# (transforms/rowkeys.py)


@dataclasses.dataclass(frozen=True, slots=True)
class Drop:
    series_id: str
    episode_id: str
    episode_number: int | None  # None when the event did not carry the episode's details
    version: int
    event_time_ms: int


def waiting(cw_state: Mapping[str, Any], episode_number: int | None) -> bool:
    """Is this viewer (their `cw` state in the series) waiting for the dropped episode?"""
    if not cw_state.get("completed"):
        return False
    if episode_number is None:
        return True
    number = cw_state.get("episode_number")
    return isinstance(number, int) and number >= episode_number - 1


def new_episode_notice(user_id: str, drop: Drop) -> ChangeNotice:
    return ChangeNotice("user", user_id, NEW_EPISODE, drop.version, drop.event_time_ms)


def waiting_viewers(table: Any, drop: Drop) -> Iterator[str]:
    """User ids whose `cw` cell for the drop's series says they wait for it (one filtered scan)."""
    from google.cloud.bigtable.row_filters import CellsColumnLimitFilter, ColumnRangeFilter, RowFilterChain
    from google.cloud.bigtable.row_set import RowSet

    from transforms.features import decode

    column = drop.series_id.encode()
    only_cw = ColumnRangeFilter("cw", column, column, inclusive_start=True, inclusive_end=True)
    rows = RowSet()
    rows.add_row_range_from_keys(start_key=_USER_ROWS[0], end_key=_USER_ROWS[1])
    for row in table.read_rows(row_set=rows, filter_=RowFilterChain([only_cw, CellsColumnLimitFilter(1)])):
        cells = row.cells.get("cw", {}).get(column)
        if cells and waiting(decode(cells[0].value), drop.episode_number):
            yield rowkeys.parse_key(row.row_key)[1]


class _ParseDropFn(beam.DoFn):
    """RawEvent (a catalog event) -> Drop for `series:drop`; other types skipped; bad payloads -> DeadLetter."""

    def __init__(self):
        self._drops = Metrics.counter(NAMESPACE, "drops")
        self._other = Metrics.counter(NAMESPACE, "catalog_events_not_drops")
        self._malformed = Metrics.counter(NAMESPACE, "catalog_events_malformed")

    def process(self, raw: RawEvent):
        from serving.live_catalog import parse_change

        try:
            change = parse_change(raw.payload)
        except CatalogEventError as err:
            self._malformed.inc()
            dead = DeadLetter(raw.payload, f"catalog: {err}", "parse", err.field, raw.arrival_ms)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead)
            return
        event = change.event
        if event.type != SERIES_DROP:
            self._other.inc()
            return
        self._drops.inc()
        number = change.episode.episode_number if change.episode is not None else None
        yield Drop(event.series_id, event.episode_id, number, event.version, event.event_time_ms)


class ParseDrops(beam.PTransform):
    """RawEvent (catalog events) -> Drop (tag `drops`) and DeadLetter (tag `dead_letter`)."""

    def expand(self, raw):
        return raw | beam.ParDo(_ParseDropFn()).with_outputs(DEAD_LETTER, main=DROPS)


class _WaitingViewersFn(beam.DoFn):
    def __init__(self, target: BigtableTarget):
        self._target = target
        self._found = Metrics.counter(NAMESPACE, "viewers_waiting")

    def setup(self):
        self._table = self._target.open_table()

    def process(self, drop: Drop):
        for user_id in waiting_viewers(self._table, drop):
            self._found.inc()
            yield new_episode_notice(user_id, drop)


class WaitingViewers(beam.PTransform):
    """Drop -> a `new_episode` user ChangeNotice per viewer waiting for the dropped episode."""

    def __init__(self, target: BigtableTarget):
        super().__init__()
        self._target = target

    def expand(self, drops):
        return drops | beam.ParDo(_WaitingViewersFn(self._target))
