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
serves. O(pool) Python steps plus one sort; no per-slot scan over sources.

The ranker's `retrieval_score` column comes from the retrieval list; candidates only another source
proposed get that list's minimum score (neutral-low), so they win on the other columns, not on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

from cliffhanger.catalog import Catalog

TWO_TOWER, CONTINUE_WATCHING, TRENDING = "two_tower", "continue_watching", "trending"


class Candidate(NamedTuple):
    """One pool entry, as a view: the hot path works on Pool's parallel lists instead."""

    episode_id: str
    source: str
    retrieval_score: float


@dataclasses.dataclass(slots=True)
class Pool:
    """The blended candidates as parallel lists: no per-candidate object is built on the request path
    (500 small objects per request were ~10% of a loaded server's CPU in a py-spy profile)."""

    episode_ids: list[str]
    sources: list[str]
    retrieval_scores: list[float]

    @classmethod
    def of(cls, candidates: Sequence[Candidate]) -> Pool:
        return cls([c[0] for c in candidates], [c[1] for c in candidates], [c[2] for c in candidates])

    def __len__(self) -> int:
        return len(self.episode_ids)

    def __iter__(self) -> Iterator[Candidate]:
        return map(Candidate, self.episode_ids, self.sources, self.retrieval_scores)

    def __getitem__(self, i: int | slice) -> Candidate | list[Candidate]:
        if isinstance(i, slice):
            return list(map(Candidate, self.episode_ids[i], self.sources[i], self.retrieval_scores[i]))
        return Candidate(self.episode_ids[i], self.sources[i], self.retrieval_scores[i])

    def relabel(self, old: str, new: str) -> Pool:
        """The same pool with source `old` renamed `new` (a fallback list standing in for two-tower)."""
        return Pool(self.episode_ids, [new if s == old else s for s in self.sources], self.retrieval_scores)


def blend(
    sources: Mapping[str, Sequence[tuple[str, float]]],
    ratios: Mapping[str, float],
    pool_size: int,
    retrieval_source: str = TWO_TOWER,
) -> Pool:
    retrieval = dict(sources.get(retrieval_source, ()))
    floor = min(retrieval.values(), default=0.0)
    # Shortest sources first: they claim shared episodes and pass their unused quota on.
    names = sorted(
        (n for n, items in sources.items() if items and ratios.get(n, 0.0) > 0), key=lambda n: len(sources[n])
    )
    left, ratio_left = pool_size, sum(ratios[n] for n in names)
    seen: set[str] = set()
    keyed: list[tuple[float, int, str, str]] = []
    for rank_, name in enumerate(names):
        quota = left if rank_ == len(names) - 1 else round(left * ratios[name] / ratio_left)
        weight = 1.0 / ratios[name]
        taken = 0
        for eid, _ in sources[name]:
            if taken >= quota:
                break
            if eid in seen:
                continue
            seen.add(eid)
            keyed.append(((taken + 0.5) * weight, rank_, eid, name))  # slot key: interleave by ratio
            taken += 1
        left -= taken
        ratio_left -= ratios[name]
    keyed.sort()
    ids = [k[2] for k in keyed]
    return Pool(ids, [k[3] for k in keyed], [retrieval.get(eid, floor) for eid in ids])


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
