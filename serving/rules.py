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
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from cliffhanger.catalog import Catalog, Episode
from serving import kernels

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
    start: Sequence[Pick] = (),
) -> list[Pick]:
    """The first `n` picks satisfying every rule, `next_episode` (already checked) pinned first.

    entry_points: the user's `cw` family (series -> playback state); when given, candidates are
    mapped to their series' entry episode (see entry_episode). start: picks already made (they count
    for duplicates and the per-series cap, and lead the answer)."""
    stats = stats if stats is not None else RuleStats()
    out: list[Pick] = list(start)
    seen: set[str] = {p.episode_id for p in out}
    per_series: dict[str, int] = {}
    for p in out:
        per_series[p.series_id] = per_series.get(p.series_id, 0) + 1

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


_PICK_COUNTS = ("unknown", "unlicensed", "completed", "duplicate", "series_cap")  # kernels.pick_rows' counts


class RuleRows:
    """The catalog as arrays over the rows of the ranker's episode table (serving.rerank.EpisodeTable,
    whose rows follow the catalog's order: each series' episodes are consecutive rows, in order), for
    `apply_rules_rows`: each series' first row and episode count, each row's release time, and which
    series are licensed in a country, cached until the next licensing window opens or closes."""

    def __init__(self, catalog: Catalog, series_codes: np.ndarray, series_ids: Sequence[str]) -> None:
        self.catalog = catalog
        episodes = [e for sid in series_ids for e in catalog.series(sid).episodes]
        self.unknown = len(episodes)
        codes = np.asarray(series_codes[: self.unknown])
        self.series_len = np.bincount(codes, minlength=len(series_ids)).astype(np.intp)
        self.series_start = np.concatenate([[0], np.cumsum(self.series_len)[:-1]]).astype(np.intp)
        if not np.array_equal(codes, np.repeat(np.arange(len(series_ids)), self.series_len)):
            raise ValueError("the episode table's rows are not the catalog's series in order")
        self.series_of = np.asarray(series_codes, dtype=np.intp)
        self.release_ms = np.asarray([e.release_time_ms for e in episodes], dtype=np.int64)
        self.series_ids = list(series_ids)
        self._code = {sid: i for i, sid in enumerate(series_ids)}
        self._licensed: dict[str, tuple[int, int, np.ndarray]] = {}  # country -> (from, until, mask)

    def licensed(self, country: str, now_ms: int) -> np.ndarray:
        """[series] bool: licensed in `country` at `now_ms` (Catalog.is_licensed for each series)."""
        cached = self._licensed.get(country)
        if cached is not None and cached[0] <= now_ms < cached[1]:
            return cached[2]
        mask = np.zeros(len(self.series_ids), dtype=np.bool_)
        lo, hi = -(2**62), 2**62  # the span around now_ms with no window boundary inside
        for code, sid in enumerate(self.series_ids):
            series = self.catalog.series(sid)
            mask[code] = series.is_licensed(country, now_ms)
            window = series.licensing.get(country)
            for edge in window or ():
                if edge is None:
                    continue
                if edge <= now_ms:
                    lo = max(lo, edge)
                else:
                    hi = min(hi, edge)
        self._licensed[country] = (lo, hi, mask)
        return mask

    def entry_offsets(self, entry_points: Mapping[str, Mapping] | None) -> np.ndarray:
        """[series] where each series is entered (entry_episode's start), from the user's `cw`."""
        offsets = np.zeros(len(self.series_ids), dtype=np.intp)
        for series_id, state in (entry_points or {}).items():
            code = self._code.get(series_id)
            if code is not None and state:
                number = int(state.get("episode_number", 1))
                offsets[code] = min(max(0, number if state.get("completed") else number - 1), self.series_len[code])
        return offsets

    def completed_rows(self, completed: Collection[str], index: Mapping[str, int]) -> np.ndarray:
        mask = np.zeros(self.unknown + 1, dtype=np.bool_)
        for episode_id in completed:
            row = index.get(episode_id)
            if row is not None:
                mask[row] = True
        return mask


def apply_rules_rows(
    rows: np.ndarray,
    order: np.ndarray,
    scores: np.ndarray,
    codes: np.ndarray,
    names: Sequence[str],
    *,
    table,
    country: str,
    now_ms: int,
    completed: Collection[str],
    n: int,
    max_per_series: int,
    next_episode: Episode | None = None,
    next_score: float = 1.0,
    stats: RuleStats | None = None,
    entry_points: Mapping[str, Mapping] | None = None,
    backfill: Iterable[Ranked] = (),
) -> list[Pick]:
    """`apply_rules` (entry points on) for candidates given as rows of `table` (an EpisodeTable with
    `rule_rows`): candidate `i` is `rows[i]` with `scores[i]` and reason `names[codes[i]]`, taken in
    `order` (a serving.blend.Pool's columns and a ranking of them); then,
    when fewer than `n` survive, `backfill` through apply_rules itself. The same picks and counts as
    apply_rules on the same candidates (tests/serving/test_rules.py), as one compiled loop
    (serving/kernels.py) instead of a dozen look-ups per candidate."""
    stats = stats if stats is not None else RuleStats()
    rr: RuleRows = table.rule_rows
    next_row = table.index.get(next_episode.episode_id, -1) if next_episode is not None else -1
    taken, entries, counts = kernels.pick_rows(
        np.asarray(order, dtype=np.intp),
        rows,
        rr.series_of,
        rr.series_start,
        rr.series_len,
        rr.entry_offsets(entry_points),
        rr.completed_rows(completed, table.index),
        rr.release_ms,
        rr.licensed(country, now_ms),
        now_ms,
        next_row,
        n,
        max_per_series,
        rr.unknown,
    )
    for name, count in zip(_PICK_COUNTS, counts.tolist(), strict=True):
        setattr(stats, name, getattr(stats, name) + count)
    out: list[Pick] = []
    ids, episode = table.episode_ids, rr.catalog.episode
    for i, row in zip(taken.tolist(), entries.tolist(), strict=True):
        e = episode(ids[row])
        if i < 0:
            out.append(Pick(e.episode_id, e.series_id, e.episode_number, next_score, NEXT_EPISODE))
        else:
            out.append(Pick(e.episode_id, e.series_id, e.episode_number, float(scores[i]), names[codes[i]]))
    if len(out) < n:  # the ranked candidates ran out: top up from the backfill, with the same state
        out += apply_rules(
            backfill,
            catalog=rr.catalog,
            country=country,
            now_ms=now_ms,
            completed=completed,
            n=n,
            max_per_series=max_per_series,
            stats=stats,
            entry_points=entry_points,
            start=out,
        )[len(out) :]
    return out
