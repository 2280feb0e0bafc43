"""Streaming features on PyFlink: the Beam streaming job's computation (pipelines/streaming_features.py +
transforms/compute_features.py) for teams on Flink, from the same feature definitions
(transforms/features.py) and the same row layout (transforms/feature_rows.py).

    event log lines -> ParseLines -> keyBy(user) -> UserFeatures (dedupe: UserState.apply is False on a
    duplicate, which is dropped) -> accepted events -> keyBy(entity_keys) -> EntityFeatures -> row updates

Input: an exported event log (JSON lines of {arrival_ms, data | data_b64}, the `cliffhanger.synth.log`
format that `python -m cliffhanger.synth` writes and the batch Beam jobs read); `data` is the wire event,
parsed with `cliffhanger.events.parse_event`, and `arrival_ms` stands in for the Pub/Sub publish time in
the lateness gate. Pub/Sub has no PyFlink connector, so this job reads files (another source, e.g.
Kafka, would replace `ReadLines`); `build()` takes any DataStream of log lines.

Output: row updates (row key, family, cells, cell timestamp, seq; see `row_update_to_json`) and dead
letters (the raw payload base64-encoded with reason / stage / field, the Beam job's DeadLetter record),
both as JSON lines written by Flink FileSinks under `--output` / `--dead_letters` (part files, committed
at checkpoints and at the end of a bounded input). The sinks are pluggable: `build()` returns the two
string streams and `run()` attaches file sinks. Bigtable writes from Flink are not implemented: the
current `google-cloud-bigtable` pulls protobuf 7 and grpcio 1.85 over the protobuf 5 / grpcio 1.65 that
apache-flink pins (a sink with the client in `open()`, applying `RowUpdate`s as the Beam job's
BigtableSink does, needs an older client that fits those pins). Change notices (feature-changes /
item-changes) are not emitted either.

Run (in the Flink venv: `make flink-venv` creates .venv-flink from flink/requirements.txt; Java 17):
    .venv-flink/bin/python -m pipelines.flink_features --events var/world/events.jsonl \\
        --catalog var/world/catalog.json --output out/flink/rows --dead_letters out/flink/dead_letters
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterable

from pyflink.common import Configuration, Types, WatermarkStrategy
from pyflink.common.serialization import Encoder
from pyflink.datastream import (
    KeyedProcessFunction,
    OutputTag,
    ProcessFunction,
    RuntimeExecutionMode,
    StreamExecutionEnvironment,
)
from pyflink.datastream.connectors.file_system import (
    BucketAssigner,
    FileSink,
    FileSource,
    OutputFileConfig,
    RollingPolicy,
    StreamFormat,
)
from pyflink.datastream.state import ValueStateDescriptor

from cliffhanger.catalog_watch import load_catalog  # the Beam jobs' loader: re-read when catalog.json changes
from cliffhanger.config import Settings
from cliffhanger.dead_letters import DeadLetter, classify
from cliffhanger.events import PlaybackEvent
from cliffhanger.synth.log import LogError, decode_line  # the one decoder of the log format
from transforms.feature_rows import RowUpdate, entity_keys, entity_update, new_entity_state, user_updates
from transforms.features import UserState, decode, encode

_DEFAULTS = Settings.from_env()
# Shipped to the Python workers (env.add_python_file), so a remote cluster can import the shared code.
_PACKAGES = ("cliffhanger", "transforms", "pipelines")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEAD_LETTERS = OutputTag("dead_letters", Types.STRING())
USER_ROWS = OutputTag("user_rows", Types.STRING())


# -- records ------------------------------------------------------------------------------------------


def row_update_to_json(u: RowUpdate) -> str:
    """One row update as a JSON line: cells as {column: decoded feature value} (`encode` gives the bytes back)."""
    return json.dumps(
        {
            "row_key": u.row_key.decode(),
            "family": u.family,
            "cells": {col: decode(val) for col, val in u.cells},
            "timestamp_ms": u.timestamp_ms,
            "seq": u.seq,
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def row_update_from_json(line: str) -> RowUpdate:
    obj = json.loads(line)
    cells = tuple((col, encode(val)) for col, val in sorted(obj["cells"].items()))
    return RowUpdate(obj["row_key"].encode(), obj["family"], cells, obj["timestamp_ms"], obj["seq"])


def parse_line(line: str, allowed_lateness_ms: int, max_skew_ms: int) -> PlaybackEvent | str:
    """One event-log line -> a timely PlaybackEvent, or the dead-letter JSON line saying why not.

    Stages as in the Beam jobs: `record` (not a log record), `parse` (not a valid event), `timeliness`."""
    try:
        record = decode_line(line, "event log")
    except LogError as exc:
        return DeadLetter(line.encode("utf-8"), str(exc), "record", "", 0).to_json()
    result = classify(record.payload, record.arrival_ms, allowed_lateness_ms, max_skew_ms)
    return result.to_json() if isinstance(result, DeadLetter) else result


# -- operators ----------------------------------------------------------------------------------------


class _ParseLines(ProcessFunction):
    """Log line -> PlaybackEvent (main output) or dead-letter JSON (DEAD_LETTERS)."""

    def __init__(self, allowed_lateness_s: int, max_clock_skew_s: int):
        self._lateness_ms = allowed_lateness_s * 1000
        self._skew_ms = max_clock_skew_s * 1000

    def open(self, runtime_context):
        metrics = runtime_context.get_metrics_group().add_group("parse")
        self._valid = metrics.counter("valid")
        self._dead = metrics.counter("dead_letters")

    def process_element(self, line, ctx):
        if not line.strip():
            return
        out = parse_line(line, self._lateness_ms, self._skew_ms)
        if isinstance(out, str):
            self._dead.inc()
            yield DEAD_LETTERS, out
            return
        self._valid.inc()
        yield out


class _UpdateUserState(KeyedProcessFunction):
    """Per user: fold each event into UserState; a duplicate (apply -> False) is dropped, an accepted one
    is forwarded (main output) and the user's rows go to USER_ROWS."""

    def __init__(self, catalog_path: str):
        self._catalog_path = catalog_path

    def open(self, runtime_context):
        self._state = runtime_context.get_state(ValueStateDescriptor("user", Types.PICKLED_BYTE_ARRAY()))
        metrics = runtime_context.get_metrics_group().add_group("features")
        self._duplicates = metrics.counter("duplicate_events")
        self._applied = metrics.counter("events_applied")
        self._unknown_series = metrics.counter("unknown_series")
        load_catalog(self._catalog_path)  # read once up front: a missing file fails the job at start

    def _genres(self, series_id: str) -> tuple[str, ...]:
        try:
            return load_catalog(self._catalog_path).genres(series_id)
        except KeyError:
            self._unknown_series.inc()
            return ()

    def process_element(self, event, ctx):
        state = self._state.value() or UserState()
        if not state.apply(event, self._genres(event.series_id)):
            self._duplicates.inc()
            return
        self._state.update(state)
        self._applied.inc()
        for u in user_updates(event.user_id, state, [event]):
            yield USER_ROWS, row_update_to_json(u)
        yield event


