from __future__ import annotations

import base64
import collections
import json

import numpy as np
import pytest

from cliffhanger.catalog import Catalog
from cliffhanger.synth import Generated, LogRecord, generate, read_log, write_log, write_world
from cliffhanger.synth.__main__ import main
from cliffhanger.synth.faults import FaultKnobs
from cliffhanger.synth.log import LogError
from cliffhanger.synth.world import Truth

FILES = {"catalog.json", "users.json", "truth.json", "events.jsonl", "manifest.json"}


def test_round_trip_preserves_exact_bytes(tmp_path):
    records = [
        LogRecord(5, b'{"a":1}'),
        LogRecord(3, '{"t":"\u00e9\u4e2d\U0001f600"}'.encode()),
        LogRecord(9, b"\xff\xfe not utf-8"),
        LogRecord(9, b""),
        LogRecord(10, b'line\nbreak "quoted" \\ \x00'),
    ]
    path = tmp_path / "events.jsonl"
    assert write_log(path, records) == len(records)
    assert list(read_log(path)) == records  # order and bytes kept exactly, even arrival_ms out of order
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"arrival_ms": 5, "data": '{"a":1}'}
    assert lines[2] == {"arrival_ms": 9, "data_b64": base64.b64encode(b"\xff\xfe not utf-8").decode()}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json", "not a JSON line"),
        ('{"data": "x"}', "arrival_ms"),
        ('{"arrival_ms": "5", "data": "x"}', "arrival_ms"),
        ('{"arrival_ms": 5}', "'data' or 'data_b64'"),
        ('{"arrival_ms": 5, "data_b64": "%%%"}', "not base64"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, reason):
    path = tmp_path / "events.jsonl"
    path.write_text('{"arrival_ms": 1, "data": "ok"}\n' + line + "\n")
    with pytest.raises(LogError, match=f"events.jsonl:2: .*{reason}"):
        list(read_log(path))


def test_write_world(tmp_path, small: Generated):
    man = write_world(tmp_path, small.world, small.messages, knobs=small.knobs, days=small.days)
    assert {p.name for p in tmp_path.iterdir()} == FILES
    assert json.loads((tmp_path / "manifest.json").read_text()) == man
    assert man["messages"] == len(small.messages) == sum(man["faults"].values())
    assert man["valid_events"] == len(small.events) == sum(man["event_types"].values())
    assert man["event_types"] == dict(collections.Counter(se.event.event_type for se in small.events))
    assert man["knobs"]["late_rate"] == small.knobs.late_rate and man["seed"] == 7
    records = list(read_log(tmp_path / "events.jsonl"))
    assert [(r.arrival_ms, r.payload) for r in records] == [(m.arrival_ms, m.payload) for m in small.messages]
    assert Catalog.load(tmp_path / "catalog.json").to_dict() == small.world.catalog.to_dict()
    truth = Truth.load(tmp_path / "truth.json")
    assert truth.user_ids == small.world.truth.user_ids
    assert np.allclose(truth.affinity, small.world.truth.affinity, atol=1e-4)
    users = json.loads((tmp_path / "users.json").read_text())["users"]
    assert [u["user_id"] for u in users] == list(truth.user_ids)


def test_same_seed_byte_identical_files_different_seed_different(tmp_path):
    knobs = FaultKnobs(0.05, 0.05, 0.05, 0.05)
    for name, seed in [("a", 21), ("b", 21), ("c", 22)]:
        g = generate(seed, "small", knobs=knobs)
        write_world(tmp_path / name, g.world, g.messages, knobs=knobs, days=g.days)
    for f in FILES:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert (tmp_path / "a" / "events.jsonl").read_bytes() != (tmp_path / "c" / "events.jsonl").read_bytes()


def test_cli_generate(tmp_path, capsys):
    out = tmp_path / "world"
    main(["generate", "--seed", "3", "--out", str(out), "--preset", "small", "--users", "20", "--late-rate", "0.1"])
    assert {p.name for p in out.iterdir()} == FILES
    man = json.loads((out / "manifest.json").read_text())
    assert man["n_users"] == 20 and man["faults"]["late"] > 0
    printed = capsys.readouterr().out
    assert "play_start" in printed and f"late {man['faults']['late']:,}" in printed


def test_cli_rejects_bad_rates(tmp_path):
    with pytest.raises(SystemExit):
        main(["generate", "--seed", "3", "--out", str(tmp_path), "--malformed-rate", "2"])
