"""Compiled (numba) loops for the request path's per-candidate work: a candidate list's byte ids to
catalog rows, blending sources into the pool, the ranker's inputs, and the series rules.

Why compiled: a cache miss does the same few steps on ~500 candidates, and written as numpy calls each
step is a dozen calls on small arrays plus their temporaries (or, for the rules, a dozen dict and
attribute look-ups per candidate). On the loaded benchmark server a request's data and code are cold
again by the time its coroutine runs, so those calls cost ~3x what a hot loop shows, and memory
touched matters more than operations counted. One loop per step, with no temporaries, measured
lower server CPU per miss in interleaved A/B runs (README, "Performance").

The modules to read stay serving/blend.py, serving/rerank.py and serving/rules.py: each kernel is
one of their cores, pinned by a specification test: the first, pure-Python blend (test_blend.py),
a dict (test_kernels.py), the trainer's ranker_matrix (test_rerank.py) and apply_rules
(test_rules.py). Bounds are checked (an index bug raises IndexError instead of corrupting memory; it
costs nothing measurable here). `cache=True` keeps the machine code in `__pycache__` (or
NUMBA_CACHE_DIR when that is not writable), so only the first process after a change compiles (~1-2 s
per kernel); `warm()` compiles or loads them all at start-up, before the server takes requests.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, boundscheck=True)
def _key(grid, i, coeffs):
    key = np.uint64(0)
    for j in range(grid.shape[1]):
        key += np.uint64(grid[i, j]) * coeffs[j]
    return key


@njit(cache=True, boundscheck=True)
def build_slots(grid, coeffs, n_slots):
    """An open-addressing table of the ids in `grid` (uint8 [n, width], NUL-padded): slots[h] =
    (key, row + 1), 0 = empty, linear probing from key mod n_slots (a power of two, >= 2n). Returns
    (slots, ok): ok is False when two ids share a key (the caller then maps another way)."""
    slots = np.zeros((n_slots, 2), dtype=np.uint64)
    mask = np.uint64(n_slots - 1)
    for row in range(grid.shape[0]):
        key = _key(grid, row, coeffs)
        h = key & mask
        while slots[h, 1] != 0:
            if slots[h, 0] == key:
                return slots, False
            h = (h + np.uint64(1)) & mask
        slots[h, 0] = key
        slots[h, 1] = np.uint64(row + 1)
    return slots, True


@njit(cache=True, boundscheck=True)
def byte_key_rows(ids, coeffs, slots, table, unknown):
    """Rows of fixed-width byte ids (uint8 [n, width], NUL-padded) in `build_slots`' table of the
    ids `table` (uint8 [rows, table width]); every hit is compared byte for byte (`unknown` when
    absent). One slot probe (key and row side by side) and one row of `table` per id: on a loaded
    server these tables are cold, and a binary search cost ~8 cache misses per id instead."""
    n, width = ids.shape
    table_width = table.shape[1]
    mask = np.uint64(slots.shape[0] - 1)
    # Three passes, so that each pass's cache misses are independent of each other and overlap: keys,
    # then slots, then the byte checks.
    keys = np.empty(n, dtype=np.uint64)
    for i in range(n):
        keys[i] = _key(ids, i, coeffs)
    out = np.empty(n, dtype=np.intp)
    for i in range(n):
        key = keys[i]
        h = key & mask
        r = -1
        while slots[h, 1] != 0:
            if slots[h, 0] == key:
                r = np.intp(slots[h, 1]) - 1
                break
            h = (h + np.uint64(1)) & mask
        out[i] = r
    for i in range(n):
        r = out[i]
        if r < 0:
            out[i] = unknown
            continue
        for j in range(max(width, table_width)):
            a = ids[i, j] if j < width else 0
            b = table[r, j] if j < table_width else 0
            if a != b:
                out[i] = unknown
                break
    return out


@njit(cache=True, boundscheck=True)
def blend_rows(rows, starts, ratios, r_rows, r_scores, pool_size, size):
    """serving.blend.blend's core. Sources are `rows[starts[s]:starts[s + 1]]`, already in claiming
    order (shortest first), each with its ratio; `r_rows`/`r_scores` are the retrieval list. Returns
    (rows, source positions, retrieval scores) of the pool, ordered by slot key (j + 0.5) / ratio,
    ties by source order. A candidate's retrieval score is its first (best) score in the retrieval
    list, else the list's minimum."""
    n_sources = len(starts) - 1
    best = np.empty(size, dtype=np.float64)
    has = np.zeros(size, dtype=np.bool_)
    floor = 0.0
    if len(r_rows):
        floor = np.inf
        for i in range(len(r_rows) - 1, -1, -1):  # backwards: the first occurrence is written last
            best[r_rows[i]] = r_scores[i]
            has[r_rows[i]] = True
            floor = min(floor, r_scores[i])
    cap = min(starts[n_sources], pool_size)
    out_rows = np.empty(cap, dtype=np.intp)
    out_codes = np.empty(cap, dtype=np.intp)
    out_scores = np.empty(cap, dtype=np.float64)
    slots = np.empty(cap, dtype=np.float64)
    seen = np.zeros(size, dtype=np.bool_)
    left = pool_size
    ratio_left = 0.0
    for s in range(n_sources):
        ratio_left += ratios[s]
    k = 0
    for s in range(n_sources):
        quota = left if s == n_sources - 1 else int(np.rint(left * ratios[s] / ratio_left))
        taken = 0
        for i in range(starts[s], starts[s + 1]):
            if taken >= quota:
                break
            r = rows[i]
            if seen[r]:  # claimed by a shorter source, or a repeat of this one's
                continue
            seen[r] = True
            out_rows[k] = r
            out_codes[k] = s
            out_scores[k] = best[r] if has[r] else floor
            slots[k] = (taken + 0.5) / ratios[s]
            taken += 1
            k += 1
        left -= taken
        ratio_left -= ratios[s]
    order = np.argsort(slots[:k], kind="mergesort")  # stable: ties keep source order
    return out_rows[order], out_codes[order], out_scores[order]


