"""From feature state to Bigtable row updates: which entity keys an event touches, and what is written.

Pure Python (no Beam), shared by the streaming pipeline, the batch pipeline and PyFlink.

Cell timestamps are derived from event time, never from the clock (idempotent writes): aggregates are
stamped with the state's `as_of_ms`, continue-watching cells with the playback event's time, completed
episodes with the completion time. Replaying an event rewrites identical cells at identical timestamps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from cliffhanger.events import PlaybackEvent
from transforms import rowkeys
from transforms.features import CohortState, ItemState, UserState, encode

EPISODE, SERIES, COHORT = "e", "s", "c"


@dataclasses.dataclass(frozen=True, slots=True)
class RowUpdate:
    """One Bigtable row mutation: set `cells` in `family` at `timestamp_ms`.

    `seq` is the state's applied-event count: for the same row and family, a higher seq is newer.
    """

    row_key: bytes
    family: str
    cells: tuple[tuple[str, bytes], ...]
    timestamp_ms: int
    seq: int

    def decoded(self) -> dict[str, object]:
        from transforms.features import decode

        return {col: decode(val) for col, val in self.cells}


def _cells(features: dict[str, object]) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, encode(value)) for name, value in sorted(features.items()))


def user_updates(user_id: str, state: UserState, events: Iterable[PlaybackEvent]) -> list[RowUpdate]:
    """Rows to write after `events` (just accepted) were folded into the user's `state`."""
    key = rowkeys.user_key(user_id)
    out = [RowUpdate(key, "u", _cells(state.features()), state.as_of_ms, state.applied)]
    touched = sorted({e.series_id for e in events if e.event_type in ("play_start", "progress", "complete", "skip")})
    for series_id in touched:
        cw = state.continue_watching(series_id)
        if cw is not None:
            out.append(RowUpdate(key, "cw", ((series_id, encode(cw)),), cw["updated_ms"], state.applied))
    for e in events:
        if e.event_type == "complete":
            out.append(
                RowUpdate(key, "done", ((e.episode_id, encode(e.event_time_ms)),), e.event_time_ms, state.applied)
            )
    return out


def entity_keys(e: PlaybackEvent) -> list[str]:
    """The non-user aggregation keys an event updates: its episode, its series, its cohort."""
    return [f"{EPISODE}|{e.episode_id}", f"{SERIES}|{e.series_id}", f"{COHORT}|{e.country}|{e.device}"]


def new_entity_state(entity_key: str) -> ItemState | CohortState:
    return CohortState() if entity_key.startswith(COHORT + "|") else ItemState()


def entity_row_key(entity_key: str) -> bytes:
    kind, _, rest = entity_key.partition("|")
    if kind == EPISODE:
        return rowkeys.episode_key(rest)
    if kind == SERIES:
        return rowkeys.series_key(rest)
    if kind == COHORT:
        country, _, device = rest.partition("|")
        return rowkeys.cohort_key(country, device)
    raise ValueError(f"unknown entity key kind in {entity_key!r}")


def entity_update(entity_key: str, state: ItemState | CohortState) -> RowUpdate:
    return RowUpdate(entity_row_key(entity_key), "i", _cells(state.features()), state.as_of_ms, state.applied)


def latest_per_cell(updates: Iterable[RowUpdate]) -> dict[tuple[bytes, str, str], tuple[int, int, bytes]]:
    """Collapse updates to the value a Bigtable reader sees per (row, family, column) once all are
    written: the cell with the highest timestamp, and among equal timestamps the last write (highest
    seq). Returns (timestamp_ms, seq, value)."""
    out: dict[tuple[bytes, str, str], tuple[int, int, bytes]] = {}
    for u in updates:
        for col, val in u.cells:
            k = (u.row_key, u.family, col)
            cand = (u.timestamp_ms, u.seq, val)
            if k not in out or cand[:2] >= out[k][:2]:
                out[k] = cand
    return out
