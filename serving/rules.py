"""Series rules applied after ranking: pure functions over catalog look-ups, no I/O.

Order of the final answer:
  1. the next episode of the series just finished, first, if the user may watch it (licensed in their
     country now, released, not completed). If the user already completed it (a rewatch), the first
     later episode of that series they have not completed takes its place;
  2. then the ranked candidates, each mapped to the user's ENTRY episode of its series (with
     `entry_points`): where they are in it (continue watching), else its first episode they have not
     completed. A serialized story is entered at its start or resumed, never at a random episode 42;
     the candidate's score and reason carry over to the entry. Then skipping: episodes unknown to the
     catalog, not released, not licensed in the country, completed by the user, already listed (no
     duplicates), or of a series that already has `max_per_series` items.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from typing import NamedTuple

from cliffhanger.catalog import Catalog, Episode

NEXT_EPISODE = "next_episode"


class Ranked(NamedTuple):
    """A candidate after reranking: `score` is the ranker's (or retrieval's) score, `reason` its source.
    (Named tuples, not frozen dataclasses: a frozen dataclass's __init__ costs ~1 us, and a request
    builds dozens of these.)"""

    episode_id: str
    score: float
    reason: str


class Pick(NamedTuple):
    episode_id: str
    series_id: str
    episode_number: int
    score: float
    reason: str


@dataclasses.dataclass
class RuleStats:
    """How many candidates each rule removed (for metrics and debugging)."""

    unknown: int = 0
    unlicensed: int = 0
    completed: int = 0
    duplicate: int = 0
    series_cap: int = 0


def playable(catalog: Catalog, episode: Episode, country: str, now_ms: int) -> bool:
    return episode.release_time_ms <= now_ms and catalog.is_licensed(episode.series_id, country, now_ms)


def next_episode_to_watch(
    catalog: Catalog, finished_episode_id: str | None, completed: Collection[str], country: str, now_ms: int
) -> Episode | None:
    """The episode after `finished_episode_id` the user can watch now and has not completed, or None."""
    if not finished_episode_id:
        return None
    try:
        episode = catalog.next_episode(finished_episode_id)
    except KeyError:
        return None
    while episode is not None and episode.episode_id in completed:
        episode = catalog.next_episode(episode.episode_id)
    if episode is None or not playable(catalog, episode, country, now_ms):
        return None
    return episode


def entry_episode(
    catalog: Catalog, series_id: str, state: Mapping | None, completed: Collection[str]
) -> Episode | None:
    """Where this user enters a series: the unfinished episode they were watching, the one after their
    last completed one, else the first episode they have not completed; None when all are done."""
    episodes = catalog.series(series_id).episodes
    start = 0
    if state:
        number = int(state.get("episode_number", 1))
        start = max(0, number if state.get("completed") else number - 1)
    for episode in episodes[start:]:
        if episode.episode_id not in completed:
            return episode
    return None


def apply_rules(
    ranked: Iterable[Ranked],
    *,
    catalog: Catalog,
    country: str,
    now_ms: int,
    completed: Collection[str],
    n: int,
    max_per_series: int,
    next_episode: Episode | None = None,
    next_score: float = 1.0,
    stats: RuleStats | None = None,
    entry_points: Mapping[str, Mapping] | None = None,
) -> list[Pick]:
    """The first `n` picks satisfying every rule, `next_episode` (already checked) pinned first.

    entry_points: the user's `cw` family (series -> playback state); when given, candidates are
    mapped to their series' entry episode (see entry_episode)."""
    stats = stats if stats is not None else RuleStats()
    out: list[Pick] = []
    seen: set[str] = set()
    per_series: dict[str, int] = {}

    def add(episode: Episode, score: float, reason: str) -> None:
        out.append(Pick(episode.episode_id, episode.series_id, episode.episode_number, score, reason))
        seen.add(episode.episode_id)
        per_series[episode.series_id] = per_series.get(episode.series_id, 0) + 1

    if next_episode is not None and n > 0 and max_per_series > 0:
        add(next_episode, next_score, NEXT_EPISODE)
    for cand in ranked:
        if len(out) >= n:
            break
        if cand.episode_id in seen:
            stats.duplicate += 1
            continue
        try:
            episode = catalog.episode(cand.episode_id)
        except KeyError:
            stats.unknown += 1
            continue
        if entry_points is not None:
            entry = entry_episode(catalog, episode.series_id, entry_points.get(episode.series_id), completed)
            if entry is None:
                stats.completed += 1
                continue
            episode = entry
            if episode.episode_id in seen:
                stats.duplicate += 1
                continue
        if episode.episode_id in completed:
            stats.completed += 1
            continue
        if not playable(catalog, episode, country, now_ms):
            stats.unlicensed += 1
            continue
        if per_series.get(episode.series_id, 0) >= max_per_series:
            stats.series_cap += 1
            continue
        add(episode, cand.score, cand.reason)
    return out