@njit(cache=True, boundscheck=True)
def pick_rows(
    order,
    rows,
    series_of,
    series_start,
    series_len,
    entry_offset,
    completed,
    release_ms,
    licensed,
    now_ms,
    next_row,
    n,
    max_per_series,
    unknown,
):
    """serving.rules.apply_rules over catalog rows (serving.rules.apply_rules_rows builds the inputs).
    Candidates are `rows[order]`, best first. Each is mapped to its series' entry row (from
    `entry_offset[series]`, the first row not `completed`), then skipped when unknown, already listed,
    completed, not released or licensed, or over `max_per_series`; `next_row` (-1: none) is pinned
    first. Returns (candidate positions taken, their entry rows, counts [unknown, unlicensed,
    completed, duplicate, series_cap]); the pinned row is entries[0] with position -1."""
    taken = np.empty(n + 1, dtype=np.intp)
    entries = np.empty(n + 1, dtype=np.intp)
    counts = np.zeros(5, dtype=np.int64)
    seen = np.zeros(len(series_of), dtype=np.bool_)
    per_series = np.zeros(len(series_start) + 1, dtype=np.int64)
    k = 0
    if next_row >= 0 and n > 0 and max_per_series > 0:
        taken[0] = -1
        entries[0] = next_row
        seen[next_row] = True
        per_series[series_of[next_row]] += 1
        k = 1
    for i in order:
        if k >= n:
            break
        r = rows[i]
        if r >= unknown:
            counts[0] += 1
            continue
        if seen[r]:
            counts[3] += 1
            continue
        s = series_of[r]
        entry = -1
        for e in range(series_start[s] + entry_offset[s], series_start[s] + series_len[s]):
            if not completed[e]:
                entry = e
                break
        if entry < 0:
            counts[2] += 1
            continue
        if seen[entry]:
            counts[3] += 1
            continue
        if release_ms[entry] > now_ms or not licensed[s]:
            counts[1] += 1
            continue
        if per_series[s] >= max_per_series:
            counts[4] += 1
            continue
        taken[k] = i
        entries[k] = entry
        seen[entry] = True
        per_series[s] += 1
        k += 1
    return taken[:k], entries[:k], counts


@njit(cache=True, boundscheck=True)
def gather_candidates(
    rows, stat_rows, item_table, episode_numbers, genre_weights, series_codes, same, want, retrieval_scores
):
    """The ranker's per-candidate inputs in one pass (serving.rerank.feature_matrix): for candidate i at
    catalog-table row rows[i], raw[:, i] = (retrieval score, plays_24h, completion_rate_24h, trending
    (item_table[stat_rows[i]]), episode number, same series, is next episode (per series code: `same`,
    `want` from models.ranker_features.series_context)), float32; and its genre weights. The columns
    come out contiguous, for finish_matrix's numpy transforms."""
    n = len(rows)
    n_genres = genre_weights.shape[1]
    raw = np.empty((7, n), dtype=np.float32)
    gw = np.empty((n, n_genres), dtype=np.float32)
    for i in range(n):
        r = rows[i]
        j = stat_rows[i]
        episode_number = episode_numbers[r]
        code = series_codes[r]
        raw[0, i] = np.float32(retrieval_scores[i])
        raw[1, i] = item_table[j, 0]
        raw[2, i] = item_table[j, 1]
        raw[3, i] = item_table[j, 2]
        raw[4, i] = episode_number
        raw[5, i] = same[code]
        raw[6, i] = np.float32(1.0) if want[code] == episode_number else np.float32(0.0)
        for g in range(n_genres):
            gw[i, g] = genre_weights[r, g]
    return raw, gw


def warm() -> None:
    """Compile (or load from the cache) every kernel with each argument type the request path passes,
    so that no request pays for a compilation: arrays parsed from a Bigtable cell are read-only views
    (np.frombuffer), and numba types those apart from writable ones."""
    for writable in (True, False):
        grid = _array(np.zeros((1, 4), dtype=np.uint8), writable)
        coeffs = np.ones(4, dtype=np.uint64)
        slots, _ = build_slots(grid, coeffs, 2)
        byte_key_rows(grid, coeffs, slots, np.zeros((1, 4), dtype=np.uint8), 1)
        one = np.zeros(1, dtype=np.intp)
        scores = _array(np.zeros(1), writable)
        blend_rows(one, np.array([0, 1], dtype=np.intp), np.ones(1), one, scores, 1, 1)
    flag = np.zeros(2, dtype=np.bool_)
    zero = np.zeros(1, dtype=np.intp)
    pick_rows(zero, zero, zero, zero, zero, zero, flag, np.zeros(1, dtype=np.int64), flag, 0, -1, 1, 1, 1)
    f32 = np.zeros(1, dtype=np.float32)
    grid32 = np.zeros((1, 3), dtype=np.float32)
    gather_candidates(zero, zero, grid32, f32, grid32, zero, f32, f32, np.zeros(1))


def _array(a: np.ndarray, writable: bool) -> np.ndarray:
    a.flags.writeable = writable
    return a
