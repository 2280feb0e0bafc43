"""models/ranker_features.py: one row per candidate, values from the feature rows, zeros when missing."""

from __future__ import annotations

import math

import numpy as np

from models.ranker_features import MICRODRAMA_FEATURES, Candidate, ranker_matrix

COL = {name: j for j, name in enumerate(MICRODRAMA_FEATURES.columns)}


def test_values_come_from_the_rows():
    user_u = {
        "completion_rate_7d": 0.75,
        "skip_rate_7d": 0.1,
        "binge_depth": 3,
        "genre_mix_30m": {"romance": 0.5, "ceo": 0.5},
    }
    user_cw = {"s0001": {"episode_number": 4, "completed": True}}
    cands = [
        Candidate(
            "s0001e005",
            "s0001",
            5,
            ("romance", "ceo"),
            1.5,
            {"plays_24h": 99, "completion_rate_24h": 0.6, "trending": 3.0},
        ),
        Candidate("s0002e001", "s0002", 1, ("thriller",), 0.2, None),  # no item row yet
    ]
    x = ranker_matrix(user_u, user_cw, cands)
    assert x.shape == (2, MICRODRAMA_FEATURES.n_features) and x.dtype == np.float32
    assert x[0, COL["ctx_is_next_episode"]] == 1.0  # completed ep 4 -> ep 5 is next
    assert x[1, COL["ctx_same_series"]] == 0.0
    # genre affinity: candidate genres normalised (0.5 romance, 0.5 ceo) . mix (0.5, 0.5) = 0.5
    assert x[0, COL["user_genre_affinity"]] == 0.5 and x[1, COL["user_genre_affinity"]] == 0.0
    assert math.isclose(x[0, COL["item_log_plays_24h"]], math.log1p(99), rel_tol=1e-6)
    assert x[1, COL["item_log_plays_24h"]] == 0.0
    assert math.isclose(x[1, COL["user_log_binge_depth"]], math.log1p(3), rel_tol=1e-6)


def test_a_new_user_and_no_candidates():
    assert ranker_matrix(None, None, []).shape == (0, MICRODRAMA_FEATURES.n_features)
    x = ranker_matrix(None, None, [Candidate("s0001e001", "s0001", 1, (), 0.0, None)])
    assert x[0, COL["ctx_is_next_episode"]] == 0.0 and x[0, COL["user_completion_rate_7d"]] == 0.0


def test_column_variant_gives_the_identical_matrix():
    """ranker_matrix_columns(candidate_columns(c)) == ranker_matrix(c), bit for bit, on random rows
    with the awkward cases: missing item rows, partial rows, unknown genres, no genres, cw edge cases."""
    from cliffhanger.catalog import GENRES
    from models.ranker_features import candidate_columns, ranker_matrix_columns

    rng = np.random.default_rng(3)
    for trial in range(20):
        n = int(rng.integers(0, 600))
        cands = []
        for i in range(n):
            series = f"s{int(rng.integers(0, 30)):04d}"
            genres = tuple(rng.choice(list(GENRES) + ["unknown-genre"], int(rng.integers(0, 4))))
            kind = i % 4
            item = None
            if kind == 1:
                item = {"plays_24h": int(rng.integers(0, 10_000)), "completion_rate_24h": float(rng.random())}
            elif kind >= 2:
                item = {
                    "plays_24h": float(rng.integers(0, 10_000)),
                    "completion_rate_24h": float(rng.random()),
                    "trending": float(rng.random() * 50),
                }
            cands.append(
                Candidate(f"{series}e{i:03d}", series, int(rng.integers(1, 80)), genres, float(rng.normal()), item)
            )
        user_u = (
            None
            if trial == 0
            else {
                "completion_rate_7d": float(rng.random()),
                "skip_rate_7d": float(rng.random()),
                "hover_skip_rate_7d": float(rng.random()),
                "binge_depth": int(rng.integers(0, 20)),
                "genre_mix_30m": {g: float(rng.random()) for g in rng.choice(GENRES, 3)},
            }
        )
        user_cw = {
            f"s{int(s):04d}": {"episode_number": int(rng.integers(1, 80)), "completed": bool(rng.random() < 0.5)}
            for s in rng.integers(0, 30, int(rng.integers(0, 12)))
        }
        user_cw["s0000"] = {}  # an empty state counts as no state in both
        want = ranker_matrix(user_u, user_cw, cands)
        got = ranker_matrix_columns(user_u, user_cw, candidate_columns(cands))
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