def _by_entity(event: PlaybackEvent) -> Iterable[tuple[str, PlaybackEvent]]:
    for key in entity_keys(event):
        yield key, event


class _UpdateEntityState(KeyedProcessFunction):
    """Per episode / series / cohort key: (key, accepted event) -> the entity's row when it changed."""

    def open(self, runtime_context):
        self._state = runtime_context.get_state(ValueStateDescriptor("entity", Types.PICKLED_BYTE_ARRAY()))

    def process_element(self, keyed, ctx):
        entity_key, event = keyed
        state = self._state.value() or new_entity_state(entity_key)
        if not state.apply(event):
            return
        self._state.update(state)
        yield row_update_to_json(entity_update(entity_key, state))


# -- the job ------------------------------------------------------------------------------------------


def build(lines, catalog_path: str, allowed_lateness_s: int, max_clock_skew_s: int):
    """DataStream of event-log lines -> (row update JSON lines, dead-letter JSON lines), both STRING."""
    events = lines.process(_ParseLines(allowed_lateness_s, max_clock_skew_s), Types.PICKLED_BYTE_ARRAY()).name(
        "ParseLines"
    )
    accepted = (
        events.key_by(lambda e: e.user_id, Types.STRING())
        .process(_UpdateUserState(catalog_path), Types.PICKLED_BYTE_ARRAY())
        .name("UserFeatures")
    )
    entity_rows = (
        accepted.flat_map(_by_entity, Types.PICKLED_BYTE_ARRAY())
        .name("ByEntity")
        .key_by(lambda kv: kv[0], Types.STRING())
        .process(_UpdateEntityState(), Types.STRING())
        .name("EntityFeatures")
    )
    rows = accepted.get_side_output(USER_ROWS).union(entity_rows)
    return rows, events.get_side_output(DEAD_LETTERS)


