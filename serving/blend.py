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
serves. A source may be pairs or two columns (ids, scores: the parsed candidate list).

Candidates are rows of an index (serving.rerank.EpisodeTable on the request path: the catalog's rows,
which the reranker gathers its features by), so taking, de-duplicating and ordering are numpy
operations on integers: one dict pass maps the retrieval list's ids to rows, and no per-candidate
Python runs after it (blend was ~9% of a loaded server's CPU with sets and lists of ids). Ids the
index does not know (not in the catalog: never servable) are left out and counted (`Pool.unknown`).
Without an index (tests, offline callers) the ids of the sources themselves are the universe.

The ranker's `retrieval_score` column comes from the retrieval list; candidates only another source
proposed get that list's minimum score (neutral-low), so they win on the other columns, not on it.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple, Protocol

import numpy as np

from cliffhanger.catalog import Catalog
from serving import kernels

TWO_TOWER, CONTINUE_WATCHING, TRENDING = "two_tower", "continue_watching", "trending"
_NO_ROWS = np.zeros(0, dtype=np.intp)
_NO_SCORES = np.zeros(0, dtype=np.float64)


class Candidate(NamedTuple):
    """One pool entry, as a view: the hot path works on Pool's columns instead."""

    episode_id: str
    source: str
    retrieval_score: float


class RowIndex(Protocol):
    """Episode id -> row (serving.rerank.EpisodeTable is one): `episode_ids[row]` is the id back,
    rows >= `unknown` stand for ids the index does not know."""

    episode_ids: Sequence[str]
    unknown: int

    def rows(self, episode_ids: Sequence[str] | np.ndarray) -> np.ndarray: ...


class _LocalIndex:
    """A RowIndex over the ids it is given (in first-seen order): blend without a catalog."""

    def __init__(self, id_lists: Sequence[Sequence[str] | np.ndarray]) -> None:
        self.index: dict[str, int] = {}
        for e in itertools.chain.from_iterable(map(_as_str, id_lists)):
            self.index.setdefault(e, len(self.index))
        self.episode_ids = list(self.index)
        self.unknown = len(self.episode_ids)

    def rows(self, episode_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        ids = _as_str(episode_ids)
        return np.fromiter(map(self.index.__getitem__, ids), np.intp, len(ids))


def _as_str(ids: Sequence[str] | np.ndarray) -> Sequence[str]:
    """Ids as str (a binary candidate list's column is UTF-8 bytes)."""
    if isinstance(ids, np.ndarray) and ids.dtype.kind == "S":
        return [b.decode() for b in ids.tolist()]
    return ids


@dataclasses.dataclass(slots=True)
class Pool:
    """The blended candidates as columns: `rows` of `index` (an id is `index.episode_ids[row]`), each
    one's source (`names[source_codes[i]]`) and retrieval score. No per-candidate object is built on
    the request path (500 small objects per request were ~10% of a loaded server's CPU)."""

    rows: np.ndarray  # intp, rows of `index`
    source_codes: np.ndarray  # intp, positions in `names`
    names: tuple[str, ...]
    retrieval_scores: np.ndarray  # float64, aligned with rows
    index: RowIndex
    unknown: int = 0  # candidates left out: ids the index does not know

    @classmethod
    def of(cls, candidates: Sequence[Candidate]) -> Pool:
        """A pool of these candidates in this order (repeats kept): tests and offline callers."""
        index = _LocalIndex([[c[0] for c in candidates]])
        names = tuple(dict.fromkeys(c[1] for c in candidates))
        code = {n: i for i, n in enumerate(names)}
        return cls(
            index.rows([c[0] for c in candidates]),
            np.asarray([code[c[1]] for c in candidates], dtype=np.intp),
            names,
            np.asarray([c[2] for c in candidates], np.float64),
            index,
        )

    @property
    def episode_ids(self) -> list[str]:
        ids = self.index.episode_ids
        return [ids[r] for r in self.rows.tolist()]

    @property
    def sources(self) -> list[str]:
        names = self.names
        return [names[c] for c in self.source_codes.tolist()]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Candidate]:
        return map(Candidate, self.episode_ids, self.sources, self.retrieval_scores.tolist())

    def __getitem__(self, i: int | slice) -> Candidate | list[Candidate]:
        if isinstance(i, slice):
            return list(map(Candidate, self.episode_ids[i], self.sources[i], self.retrieval_scores[i].tolist()))
        return Candidate(self.episode_ids[i], self.sources[i], float(self.retrieval_scores[i]))

    def rows_in(self, index: RowIndex) -> np.ndarray:
        """This pool's candidates as rows of `index` (its own rows when it is the pool's index)."""
        return self.rows if index is self.index else index.rows(self.episode_ids)

    def relabel(self, old: str, new: str) -> Pool:
        """The same pool with source `old` renamed `new` (a fallback list standing in for two-tower)."""
        names = tuple(new if n == old else n for n in self.names)
        return dataclasses.replace(self, names=names)


class Columns(Protocol):
    """A best-first source as two aligned columns (serving.candidates.CandidateList is one)."""

    ids: Sequence[str]
    scores: Sequence[float]


SourceItems = Sequence[tuple[str, float]] | Columns


def _columns(items: SourceItems) -> tuple[Sequence[str] | np.ndarray, np.ndarray]:
    if hasattr(items, "id_column"):  # a parsed list: its ids as stored (bytes from a binary cell)
        return items.id_column, np.asarray(items.scores, dtype=np.float64)
    if hasattr(items, "ids"):
        return items.ids, np.asarray(items.scores, dtype=np.float64)
    return [e for e, _ in items], np.asarray([x for _, x in items], dtype=np.float64)


def blend(
    sources: Mapping[str, SourceItems],
    ratios: Mapping[str, float],
    pool_size: int,
    retrieval_source: str = TWO_TOWER,
    index: RowIndex | None = None,
) -> Pool:
    cols = {name: _columns(items) for name, items in sources.items()}
    if index is None:
        index = _LocalIndex([ids for ids, _ in cols.values()])
    size, unknown = index.unknown + 1, 0
    rows_of: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (ids, scores) in cols.items():
        if not len(ids):
            continue
        rows = index.rows(ids)
        if rows.max() >= index.unknown:  # not in the catalog: never servable, left out here
            known = rows < index.unknown
            unknown += len(rows) - int(np.count_nonzero(known))
            rows, scores = rows[known], scores[known]
        rows_of[name] = (rows, scores)
    r_rows, r_scores = rows_of.get(retrieval_source, (_NO_ROWS, _NO_SCORES))
    # Shortest sources first: they claim shared episodes and pass their unused quota on.
    names = sorted(
        (n for n, (rows, _) in rows_of.items() if len(rows) and ratios.get(n, 0.0) > 0),
        key=lambda n: len(rows_of[n][0]),
    )
    if not names:
        return Pool(_NO_ROWS, _NO_ROWS, (), _NO_SCORES, index, unknown)
    parts = [rows_of[n][0] for n in names]
    starts = np.zeros(len(parts) + 1, dtype=np.intp)
    np.cumsum([len(p) for p in parts], out=starts[1:])
    rows, codes, scores = kernels.blend_rows(
        np.concatenate(parts).astype(np.intp, copy=False),
        starts,
        np.asarray([float(ratios[n]) for n in names]),
        r_rows.astype(np.intp, copy=False),
        r_scores,
        pool_size,
        size,
    )
    return Pool(rows, codes, tuple(names), scores, index, unknown)


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
