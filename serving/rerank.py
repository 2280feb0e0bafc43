"""Rerank the candidate pool with the bundle's ONNX ranker. The feature matrix [n, f] is built by THE
mapping the trainer uses, `models.ranker_features` (MICRODRAMA_FEATURES: column order, values and the
schema hash the training pipeline stamps into its bundles): the candidates' columns are gathered in one
compiled pass (serving.kernels.gather_candidates), then go through the trainer's transforms
(`finish_matrix`), which gives the same matrix as `ranker_matrix` without building 500 objects.

Where the inputs come from at serving time:

    user_u, user_cw        the user's row (families u, cw), read once per request
    series, episode no.,   the catalog, per episode, built once (`EpisodeTable`)
    genres
    plays_24h, completion_ episode rows (family i), kept in process by serving/shared.py (`ItemStats`)
    rate_24h, trending
    retrieval_score        the candidate list / blend (blend gives other sources the floor)

A spec with a column not in MICRODRAMA_FEATURES is refused at bundle load (`check_spec`), never guessed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import repeat
from typing import Any

import numpy as np

from cliffhanger.catalog import GENRES, Catalog
from models.ranker import RankerFeatures
from models.ranker_features import ITEM_COLUMNS, MICRODRAMA_FEATURES, finish_matrix, genre_weights, series_context
from serving import kernels
from serving.blend import Pool
from serving.rules import Ranked, RuleRows

SERVING_SPEC = MICRODRAMA_FEATURES
SERVING_COLUMNS = frozenset(SERVING_SPEC.columns)
# Family `i` columns serving keeps per episode (ITEM_COLUMNS order); ITEM_COLUMN_RANGE (inclusive, sorted
# qualifiers) covers them with a cheap server-side filter: 6 of the 11 columns, not the row.
ITEM_COLUMN_RANGE = ("i", "completion_rate_24h", "trending")
assert all(ITEM_COLUMN_RANGE[1] <= c <= ITEM_COLUMN_RANGE[2] for c in ITEM_COLUMNS)


class RankerSpecError(ValueError):
    """The bundle's ranker expects features serving cannot build."""


def check_spec(spec: RankerFeatures) -> None:
    unknown = [c for c in spec.columns if c not in SERVING_COLUMNS]
    if unknown:
        raise RankerSpecError(f"ranker expects feature columns serving does not build: {unknown}")