def jsonl_sink(path: str, prefix: str) -> FileSink:
    """JSON lines under `path` (part files <prefix>-*.jsonl), rolled and committed on checkpoints."""
    return (
        FileSink.for_row_format(path, Encoder.simple_string_encoder())
        .with_output_file_config(OutputFileConfig.builder().with_part_prefix(prefix).with_part_suffix(".jsonl").build())
        .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())  # no date-hour subdirectories
        .with_rolling_policy(RollingPolicy.on_checkpoint_rolling_policy())
        .build()
    )


def make_env(parallelism: int, checkpoint_interval_ms: int) -> StreamExecutionEnvironment:
    """A streaming environment whose Python workers run this interpreter and can import the shared code."""
    config = Configuration()
    config.set_string("python.executable", sys.executable)  # the Flink venv, whatever is first on PATH
    config.set_string("python.client.executable", sys.executable)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_runtime_mode(RuntimeExecutionMode.STREAMING)  # per-key state in arrival order, as the Beam job
    env.set_parallelism(parallelism)
    env.enable_checkpointing(checkpoint_interval_ms)  # file sinks commit on checkpoints (and at end of input)
    for package in _PACKAGES:
        env.add_python_file(os.path.join(_REPO, package))
    return env


def run(argv: list[str] | None = None):
    """Build and execute the job; returns Flink's JobExecutionResult (a bounded input finishes)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", required=True, help="event log: a JSON-lines file or a directory of them")
    parser.add_argument("--catalog", required=True, help="the world's catalog.json (local path)")
    parser.add_argument("--output", required=True, help="directory for the row updates (JSON lines)")
    parser.add_argument("--dead_letters", required=True, help="directory for the dead letters (JSON lines)")
    parser.add_argument("--allowed_lateness_s", type=int, default=_DEFAULTS.allowed_lateness_s)
    parser.add_argument("--max_clock_skew_s", type=int, default=_DEFAULTS.max_clock_skew_s)
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--checkpoint_interval_ms", type=int, default=5_000)
    args = parser.parse_args(argv)
    for path in (args.events, args.catalog):
        if not os.path.exists(path):
            parser.error(f"{path}: not found")

    env = make_env(args.parallelism, args.checkpoint_interval_ms)
    source = FileSource.for_record_stream_format(StreamFormat.text_line_format(), args.events).build()
    lines = env.from_source(source, WatermarkStrategy.no_watermarks(), "ReadLines")
    rows, dead_letters = build(lines, os.path.abspath(args.catalog), args.allowed_lateness_s, args.max_clock_skew_s)
    rows.sink_to(jsonl_sink(args.output, "rows")).name("WriteRows")
    dead_letters.sink_to(jsonl_sink(args.dead_letters, "dead-letters")).name("WriteDeadLetters")
    return env.execute("cliffhanger-flink-features")


def read_jsonl_dir(path: str) -> list[str]:
    """Every committed line under a sink directory (part files; in-progress / hidden files skipped)."""
    out: list[str] = []
    for root, _, files in os.walk(path):
        for name in sorted(files):
            if name.startswith("."):
                continue
            with open(os.path.join(root, name), encoding="utf-8") as handle:
                out.extend(line for line in handle.read().splitlines() if line)
    return out


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
