"""pipelines/flink_features.run(argv) on a local Flink mini-cluster == the feature definitions applied directly.

Runs in the Flink venv (.venv-flink, flink/requirements.txt), not the main one: `make test` runs
`.venv-flink/bin/python -m pytest tests_flink`. The Beam streaming job is held to the same direct
computation in tests/pipelines/test_streaming_features.py, so streaming Beam == Flink == transforms/features.py.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import subprocess
import sys
import time

import pytest

from cliffhanger.config import Settings
from cliffhanger.events import EventError, parse_event, timeliness_error
from cliffhanger.synth import FaultKnobs, generate, write_log
from pipelines import flink_features
from transforms.feature_rows import (
    entity_keys,
    entity_update,
    latest_per_cell,
    new_entity_state,
    user_updates,
)
from transforms.features import UserState, decode

SEED = 7
N_USERS = 60  # ~3,400 messages over one day
KNOBS = FaultKnobs(duplicate_rate=0.05, out_of_order_rate=0.05, late_rate=0.02, malformed_rate=0.05)
UNREADABLE = ["not a log record", '{"arrival_ms": "soon", "data": "{}"}', '{"arrival_ms": 1}']
_SETTINGS = Settings()
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LATENESS_MS, SKEW_MS = _SETTINGS.allowed_lateness_s * 1000, _SETTINGS.max_clock_skew_s * 1000


@pytest.fixture(scope="module")
def flink_run(tmp_path_factory):
    """The synthetic world's messages (duplicates, out-of-order, late, malformed) plus unreadable log lines,
    through the job once on a 2-way parallel mini-cluster; -> (generated world, work dir, seconds)."""
    g = generate(SEED, "default", n_users=N_USERS, days=1, knobs=KNOBS)
    work = tmp_path_factory.mktemp("flink")
    events = work / "events.jsonl"
    write_log(events, g.messages)
    with events.open("a", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in UNREADABLE)
    g.world.catalog.save(str(work / "catalog.json"))
    started = time.monotonic()
    flink_features.run(
        [
            *("--events", str(events), "--catalog", str(work / "catalog.json")),
            *("--output", str(work / "rows"), "--dead_letters", str(work / "dead")),
            *("--parallelism", "2", "--checkpoint_interval_ms", "2000"),
        ]
    )
    return g, work, time.monotonic() - started


def _expected_cells(messages, catalog):
    """Every (row, family, column) -> value, by the feature definitions applied directly to the timely,
    valid events in arrival order (UserState.apply dedupes; entities see only accepted events)."""
    users: dict[str, UserState] = {}
    accepted: dict[str, list] = collections.defaultdict(list)
    entities: dict = {}
    for record in messages:
        try:
            e = parse_event(record.payload)
        except EventError:
            continue
        if timeliness_error(e.event_time_ms, record.arrival_ms, LATENESS_MS, SKEW_MS) is not None:
            continue
        if users.setdefault(e.user_id, UserState()).apply(e, catalog.genres(e.series_id)):
            accepted[e.user_id].append(e)
            for k in entity_keys(e):
                entities.setdefault(k, new_entity_state(k)).apply(e)
    updates = [u for user_id, s in users.items() for u in user_updates(user_id, s, accepted[user_id])]
    # An entity row is written once an event changes it (plays and completes; ComputeFeatures does the same).
    updates += [entity_update(k, s) for k, s in entities.items() if s.applied]
    return {cell: decode(value) for cell, (_, _, value) in latest_per_cell(updates).items()}


def test_flink_features_equal_the_definitions_applied_directly(flink_run):
    g, work, seconds = flink_run
    kinds = collections.Counter(m.kind for m in g.messages)
    assert len(g.messages) > 3000 and all(kinds[k] > 20 for k in ("duplicate", "out_of_order", "late", "malformed"))

    updates = [flink_features.row_update_from_json(line) for line in flink_features.read_jsonl_dir(work / "rows")]
    got = {cell: decode(value) for cell, (_, _, value) in latest_per_cell(updates).items()}
    expected = _expected_cells(g.messages, g.world.catalog)
    assert len(expected) > 1000
    assert got.keys() == expected.keys()
    assert got == expected

    # Dedupe against the generator's ground truth: each timely event counted once per user.
    timely = {m.event_id for m in g.messages if m.kind in ("ok", "out_of_order")}
    applied: dict[bytes, int] = collections.defaultdict(int)  # user row -> events applied (the u row's seq)
    for u in updates:
        if u.family == "u":
            applied[u.row_key] = max(applied[u.row_key], u.seq)
    assert sum(applied.values()) == len(timely)
    print(f"flink job: {len(g.messages)} messages -> {len(updates)} row updates in {seconds:.1f} s")


def test_bad_lines_are_dead_lettered_with_the_reason(flink_run):
    g, work, _ = flink_run
    dead = [json.loads(line) for line in flink_features.read_jsonl_dir(work / "dead")]
    late_ids = {m.event_id for m in g.messages if m.kind == "late"}
    want = collections.Counter()
    for m in g.messages:
        if m.kind == "malformed":
            want["parse", m.payload] += 1
        elif m.event_id in late_ids:  # a late event, and the duplicates of one, arrive too late
            want["timeliness", m.payload] += 1
    for line in UNREADABLE:
        want["record", line.encode()] += 1
    got = collections.Counter((d["stage"], base64.b64decode(d["payload_b64"])) for d in dead)
    assert got == want
    assert all(d["reason"] for d in dead)
    assert {d["field"] for d in dead if d["stage"] == "timeliness"} == {"event_time"}
    assert all(d["reason"].startswith("late:") for d in dead if d["stage"] == "timeliness")
    assert all(d["field"] == "" and d["arrival_ms"] == 0 for d in dead if d["stage"] == "record")


def test_row_update_json_round_trips():
    g = generate(SEED, "default", n_users=3, days=1)
    e = g.events[0].event
    state = UserState()
    state.apply(e, g.world.catalog.genres(e.series_id))
    for u in user_updates(e.user_id, state, [e]):
        assert flink_features.row_update_from_json(flink_features.row_update_to_json(u)) == u


def test_parse_line_names_the_stage():
    ok = json.dumps({"arrival_ms": 0, "data": "x"})
    assert json.loads(flink_features.parse_line(ok, LATENESS_MS, SKEW_MS))["stage"] == "parse"
    assert json.loads(flink_features.parse_line("[]", LATENESS_MS, SKEW_MS))["stage"] == "record"


def test_the_shared_feature_code_imports_without_beam():
    """apache-flink installs its own Beam (2.61) into this venv, so an import error would not catch feature
    code that starts importing Beam: check the modules the Flink job shares with the Beam jobs directly."""
    shared = "cliffhanger.events, cliffhanger.catalog, cliffhanger.config, cliffhanger.synth, transforms.feature_rows"
    code = f"import sys, {shared}; print(sorted(m for m in ('apache_beam', 'tensorflow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=_REPO)
    assert out.stdout.strip() == "[]"