class EpisodeTable:
    """The catalog's part of the ranker inputs, one row per episode (plus a last all-zero row for an
    episode the catalog does not know: no series, episode 0, no genres)."""

    def __init__(self, episode_ids: Sequence[str], series_ids: Sequence[str], numbers: Sequence[int], genres) -> None:
        self.episode_ids = list(episode_ids)
        self.index = {e: i for i, e in enumerate(episode_ids)}
        self.unknown = len(episode_ids)
        self._byte_keys = _ByteKeys(self.episode_ids)
        self._item_rows: tuple[int, np.ndarray] | None = None  # (ItemStats.version, table row -> its row)
        self.series_code_of = {sid: i for i, sid in enumerate(dict.fromkeys(series_ids))}
        none = len(self.series_code_of)  # the unknown row's "no series"
        self.series_codes = np.asarray([*(self.series_code_of[s] for s in series_ids), none], dtype=np.intp)
        self.episode_numbers = np.asarray([*numbers, 0], dtype=np.float32)
        rows = [genre_weights(g) for g in genres] + [np.zeros(len(GENRES), dtype=np.float32)]
        self.genre_weights = np.stack(rows)
        self.rule_rows: RuleRows | None = None  # the series rules' arrays, when built from a catalog

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> EpisodeTable:
        eps = list(catalog.episodes())
        genres = {s.series_id: s.genres for s in catalog}
        table = cls(
            [e.episode_id for e in eps],
            [e.series_id for e in eps],
            [e.episode_number for e in eps],
            [genres[e.series_id] for e in eps],
        )
        table.rule_rows = RuleRows(catalog, table.series_codes, list(table.series_code_of))
        return table

    def rows(self, episode_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Table rows of these episodes (`unknown` for one the catalog does not have): serving.blend maps
        the retrieval list with it, and the catalog columns and item stats are gathered by these rows.
        `episode_ids` may be str, or a numpy array of UTF-8 bytes (a binary candidate list's ids, see
        serving/candidates.py): those are mapped without making a Python string each."""
        if isinstance(episode_ids, np.ndarray) and episode_ids.dtype.kind == "S":
            rows = self._byte_keys.rows(episode_ids, self.unknown)
            if rows is not None:
                return rows
            episode_ids = [b.decode() for b in episode_ids.tolist()]
        return np.fromiter(map(self.index.get, episode_ids, repeat(self.unknown)), np.intp, len(episode_ids))

    def item_rows(self, version: int, index: Mapping[str, int]) -> np.ndarray:
        """[episodes + 1]: each table row's row in serving.shared.ItemStats (0 = not read yet), rebuilt
        only when that store has gained episodes (`version`)."""
        if self._item_rows is None or self._item_rows[0] != version:
            get = index.get
            mapping = np.asarray([get(e, 0) for e in self.episode_ids] + [0], dtype=np.intp)
            self._item_rows = (version, mapping)
        return self._item_rows[1]


class _ByteKeys:
    """Episode ids as fixed-width bytes -> table rows, without a Python string per id: each id's bytes
    are folded into a 64-bit key (a random-coefficient polynomial, mod 2^64), looked up in an
    open-addressing table (serving.kernels), and every hit is verified byte for byte (a key collision
    cannot map a wrong id; a collision inside the table itself disables this path)."""

    MAX_WIDTH = 64  # ids are 1-64 characters (serving.service validates request ids the same way)
    _COEFFS = np.random.default_rng(20261121).integers(1, 2**63, MAX_WIDTH, dtype=np.uint64)

    def __init__(self, episode_ids: Sequence[str]) -> None:
        encoded = [e.encode() for e in episode_ids]
        self.ok = bool(encoded) and max(map(len, encoded)) <= self.MAX_WIDTH
        if not self.ok:
            return
        table = np.array(encoded, dtype=np.bytes_)
        self.grid = table.view(np.uint8).reshape(len(table), table.dtype.itemsize)
        n_slots = 1 << (2 * len(table) - 1).bit_length()  # a power of two, at least twice the ids
        self.slots, self.ok = kernels.build_slots(self.grid, self._COEFFS[: self.grid.shape[1]], n_slots)

    def rows(self, ids: np.ndarray, unknown: int) -> np.ndarray | None:
        """Rows of `ids` (`unknown` for ids not in the table); None when this path cannot be used."""
        if not self.ok or ids.dtype.itemsize > self.MAX_WIDTH:
            return None
        width = ids.dtype.itemsize
        grid = np.ascontiguousarray(ids).view(np.uint8).reshape(len(ids), width)
        return kernels.byte_key_rows(grid, self._COEFFS[:width], self.slots, self.grid, unknown)


def feature_matrix(
    pool: Pool,
    *,
    user_u: Mapping[str, Any] | None,
    user_cw: Mapping[str, Mapping[str, Any]] | None,
    episodes: EpisodeTable,
    item_stats: np.ndarray,
    spec: RankerFeatures = SERVING_SPEC,
    rows: np.ndarray | None = None,
    stat_rows: np.ndarray | None = None,
) -> np.ndarray:
    """[len(pool), spec.n_features] float32: the candidates' columns gathered in one compiled pass
    (serving.kernels.gather_candidates), then the trainer's transforms (finish_matrix). Equal to the
    training mapping (tests/serving/test_rerank.py). item_stats: [n, len(ITEM_COLUMNS)] for the
    candidates (zeros where unknown), or, with `stat_rows` [n], a whole store (serving.shared.ItemStats)
    and each candidate's row in it. rows: `pool.rows_in(episodes)`, when the caller already has them."""
    rows = pool.rows_in(episodes) if rows is None else rows
    if stat_rows is None:
        item_stats = np.ascontiguousarray(item_stats, dtype=np.float32).reshape(len(rows), len(ITEM_COLUMNS))
        stat_rows = np.arange(len(rows))
    same, want = series_context(user_cw or {}, episodes.series_code_of)
    raw, gw = kernels.gather_candidates(
        rows,
        stat_rows,
        item_stats,
        episodes.episode_numbers,
        episodes.genre_weights,
        episodes.series_codes,
        same,
        want,
        np.asarray(pool.retrieval_scores, dtype=np.float64),
    )
    return finish_matrix(user_u, raw[0], raw[1], raw[2], raw[3], raw[4], gw, raw[6], raw[5], spec)


def rank(pool: Pool, scores: np.ndarray) -> Iterator[Ranked]:
    """Candidates by descending score (ties keep pool order), lazily: the rules usually stop after a few
    dozen, so the other ~450 Ranked objects (and their ids) are never built."""
    return _ranked(pool, *rank_order(pool, scores))


def rank_order(pool: Pool, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions in the pool by descending score, ties in pool order; the scores as float32). A score
    per candidate and all finite, or ValueError (the caller then serves retrieval order)."""
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if scores.shape[0] != len(pool) or not np.all(np.isfinite(scores)):
        raise ValueError(
            f"ranker returned {scores.shape[0]} scores (finite: {np.isfinite(scores).all()}) for {len(pool)} candidates"
        )
    return np.argsort(-scores, kind="stable"), scores


def retrieval_order(pool: Pool) -> Iterator[Ranked]:
    """The degraded rung: pool order, scored by retrieval score."""
    return _ranked(pool, *retrieval_ranking(pool))


def retrieval_ranking(pool: Pool) -> tuple[np.ndarray, np.ndarray]:
    """`retrieval_order` as (positions, scores), like `rank_order`."""
    return np.arange(len(pool)), pool.retrieval_scores


_CHUNK = 32  # candidates turned into Python values at a time


def _ranked(pool: Pool, order: np.ndarray, values: np.ndarray) -> Iterator[Ranked]:
    """Ranked candidates in `order`, converted from numpy a chunk at a time: the rules usually take a
    few dozen, and converting all ~500 rows, codes and scores up front made ~2,000 Python objects per
    request that were never used."""
    ids, names = pool.index.episode_ids, pool.names
    rows, codes = pool.rows, pool.source_codes
    for start in range(0, len(order), _CHUNK):
        at = order[start : start + _CHUNK]
        for row, code, value in zip(rows[at].tolist(), codes[at].tolist(), values[at].tolist(), strict=True):
            yield Ranked(ids[row], value, names[code])
