"""Point-in-time training examples from an event log: the pure logic (no Beam), unit-tested on its own.

The batch training pipeline (pipelines/training_data.py) wraps these functions in Beam composites
(transforms/training_examples.py). Features come from the SAME definitions the streaming pipeline
folds (transforms/features.py), replayed per key in ARRIVAL order, so a training example sees exactly
what the feature store held when the event reached the pipeline, and nothing that arrived later.

    user replay   (one user's events)     UserState, in arrival order. Before an impression or a
                                          play_start is folded in, the user's `u` features and the `cw`
                                          state of that episode's series are snapshotted -> one example.
    item replay   (one episode's ACCEPTED ItemState, in arrival order; before each impression / play_start
                   events, i.e. deduplicated) of that episode, its `i` features are snapshotted (None when
                                          the episode had no activity yet: serving sees no row then).
    label         `outcome_label`: 1 if the user completed the example's episode within LABEL_HORIZON_MS
                                          of event time after it, else 0 (skip, hover, abandoned, scrolled
                                          past or completed later). Labels may look ahead; features never.

Examples are emitted for impressions (the ranker's rows: impression -> outcome) AND play_starts (the
two-tower's positives: next-episode autoplays have no impression, yet they are what binge viewers do
most; a play_start labelled 1 is "the user went on to finish this episode").

Evaluation snapshots: for each time-split cut (`cuts`, e.g. {"valid": T1, "test": T2}, event-time
ms), each user's `u` features as they stood when the cut passed in arrival order, with the request
context (country, device, hour) of the user's first event after the cut (what serving would have had
when the user came back); u is None for a user with no event before the cut.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from cliffhanger.events import PlaybackEvent
from transforms.features import HOUR_MS, MINUTE_MS, ItemState, UserState

LABEL_HORIZON_MS = 30 * MINUTE_MS
LABEL_RULE = "1 iff a complete of the same (user, episode) has event_time in [t, t + horizon]; else 0"
EXAMPLE_KINDS = ("impression", "play_start")
SPLIT_PARTS = ("train", "valid", "test")
DEFAULT_SPLIT_FRACTIONS = (0.7, 0.85)  # cut "valid" at the 70th, "test" at the 85th percentile of example times
EXAMPLE_FIELDS = (
    "event_id",
    "kind",
    "user_id",
    "episode_id",
    "series_id",
    "episode_number",
    "event_time_ms",
    "arrival_ms",
    "country",
    "device",
    "hour",
    "session_id",
    "u",  # family `u` before the event (UserState.features()), None for a user's first event
    "cw",  # family `cw` of the episode's series before the event, None if the user never played it
    "i",  # family `i` of the episode before the event (ItemState.features()), None if no activity yet
    "label",
    "part",
)

Record = tuple[int, PlaybackEvent]  # (arrival_ms, event)


def arrival_order(records: Iterable[Record]) -> list[Record]:
    """Sorted by arrival; ties broken by event time then event id, so every run replays the same order."""
    return sorted(records, key=lambda r: (r[0], r[1].event_time_ms, r[1].event_id))


def completion_times(events: Iterable[PlaybackEvent]) -> dict[str, list[int]]:
    """episode_id -> sorted event times of the user's `complete` events for it."""
    out: dict[str, list[int]] = {}
    for e in events:
        if e.event_type == "complete":
            out.setdefault(e.episode_id, []).append(e.event_time_ms)
    for times in out.values():
        times.sort()
    return out


def outcome_label(
    event: PlaybackEvent, completions: Mapping[str, Sequence[int]], horizon_ms: int = LABEL_HORIZON_MS
) -> int:
    """THE label rule (LABEL_RULE): 1 if the user completed `event`'s episode at an event time in
    [event.event_time_ms, event.event_time_ms + horizon_ms], else 0. `completions` is
    `completion_times` of the same user's events."""
    times = completions.get(event.episode_id, ())
    i = bisect.bisect_left(times, event.event_time_ms)
    return int(i < len(times) and times[i] <= event.event_time_ms + horizon_ms)


