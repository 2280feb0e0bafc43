"""Beam composites of the batch training pipeline around the pure point-in-time logic
(transforms/point_in_time.py): per-user and per-episode replays, the item join, JSON-lines sinks.

Input: (arrival_ms, PlaybackEvent) pairs of parsed, timely events (duplicates included: the user
replay deduplicates exactly as the streaming pipeline's UserState does).
"""

from __future__ import annotations

import json
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.compute_features import load_catalog
from transforms.point_in_time import (
    DEFAULT_SPLIT_FRACTIONS,
    EXAMPLE_KINDS,
    LABEL_HORIZON_MS,
    cuts_from_quantiles,
    replay_item,
    replay_user,
    with_item_features,
)

EXAMPLES = "examples"
ACCEPTED = "accepted"
SNAPSHOTS = "snapshots"
FINAL_USERS = "final_users"
FINAL_ITEMS = "final_items"
CUTS = "cuts"
_ITEM_SNAPSHOTS = "item_snapshots"


class _ReplayUserFn(beam.DoFn):
    """(user_id, [(arrival_ms, event)]) -> examples (main), accepted events, cut snapshots, final rows.

    No counters here: the DirectRunner drops the counters of a ParDo with side inputs (seen with Beam
    2.77), so the stages right after this one count (_KeyExample, _KeyAccepted).
    """

    def __init__(self, catalog_path: str, horizon_ms: int):
        self._catalog_path = catalog_path
        self._horizon_ms = horizon_ms

    def setup(self):
        self._catalog = load_catalog(self._catalog_path)

    def _genres(self, series_id: str) -> tuple[str, ...]:
        return self._catalog.genres(series_id) if series_id in self._catalog else ()

    def process(self, kv, cuts):
        user_id, records = kv
        replay = replay_user(user_id, list(records), self._genres, cuts, self._horizon_ms)
        yield from replay.examples
        for record in replay.accepted:
            yield beam.pvalue.TaggedOutput(ACCEPTED, record)
        for snapshot in replay.snapshots:
            yield beam.pvalue.TaggedOutput(SNAPSHOTS, snapshot)
        yield beam.pvalue.TaggedOutput(FINAL_USERS, (user_id, replay.final_u, replay.final_cw))


class _KeyExample(beam.DoFn):
    """example -> (event_id, example); counts examples and positives."""

    def __init__(self) -> None:
        self._examples = Metrics.counter("training_data", "examples")
        self._positives = Metrics.counter("training_data", "positive_examples")

    def process(self, example):
        self._examples.inc()
        self._positives.inc(example["label"])
        yield example["event_id"], example


class _KeyAccepted(beam.DoFn):
    """Accepted (arrival_ms, event) -> (episode_id, record); counts them and those of unknown series."""

    def __init__(self, catalog_path: str):
        self._catalog_path = catalog_path
        self._accepted = Metrics.counter("training_data", "accepted_events")
        self._unknown = Metrics.counter("training_data", "unknown_series_events")

    def setup(self):
        self._catalog = load_catalog(self._catalog_path)

    def process(self, record):
        self._accepted.inc()
        if record[1].series_id not in self._catalog:
            self._unknown.inc()
        yield record[1].episode_id, record


class _ReplayItemFn(beam.DoFn):
    """(episode_id, [accepted (arrival_ms, event)]) -> (event_id, `i` before it) (main), final `i`."""

    def process(self, kv):
        episode_id, records = kv
        snaps, final = replay_item(records)
        yield from snaps
        yield beam.pvalue.TaggedOutput(FINAL_ITEMS, (episode_id, final))


def _join(kv, cuts):
    """CoGroupByKey result for one event id -> the finished example (the item side may be absent)."""
    _, grouped = kv
    items = list(grouped["item"])
    for example in grouped["example"]:
        yield with_item_features(example, items[0] if items else None, cuts)


class SplitCuts(beam.PTransform):
    """(arrival_ms, event) -> one {"valid": ms, "test": ms} dict: percentiles of example event times."""

    def __init__(self, fractions: tuple[float, float] = DEFAULT_SPLIT_FRACTIONS):
        super().__init__()
        self._fractions = fractions

    def expand(self, events):
        return (
            events
            | "ExampleTimes" >> beam.FlatMap(lambda r: [r[1].event_time_ms] if r[1].event_type in EXAMPLE_KINDS else [])
            | "Percentiles" >> beam.ApproximateQuantiles.Globally(101)
            | "Cuts" >> beam.Map(cuts_from_quantiles, self._fractions)
        )


class PointInTimeExamples(beam.PTransform):
    """(arrival_ms, PlaybackEvent) -> {examples, snapshots, final_users, final_items, cuts}.

    examples: dicts with transforms.point_in_time.EXAMPLE_FIELDS; snapshots: per user and cut;
    final_users: (user_id, u, {series: cw}); final_items: (episode_id, i) at the end of the log.
    """

    def __init__(
        self,
        catalog_path: str,
        horizon_ms: int = LABEL_HORIZON_MS,
        fractions: tuple[float, float] = DEFAULT_SPLIT_FRACTIONS,
    ):
        super().__init__()
        self._catalog_path = catalog_path
        self._horizon_ms = horizon_ms
        self._fractions = fractions

    def expand(self, events):
        cuts = events | "SplitCuts" >> SplitCuts(self._fractions)
        users = (
            events
            | "KeyByUser" >> beam.Map(lambda r: (r[1].user_id, r))
            | "GroupByUser" >> beam.GroupByKey()
            | "ReplayUsers"
            >> beam.ParDo(_ReplayUserFn(self._catalog_path, self._horizon_ms), beam.pvalue.AsSingleton(cuts))
            .with_outputs(ACCEPTED, SNAPSHOTS, FINAL_USERS, main=EXAMPLES)
        )  # fmt: skip
        items = (
            users[ACCEPTED]
            | "KeyByEpisode" >> beam.ParDo(_KeyAccepted(self._catalog_path))
            | "GroupByEpisode" >> beam.GroupByKey()
            | "ReplayItems" >> beam.ParDo(_ReplayItemFn()).with_outputs(FINAL_ITEMS, main=_ITEM_SNAPSHOTS)
        )
        examples = (
            {"example": users[EXAMPLES] | "KeyExamples" >> beam.ParDo(_KeyExample()), "item": items[_ITEM_SNAPSHOTS]}
            | "JoinItemFeatures" >> beam.CoGroupByKey()
            | "Finish" >> beam.FlatMap(_join, beam.pvalue.AsSingleton(cuts))
        )  # fmt: skip
        return {
            EXAMPLES: examples,
            SNAPSHOTS: users[SNAPSHOTS],
            FINAL_USERS: users[FINAL_USERS],
            FINAL_ITEMS: items[FINAL_ITEMS],
            CUTS: cuts,
        }


def to_json_line(value: Any) -> str:
    """Compact, key-sorted JSON (dataclass dead letters use their own to_json)."""
    if hasattr(value, "to_json"):
        return value.to_json()
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class WriteJsonLines(beam.PTransform):
    """Values -> `<prefix>-SSSSS-of-NNNNN<suffix>` JSON lines (one file exactly when `single`)."""

    def __init__(self, prefix: str, suffix: str = ".jsonl", single: bool = False):
        super().__init__()
        self._prefix, self._suffix, self._single = prefix, suffix, single

    def expand(self, values):
        sharding = {"shard_name_template": "", "num_shards": 1} if self._single else {}
        return (
            values
            | "ToJson" >> beam.Map(to_json_line)
            | "Write" >> beam.io.WriteToText(self._prefix, file_name_suffix=self._suffix, **sharding)
        )
