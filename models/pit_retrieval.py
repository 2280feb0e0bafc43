"""Two-tower data from point-in-time examples (pipelines/training_data.py): the query of every training
example is built by `models.query_features.query_inputs` from the user's feature row AS IT STOOD
before the event, the same mapping serving applies to the live Bigtable row, so there is no skew.

    data = load_training_data("work/examples")                 # examples, cut snapshots, cuts, schema
    split = build_split("world", catalog, data.examples)       # the time split, for evaluation
    pit = PointInTimeData(split, config, item_side, data)      # a RetrievalData for fit_two_tower
    result, _ = fit_two_tower(split, make_target(split, "valid"), config, data=pit)

Split: each (user, episode) pair gets one label, positive if any example of it is labelled 1 (the
user completed the episode within the label horizon), else negative; the pair is placed in the part
(train / valid / test, by the pipeline's event-time cuts) of its first deciding example, so
evaluation masks train pairs exactly like models/evaluation.py does for every other split.
Training examples: train-part play_starts labelled 1 (autoplayed next episodes included), one row
each, query = query_inputs(row before the play_start), candidate = the episode.
Evaluation queries: each user's row at the part's cut (`snapshots`), context of their next request.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cliffhanger.catalog import Catalog
from models.query_features import QueryContext, query_inputs
from models.retrieval_training import RetrievalData, SideFeatures, TwoTowerConfig
from models.splits import SPLIT_FILES, Split, from_rows


class TrainingDataError(ValueError):
    """Training data that cannot be used; the message names the file or prefix."""


@dataclasses.dataclass
class TrainingData:
    examples: list[dict[str, Any]]
    snapshots: dict[str, dict[str, dict[str, Any]]]  # cut ("valid" | "test") -> user_id -> snapshot
    cuts: dict[str, int]
    schema: dict[str, Any]

    def part(self, name: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [ex for ex in self.examples if ex["part"] == name and (kind is None or ex["kind"] == kind)]


def read_json_lines(pattern: str) -> list[Any]:
    """Every JSON line of every file matching `pattern` (local or gs://), files in name order."""
    from apache_beam.io.filesystems import FileSystems

    paths = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    out = []
    for path in paths:
        with FileSystems.open(path) as handle:
            for n, line in enumerate(handle.read().decode("utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise TrainingDataError(f"{path}:{n}: not a JSON line: {exc}") from None
    return out


def load_training_data(prefix: str) -> TrainingData:
    """Read the training_data pipeline's outputs under `prefix`."""
    examples = read_json_lines(prefix + "-examples-*")
    if not examples:
        raise TrainingDataError(f"{prefix}-examples-*: no training examples (was the event log empty of valid events?)")
    snapshots: dict[str, dict[str, dict[str, Any]]] = collections.defaultdict(dict)
    for snap in read_json_lines(prefix + "-snapshots-*"):
        snapshots[snap["cut"]][snap["user_id"]] = snap
    return TrainingData(
        examples, dict(snapshots), _read_json(prefix + "-split.json"), _read_json(prefix + "-schema.json")
    )


def _read_json(path: str) -> dict[str, Any]:
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        return {}
    with FileSystems.open(path) as handle:
        return json.loads(handle.read())


MIN_CATALOG_COVERAGE = 0.5  # below this share of examples on catalog episodes, the catalog is the wrong one


def build_split(
    name: str, catalog: Catalog, examples: Sequence[Mapping[str, Any]], catalog_path: str = "catalog"
) -> Split:
    """Examples -> time split of labelled (user, episode) pairs over every catalog episode.

    TrainingDataError (naming `catalog_path`) when most examples are on episodes the catalog lacks.
    """
    episodes = sorted(e.episode_id for e in catalog.episodes())
    known = frozenset(episodes)
    covered = sum(ex["episode_id"] in known for ex in examples)
    if covered < MIN_CATALOG_COVERAGE * len(examples):
        raise TrainingDataError(
            f"{catalog_path}: only {covered} of {len(examples)} examples are on episodes of this catalog "
            "(the wrong catalog for these events?)"
        )
    decided: dict[tuple[str, str], tuple[float, str]] = {}
    for ex in sorted(examples, key=lambda ex: (ex["event_time_ms"], ex["event_id"])):
        if ex["episode_id"] not in known:
            continue
        key = (ex["user_id"], ex["episode_id"])
        if ex["label"] and (key not in decided or decided[key][0] < 1.0):
            decided[key] = (1.0, ex["part"])
        elif key not in decided:
            decided[key] = (0.0, ex["part"])
    if not decided:
        raise TrainingDataError(f"{name}: no example refers to a catalog episode (wrong catalog for these events?)")
    rows: dict[str, list[tuple[str, str, float]]] = {p: [] for p in SPLIT_FILES}
    for (user, episode), (label, part) in decided.items():
        rows[part].append((user, episode, label))
    return from_rows(name, rows, item_universe=episodes)


def as_model_inputs(raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """query_inputs output -> arrays tf accepts (object string arrays become numpy unicode)."""
    return {k: v.astype(str) if v.dtype == object else v for k, v in raw.items()}


def example_context(ex: Mapping[str, Any]) -> QueryContext:
    return QueryContext(ex["user_id"], ex["u"], ex["country"], ex["device"], ex["hour"])


class PointInTimeData(RetrievalData):
    """RetrievalData whose queries are point-in-time feature rows mapped by query_inputs.

    The tower configuration must use only what query_inputs builds: no negative_history, and
    genre_mix is the row's genre_mix_30m (not the history's genres).
    """

    def __init__(
        self,
        split: Split,
        config: TwoTowerConfig,
        item_side: dict[str, np.ndarray],
        data: TrainingData,
    ):
        if config.use_negative_history:
            raise ValueError("query_inputs builds no negative_history: set use_negative_history=False")
        train = [ex for ex in data.part("train", "play_start") if ex["label"]]
        item_index = {item: i for i, item in enumerate(split.item_ids)}
        train = [ex for ex in train if ex["episode_id"] in item_index]
        if not train:
            raise TrainingDataError(f"{split.name}: no positive train-part play_start examples to train on")
        contexts = [example_context(ex) for ex in train]
        countries = collections.Counter(c.country for c in contexts)
        devices = collections.Counter(c.device for c in contexts)
        self.default_context = (countries.most_common(1)[0][0], devices.most_common(1)[0][0])
        user_side = {
            "country": np.array(sorted(countries), dtype=object),
            "device": np.array(sorted(devices), dtype=object),
            "hour": np.zeros(1, dtype=np.int64),
        }  # only read for vocabularies (query_spec) and to switch the hour input on
        super().__init__(split, config, SideFeatures(item=item_side, user=user_side))
        user_index = {user: u for u, user in enumerate(split.user_ids)}
        self.train_queries = as_model_inputs(query_inputs(contexts, config.history_len))
        self.train_items = np.array([item_index[ex["episode_id"]] for ex in train], dtype=np.int64)
        self.train_users = np.array([user_index.get(ex["user_id"], -1) for ex in train], dtype=np.int64)
        counts = np.bincount(self.train_items, minlength=split.n_items).astype(np.float64)
        self.item_prob = (counts / counts.sum()).astype(np.float32)
        self.snapshots = data.snapshots
        self.eval_cut = "valid"

    def eval_contexts(self, users: np.ndarray, cut: str | None = None) -> list[QueryContext]:
        """The query serving would build for each user at the cut (a brand-new user: no row)."""
        snaps = self.snapshots.get(cut or self.eval_cut, {})
        out = []
        for u in users:
            user_id = self.split.user_ids[u]
            s = snaps.get(user_id)
            if s is None or not s["country"]:
                out.append(QueryContext(user_id, None, *self.default_context, 0))
            else:
                out.append(QueryContext(user_id, s["u"], s["country"], s["device"], s["hour"]))
        return out

    def eval_query_features(self, users: np.ndarray) -> dict[str, np.ndarray]:
        return as_model_inputs(query_inputs(self.eval_contexts(users), self.config.history_len))

    def epoch_examples(self, rng: np.random.Generator) -> dict:
        order = rng.permutation(self.train_items.size)
        items, users = self.train_items[order], self.train_users[order]
        negatives = np.empty(order.size, dtype=np.int64)
        for k, u in enumerate(users):
            neg = self.neg_by_user[u] if u >= 0 else ()
            negatives[k] = neg[rng.integers(len(neg))] if len(neg) else rng.integers(self.split.n_items)
        batch = {
            "query": {k: v[order] for k, v in self.train_queries.items()},
            "candidate": self.item_features(items),
            "candidate_prob": self.item_prob[items],
        }
        if self.config.use_negatives:
            batch["negative"] = self.item_features(negatives)
        return batch


def query_embeddings(
    query_model: Any, contexts: Sequence[QueryContext], history_len: int, batch: int = 4096
) -> np.ndarray:
    """[len(contexts), d] float32 from the in-memory query tower, inputs via query_inputs."""
    parts = [
        np.asarray(query_model(as_model_inputs(query_inputs(contexts[i : i + batch], history_len))))
        for i in range(0, len(contexts), batch)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
