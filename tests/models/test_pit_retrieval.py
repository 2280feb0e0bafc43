"""Point-in-time retrieval data and ranker rows: the split, the queries (through query_inputs), the columns."""

from __future__ import annotations

import numpy as np
import pytest

from models.pit_ranker import ranker_rows
from models.pit_retrieval import PointInTimeData, TrainingData, TrainingDataError, build_split
from models.query_features import QueryContext, genre_vector, query_inputs
from models.ranker_features import Candidate, ranker_matrix
from models.retrieval_synthetic import item_side_features
from models.retrieval_training import TwoTowerConfig
from tests.factories import T0, catalog

CAT = catalog()
U = {"genre_mix_30m": {"thriller": 1.0}, "recent_completed": ["s0002e001"], "completion_rate_7d": 0.5}


def ex(event_id, user, episode, t, label, part, kind="play_start", u=U, cw=None, i=None):
    series = episode[:5]
    return {
        "event_id": event_id, "kind": kind, "user_id": user, "episode_id": episode, "series_id": series,
        "episode_number": int(episode[-3:]), "event_time_ms": t, "arrival_ms": t, "country": "US", "device": "ios",
        "hour": 12, "session_id": f"{user}-1", "u": u, "cw": cw, "i": i, "label": label, "part": part,
    }  # fmt: skip


EXAMPLES = [
    ex("a", "u1", "s0001e001", T0, 0, "train", kind="impression", u=None),
    ex("b", "u1", "s0001e001", T0 + 1, 1, "train"),  # the same pair turns positive: one positive row
    ex("c", "u1", "s0001e002", T0 + 2, 1, "train"),
    ex("d", "u2", "s0002e002", T0 + 3, 0, "train", kind="impression"),
    ex("e", "u1", "s0002e003", T0 + 4, 1, "valid"),
    ex("f", "u2", "s0001e003", T0 + 5, 1, "test"),
]


def test_split_labels_each_pair_once_in_the_part_that_decided_it():
    split = build_split("t", CAT, EXAMPLES)
    rows = {
        p: sorted((split.user_ids[u], split.item_ids[i], float(lab)) for u, i, lab in zip(part.users, part.items, part.labels, strict=True))
        for p, part in (("train", split.train), ("valid", split.valid), ("test", split.test))
    }  # fmt: skip
    assert rows["train"] == [("u1", "s0001e001", 1.0), ("u1", "s0001e002", 1.0), ("u2", "s0002e002", 0.0)]
    assert rows["valid"] == [("u1", "s0002e003", 1.0)] and rows["test"] == [("u2", "s0001e003", 1.0)]
    assert split.n_items == 10  # every catalog episode is rankable


def test_split_refuses_a_catalog_that_does_not_cover_the_examples():
    foreign = [dict(e, episode_id="s9999e001") for e in EXAMPLES]
    with pytest.raises(TrainingDataError, match="cat.json: only 0 of 6"):
        build_split("t", CAT, foreign, "cat.json")


def test_training_queries_are_query_inputs_of_the_row_before_the_event():
    split = build_split("t", CAT, EXAMPLES)
    snaps = {"valid": {"u1": {"cut": "valid", "user_id": "u1", "u": U, "country": "US", "device": "ios", "hour": 20}}}
    data = TrainingData(EXAMPLES, snaps, {}, {})
    config = TwoTowerConfig(use_negative_history=False, history_len=4)
    pit = PointInTimeData(split, config, item_side_features(split.item_ids, CAT), data)
    assert pit.train_items.size == 2  # train-part play_starts labelled 1
    batch = pit.epoch_examples(np.random.default_rng(0))
    expected = query_inputs([QueryContext("u1", U, "US", "ios", 12)], 4)
    np.testing.assert_array_equal(batch["query"]["history"][0], expected["history"][0].astype(str))
    np.testing.assert_allclose(batch["query"]["genre_mix"][0], genre_vector({"thriller": 1.0}))
    assert set(batch["query"]) == set(expected)  # nothing the serving mapping does not build
    users = np.array([split.user_ids.index("u1"), split.user_ids.index("u2")])
    q = pit.eval_query_features(users)
    assert q["hour"].tolist() == [20, 0]  # u2 has no snapshot at the cut: a brand-new user's query
    with pytest.raises(ValueError, match="negative_history"):
        PointInTimeData(split, TwoTowerConfig(), item_side_features(split.item_ids, CAT), data)


def test_ranker_rows_are_ranker_matrix_rows():
    cw = {"episode_id": "s0001e001", "episode_number": 1, "completed": True}
    item = {"plays_24h": 3, "completion_rate_24h": 0.5, "trending": 1.5}
    example = ex("x", "u1", "s0001e002", T0, 1, "valid", kind="impression", cw=cw, i=item)
    got = ranker_rows([example], CAT, np.array([0.7], dtype=np.float32))
    want = ranker_matrix(U, {"s0001": cw}, [Candidate("s0001e002", "s0001", 2, CAT.genres("s0001"), 0.7, item)])
    np.testing.assert_array_equal(got, want)
