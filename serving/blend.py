"""Blend candidate sources into one pool, in proportions from config. Pure functions, no I/O.

Sources (each a best-first list of (episode_id, source_score)):
    two_tower           the precomputed / on-demand retrieval list (or a segment / popularity list
                        standing in for it on a lower rung)
    continue_watching   where the user is in each series they watch (resume or next episode)
    trending            the user's entry point into series trending in their cohort (country x device)

`blend` gives each source a quota of `pool_size` in its configured ratio (shortest sources first: a
short source's unused share goes to the longer ones, and an episode two sources propose belongs to
the shorter, more specific one), then orders the pool by each item's slot key (j + 0.5) / ratio, a
smooth interleave of sources by ratio: that order is what the "ranker failed -> retrieval order" rung
serves. A source may be pairs or two columns (ids, scores: the parsed candidate list); the long
retrieval list is taken with C-speed scans and the order is one numpy lexsort.

The ranker's `retrieval_score` column comes from the retrieval list; candidates only another source
proposed get that list's minimum score (neutral-low), so they win on the other columns, not on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple, Protocol

import numpy as np

from cliffhanger.catalog import Catalog

TWO_TOWER, CONTINUE_WATCHING, TRENDING = "two_tower", "continue_watching", "trending"


class Candidate(NamedTuple):
    """One pool entry, as a view: the hot path works on Pool's parallel lists instead."""

    episode_id: str
    source: str
    retrieval_score: float


@dataclasses.dataclass(slots=True)
class Pool:
    """The blended candidates as parallel columns: no per-candidate object is built on the request path
    (500 small objects per request were ~10% of a loaded server's CPU in a py-spy profile)."""

    episode_ids: list[str]
    sources: list[str]
    retrieval_scores: np.ndarray  # float64, aligned with episode_ids

    @classmethod
    def of(cls, candidates: Sequence[Candidate]) -> Pool:
        return cls(
            [c[0] for c in candidates], [c[1] for c in candidates], np.asarray([c[2] for c in candidates], np.float64)
        )

    def __len__(self) -> int:
        return len(self.episode_ids)

    def __iter__(self) -> Iterator[Candidate]:
        return map(Candidate, self.episode_ids, self.sources, self.retrieval_scores.tolist())

    def __getitem__(self, i: int | slice) -> Candidate | list[Candidate]:
        if isinstance(i, slice):
            return list(map(Candidate, self.episode_ids[i], self.sources[i], self.retrieval_scores[i].tolist()))
        return Candidate(self.episode_ids[i], self.sources[i], float(self.retrieval_scores[i]))

    def relabel(self, old: str, new: str) -> Pool:
        """The same pool with source `old` renamed `new` (a fallback list standing in for two-tower)."""
        return Pool(self.episode_ids, [new if s == old else s for s in self.sources], self.retrieval_scores)


class Columns(Protocol):
    """A best-first source as two aligned columns (serving.candidates.CandidateList is one)."""

    ids: Sequence[str]
    scores: Sequence[float]


SourceItems = Sequence[tuple[str, float]] | Columns


def _columns(items: SourceItems) -> tuple[list[str], np.ndarray]:
    if hasattr(items, "ids"):
        return list(items.ids), np.asarray(items.scores, dtype=np.float64)
    return [e for e, _ in items], np.asarray([x for _, x in items], dtype=np.float64)


def _take(ids: list[str], quota: int, seen: set[str]) -> tuple[list[int] | slice, list[str]]:
    """(positions, ids) of the first `quota` ids not in `seen` and not repeated, in order; adds them to
    `seen`. A source without repeats (the retrieval list) takes no per-item Python loop."""
    if len(set(ids)) == len(ids):  # no repeats: C-speed scans and comprehensions
        if seen.isdisjoint(ids):
            taken = ids[:quota]
            seen.update(taken)
            return slice(0, len(taken)), taken
        positions = [i for i, eid in enumerate(ids) if eid not in seen][:quota]
        taken = [ids[i] for i in positions]
        seen.update(taken)
        return positions, taken
    positions, taken = [], []
    for i, eid in enumerate(ids):
        if len(taken) >= quota:
            break
        if eid not in seen:
            seen.add(eid)
            positions.append(i)
            taken.append(eid)
    return positions, taken