def hour_of_day(epoch_ms: int) -> int:
    return int(epoch_ms // HOUR_MS) % 24


def part_of(event_time_ms: int, cuts: Mapping[str, int]) -> str:
    """'train' before the 'valid' cut, 'valid' before the 'test' cut, else 'test' (no cuts: 'train')."""
    part = "train"
    for name in SPLIT_PARTS[1:]:
        if name in cuts and event_time_ms >= cuts[name]:
            part = name
    return part


def cuts_from_quantiles(quantiles: Sequence[int], fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS) -> dict:
    """Percentiles (101 values, 0..100 %) of example event times -> {"valid": ms, "test": ms}; {} if empty."""
    if not quantiles:
        return {}
    last = len(quantiles) - 1
    return {name: int(quantiles[round(f * last)]) for name, f in zip(SPLIT_PARTS[1:], fractions, strict=True)}


@dataclasses.dataclass
class UserReplay:
    examples: list[dict[str, Any]]  # one per accepted impression / play_start, without "i" and "part"
    accepted: list[Record]  # deduplicated events, arrival order (the item replay's input)
    snapshots: list[dict[str, Any]]  # one per cut: {"cut", "user_id", "u", "country", "device", "hour"}
    final_u: dict[str, Any]  # family `u` at the end of the log
    final_cw: dict[str, dict[str, Any]]  # family `cw` per series at the end of the log


def replay_user(
    user_id: str,
    records: Iterable[Record],
    genres_of: Callable[[str], tuple[str, ...]],
    cuts: Mapping[str, int] | None = None,
    horizon_ms: int = LABEL_HORIZON_MS,
) -> UserReplay:
    """Fold one user's events into UserState in arrival order, snapshotting before every example event."""
    ordered = arrival_order(records)
    completions = completion_times(e for _, e in ordered)
    pending = sorted((cuts or {}).items(), key=lambda kv: kv[1])
    state, examples, accepted, snapshots = UserState(), [], [], []
    context: tuple[str, str] | None = None
    for arrival, e in ordered:
        while pending and arrival > pending[0][1]:
            name, cut = pending.pop(0)
            snapshots.append(_snapshot(name, user_id, state, (e.country, e.device), hour_of_day(e.event_time_ms)))
        example_kind = e.event_type in EXAMPLE_KINDS
        before = (state.features(), state.continue_watching(e.series_id)) if example_kind and state.applied else None
        if not state.apply(e, genres_of(e.series_id)):
            continue  # a duplicate: neither an example nor a second fold
        accepted.append((arrival, e))
        context = (e.country, e.device)
        if example_kind:
            examples.append(_example(e, arrival, before, outcome_label(e, completions, horizon_ms)))
    for name, cut in pending:
        snapshots.append(_snapshot(name, user_id, state, context or ("", ""), hour_of_day(cut)))
    final_cw = {s: cw for s in sorted(state.playback) if (cw := state.continue_watching(s)) is not None}
    return UserReplay(examples, accepted, snapshots, state.features(), final_cw)


def _example(e: PlaybackEvent, arrival_ms: int, before: tuple | None, label: int) -> dict[str, Any]:
    u, cw = before if before is not None else (None, None)
    return {
        "event_id": e.event_id,
        "kind": e.event_type,
        "user_id": e.user_id,
        "episode_id": e.episode_id,
        "series_id": e.series_id,
        "episode_number": e.episode_number,
        "event_time_ms": e.event_time_ms,
        "arrival_ms": arrival_ms,
        "country": e.country,
        "device": e.device,
        "hour": hour_of_day(e.event_time_ms),
        "session_id": e.session_id,
        "u": u,
        "cw": cw,
        "label": label,
    }


def _snapshot(cut: str, user_id: str, state: UserState, context: tuple[str, str], hour: int) -> dict[str, Any]:
    u = state.features() if state.applied else None
    return {"cut": cut, "user_id": user_id, "u": u, "country": context[0], "device": context[1], "hour": hour}


def replay_item(records: Iterable[Record]) -> tuple[list[tuple[str, dict[str, Any] | None]], dict[str, Any]]:
    """One episode's ACCEPTED events -> ([(event_id, `i` before it)] for its impressions and play_starts,
    final `i`). ItemState does not deduplicate: feed it the user replay's `accepted` events only."""
    state, snaps = ItemState(), []
    for _, e in arrival_order(records):
        if e.event_type in EXAMPLE_KINDS:
            snaps.append((e.event_id, state.features() if state.applied else None))
        state.apply(e)
    return snaps, state.features()


def with_item_features(example: Mapping[str, Any], item: Mapping[str, Any] | None, cuts: Mapping[str, int]) -> dict:
    """The finished example: the user-replay example plus its episode's `i` snapshot and its split part."""
    return {**example, "i": item, "part": part_of(example["event_time_ms"], cuts)}


def examples_schema(horizon_ms: int = LABEL_HORIZON_MS) -> dict[str, Any]:
    """What an examples file holds, and its hash: fields, feature columns (from the feature definitions
    themselves), the label rule and horizon. A change to any of them changes the hash."""
    spec = {
        "fields": list(EXAMPLE_FIELDS),
        "kinds": list(EXAMPLE_KINDS),
        "u_columns": sorted(UserState().features()),
        "cw_columns": ["completed", "duration_ms", "episode_id", "episode_number", "position_ms", "updated_ms"],
        "i_columns": sorted(ItemState().features()),
        "label_rule": LABEL_RULE,
        "horizon_ms": horizon_ms,
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return {**spec, "examples_schema_hash": digest}
