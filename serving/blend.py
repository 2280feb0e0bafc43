"""Blend candidate sources into one pool, in proportions from config. Pure functions, no I/O.

Sources (each a best-first list of (episode_id, source_score)):
    two_tower           the precomputed / on-demand retrieval list (or a segment / popularity list
                        standing in for it on a lower rung)
    continue_watching   where the user is in each series they watch (resume or next episode)
    trending            the user's entry point into series trending in their cohort (country x device)

`blend` fills up to `pool_size` slots by smooth weighted round-robin over the sources that still have
items, so the pool holds each source in its configured ratio, a short source's share goes to the
others, and the pool ORDER itself interleaves sources by ratio (that order is what the "ranker failed
-> retrieval order" rung serves). Duplicates keep their first (highest-priority) appearance.

The ranker's `retrieval_score` column comes from the retrieval list; candidates only another source
proposed get that list's minimum score (neutral-low), so they win on the other columns, not on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from cliffhanger.catalog import Catalog

TWO_TOWER, CONTINUE_WATCHING, TRENDING = "two_tower", "continue_watching", "trending"


@dataclasses.dataclass(frozen=True, slots=True)
class Candidate:
    episode_id: str
    source: str
    retrieval_score: float


def blend(
    sources: Mapping[str, Sequence[tuple[str, float]]],
    ratios: Mapping[str, float],
    pool_size: int,
    retrieval_source: str = TWO_TOWER,
) -> list[Candidate]:
    retrieval = {eid: float(score) for eid, score in sources.get(retrieval_source, ())}
    floor = min(retrieval.values(), default=0.0)
    cursors = {name: 0 for name, items in sources.items() if items and ratios.get(name, 0.0) > 0}
    credit = dict.fromkeys(cursors, 0.0)
    out: list[Candidate] = []
    seen: set[str] = set()
    while len(out) < pool_size and cursors:
        total = sum(ratios[name] for name in cursors)
        for name in cursors:
            credit[name] += ratios[name]
        name = max(cursors, key=lambda s: (credit[s], ratios[s]))
        credit[name] -= total
        items = sources[name]
        i = cursors[name]
        while i < len(items) and items[i][0] in seen:
            i += 1
        if i >= len(items):
            del cursors[name]
            continue
        eid = items[i][0]
        cursors[name] = i + 1
        seen.add(eid)
        out.append(Candidate(eid, name, retrieval.get(eid, floor)))
        if cursors[name] >= len(items):
            del cursors[name]
    return out


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