def blend(
    sources: Mapping[str, SourceItems],
    ratios: Mapping[str, float],
    pool_size: int,
    retrieval_source: str = TWO_TOWER,
) -> Pool:
    cols = {name: _columns(items) for name, items in sources.items()}
    r_ids, r_scores = cols.get(retrieval_source, ([], np.zeros(0)))
    floor = float(r_scores.min()) if len(r_scores) else 0.0
    # Shortest sources first: they claim shared episodes and pass their unused quota on.
    names = sorted((n for n, (ids, _) in cols.items() if ids and ratios.get(n, 0.0) > 0), key=lambda n: len(cols[n][0]))
    left, ratio_left = pool_size, sum(ratios[n] for n in names)
    seen: set[str] = set()
    ids_parts, slot_parts, rank_parts, score_parts, names_out = [], [], [], [], []
    by_id: dict[str, float] | None = None  # retrieval score by episode, built only if another source needs it
    for rank_, name in enumerate(names):
        ids, scores = cols[name]
        quota = left if rank_ == len(names) - 1 else round(left * ratios[name] / ratio_left)
        positions, taken = _take(ids, quota, seen)
        ids_parts.append(taken)
        slot_parts.append((np.arange(len(taken)) + 0.5) / ratios[name])  # slot key: interleave by ratio
        rank_parts.append(np.full(len(taken), rank_))
        names_out.append(name)
        if name == retrieval_source:
            score_parts.append(scores[positions])
        else:
            if by_id is None:
                by_id = dict(zip(r_ids[::-1], r_scores[::-1].tolist(), strict=True))  # a repeat: its best
            score_parts.append(np.asarray([by_id.get(e, floor) for e in taken], dtype=np.float64))
        left -= len(taken)
        ratio_left -= ratios[name]
    if not ids_parts:
        return Pool([], [], np.zeros(0))
    order = np.lexsort((np.concatenate(rank_parts), np.concatenate(slot_parts))).tolist()
    all_ids = [e for part in ids_parts for e in part]
    all_sources = [n for n, part in zip(names_out, ids_parts, strict=True) for _ in part]
    return Pool([all_ids[i] for i in order], [all_sources[i] for i in order], np.concatenate(score_parts)[order])


def continue_watching_items(cw: Mapping[str, Mapping], catalog: Catalog) -> list[tuple[str, float]]:
    """Family `cw` (series_id -> playback state) -> [(episode_id, updated_ms)], most recent first:
    the unfinished episode to resume, or the episode after a completed one."""
    out: list[tuple[str, float]] = []
    for state in cw.values():
        episode_id = state.get("episode_id")
        if not isinstance(episode_id, str):
            continue
        if state.get("completed"):
            try:
                nxt = catalog.next_episode(episode_id)
            except KeyError:
                continue
            if nxt is None:
                continue
            episode_id = nxt.episode_id
        out.append((episode_id, float(state.get("updated_ms", 0))))
    out.sort(key=lambda item: -item[1])
    return out


def with_new_releases(trending_series: Sequence[Sequence], dropping: Sequence[str]) -> Sequence[Sequence]:
    """Cohort `trending_series` [[series_id, score], ...] with the series that just dropped an episode
    put first (scored above the top): an episode drop trends at once, before its plays accumulate in the
    cohort's counts. trending_items then enters each at the viewer's entry point, which for a viewer who
    finished the episode before the drop is the new episode."""
    if not dropping:
        return trending_series  # the usual request: no copy
    top = max((float(entry[1]) for entry in trending_series if len(entry) == 2), default=0.0)
    fresh = set(dropping)
    firsts = [[sid, top + len(dropping) - i] for i, sid in enumerate(dropping)]
    return firsts + [entry for entry in trending_series if len(entry) == 2 and entry[0] not in fresh]


def trending_items(
    trending_series: Sequence[Sequence], cw: Mapping[str, Mapping], catalog: Catalog
) -> list[tuple[str, float]]:
    """Cohort `trending_series` [[series_id, score], ...] -> the user's entry episode per series:
    where they are in it (from `cw`), else its first episode."""
    out: list[tuple[str, float]] = []
    for entry in trending_series:
        if len(entry) != 2 or entry[0] not in catalog:
            continue
        series_id, score = entry
        state = cw.get(series_id)
        if state is not None:
            items = continue_watching_items({series_id: state}, catalog)
            if items:
                out.append((items[0][0], float(score)))
            continue
        episodes = catalog.series(series_id).episodes
        if episodes:
            out.append((episodes[0].episode_id, float(score)))
    return out
