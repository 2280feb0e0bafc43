"""pipelines/training_data.run(argv) on the DirectRunner, and the streaming-vs-batch feature equality."""

from __future__ import annotations

import glob
import json

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from cliffhanger.synth import FaultKnobs, generate, write_world
from pipelines import training_data
from transforms import rowkeys
from transforms.compute_features import ROWS, ComputeFeatures
from transforms.event_log import InputError, ReadEventLog, with_arrival
from transforms.feature_rows import entity_row_key
from transforms.parse import EVENTS, ParseEvents, with_event_time
from transforms.training_examples import FINAL_ITEMS, FINAL_USERS, PointInTimeExamples, WriteJsonLines

KNOBS = FaultKnobs(duplicate_rate=0.03, out_of_order_rate=0.05, late_rate=0.02, malformed_rate=0.02)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    g = generate(11, "small", knobs=KNOBS)
    out = tmp_path_factory.mktemp("world")
    manifest = write_world(out, g.world, g.messages, knobs=g.knobs, days=g.days)
    return out, manifest


def _lines(pattern):
    out = []
    for path in sorted(glob.glob(pattern)):
        with open(path) as f:
            out += [json.loads(line) for line in f if line.strip()]
    return out


def _load(path):
    with open(path) as f:
        return json.load(f)


def test_run_writes_examples_snapshots_split_dead_letters_and_schema(world, tmp_path):
    out, manifest = world
    prefix = str(tmp_path / "td")
    training_data.run(
        ["--events", str(out / "events.jsonl"), "--catalog", str(out / "catalog.json"), "--output", prefix]
    )
    examples = _lines(prefix + "-examples-*")
    assert examples and {ex["kind"] for ex in examples} == {"impression", "play_start"}
    assert {ex["part"] for ex in examples} == {"train", "valid", "test"}
    assert all(set(ex) >= {"u", "cw", "i", "label"} for ex in examples)
    n_impressions = manifest["event_types"]["impression"]
    assert sum(ex["kind"] == "impression" for ex in examples) <= n_impressions  # too-late ones are dropped
    dead = _lines(prefix + "-dead-letter-*")
    faults = manifest["faults"]
    assert sum(d["stage"] == "parse" for d in dead) == faults["malformed"]
    assert all(d["reason"] for d in dead)
    schema = _load(prefix + "-schema.json")
    assert schema["counters"]["training_data.examples"] == len(examples)
    assert schema["counters"]["parse.malformed"] == faults["malformed"]
    cuts = _load(prefix + "-split.json")
    assert cuts["valid"] < cuts["test"]
    assert {s["cut"] for s in _lines(prefix + "-snapshots-*")} == {"valid", "test"}


def _missing(d):
    return d / "missing.jsonl"


def _empty(d):
    (d / "empty.jsonl").write_text("")
    return d / "empty.jsonl"


def _csv(d):
    (d / "x.csv").write_text("a,b\n1,2\n")
    return d / "x.csv"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (_missing, r"missing\.jsonl: event log not found"),
        (_empty, r"empty\.jsonl: event log is empty"),
        (_csv, r"x\.csv: not an event log"),
    ],
)
def test_bad_events_file_is_named(world, tmp_path, make, match):
    out, _ = world
    path = make(tmp_path)
    with pytest.raises(InputError, match=match):
        training_data.run(
            ["--events", str(path), "--catalog", str(out / "catalog.json"), "--output", str(tmp_path / "o")]
        )


def test_unknown_catalog_is_named(world, tmp_path):
    out, _ = world
    with pytest.raises(InputError, match=r"nowhere\.json: catalog not found"):
        training_data.run(["--events", str(out / "events.jsonl"), "--catalog", str(tmp_path / "nowhere.json"), "--output", str(tmp_path / "o")])  # fmt: skip
    with pytest.raises(SystemExit, match="error: .*nowhere.json"):
        training_data.main(["--events", str(out / "events.jsonl"), "--catalog", str(tmp_path / "nowhere.json"), "--output", str(tmp_path / "o")])  # fmt: skip


def _cell_json(update):
    return [
        json.dumps([update.row_key.decode(), update.family, col, update.timestamp_ms, update.seq, value.decode()])
        for col, value in update.cells
    ]


def _batch_cells(kind, value):
    if kind == "user":
        user_id, u, cws = value
        key = rowkeys.user_key(user_id).decode()
        return [json.dumps([key, "u", col, v]) for col, v in u.items()] + [
            json.dumps([key, "cw", series, cw]) for series, cw in cws.items()
        ]
    episode_id, i = value
    key = entity_row_key(f"e|{episode_id}").decode()
    return [json.dumps([key, "i", col, v]) for col, v in i.items()]


def test_streaming_and_batch_compute_identical_features(world, tmp_path):
    """The STREAMING ComputeFeatures (stateful, per bundle) and the batch replay, on the same parsed events
    (duplicates, out-of-order, late and malformed included): the final u / cw / episode i values agree."""
    out, _ = world
    catalog = str(out / "catalog.json")
    with beam.Pipeline(options=PipelineOptions(runner="BundleBasedDirectRunner")) as p:
        parsed = p | ReadEventLog(str(out / "events.jsonl"))
        events = parsed["records"] | ParseEvents(600, 120)
        rows = events[EVENTS] | "EventTime" >> beam.Map(with_event_time) | ComputeFeatures(catalog, None)
        _ = rows[ROWS] | "StreamCells" >> beam.FlatMap(_cell_json) | "WS" >> WriteJsonLines(str(tmp_path / "stream"))
        batch = events[EVENTS] | beam.Map(with_arrival) | PointInTimeExamples(catalog)
        users = batch[FINAL_USERS] | "UserCells" >> beam.FlatMap(lambda v: _batch_cells("user", v))
        items = batch[FINAL_ITEMS] | "ItemCells" >> beam.FlatMap(lambda v: _batch_cells("item", v))
        _ = (users, items) | beam.Flatten() | "WB" >> WriteJsonLines(str(tmp_path / "batch"))

    stream: dict[tuple, tuple] = {}
    for key, family, col, ts, seq, value in (json.loads(x) for x in _lines(str(tmp_path / "stream-*"))):
        compared = family in ("u", "cw") or (family == "i" and key.startswith("e#"))
        if compared and ((key, family, col) not in stream or (ts, seq) >= stream[(key, family, col)][:2]):
            stream[(key, family, col)] = (ts, seq, json.loads(value))  # the value a Bigtable reader sees
    streamed = {k: v[2] for k, v in stream.items()}
    batched = {tuple(x[:3]): x[3] for x in (json.loads(s) for s in _lines(str(tmp_path / "batch-*")))}
    assert len(batched) > 1000
    assert streamed.keys() == batched.keys()
    diffs = [(k, streamed[k], batched[k]) for k in streamed if streamed[k] != batched[k]]
    assert diffs == []
