"""Reading the exported event log: fail-fast input checks naming the file, and dead-lettered bad lines."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from cliffhanger.synth.log import encode_record
from tests.factories import T0, event, write_catalog
from transforms.event_log import InputError, ReadEventLog, check_catalog, check_event_log, record_to_raw, with_arrival
from transforms.parse import DEAD_LETTER, RawEvent


def test_missing_log_is_named(tmp_path):
    path = str(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match=r"nope\.jsonl: event log not found"):
        check_event_log(path)


def test_empty_log_is_named(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("\n\n")
    with pytest.raises(InputError, match=r"events\.jsonl: event log is empty"):
        check_event_log(str(path))


@pytest.mark.parametrize(
    "content",
    [
        b"user,item,label\nu1,i1,1\n",  # a CSV
        json.dumps([{"arrival_ms": 1, "data": "{}"}]).encode(),  # a JSON array, not JSON lines
        b"\x89PNG\r\n\x1a\n\x00\x00\x00",  # binary
        b'{"arrival": 1, "payload": "x"}\n',  # JSON lines, but not log records
    ],
)
def test_a_file_that_is_not_an_event_log_is_named(tmp_path, content):
    path = tmp_path / "events.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"events\.jsonl: not an event log"):
        check_event_log(str(path))


def test_valid_log_passes(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(encode_record(T0, event().to_json()) + "\n")
    check_event_log(str(path))


def test_catalog_checks_name_the_file(tmp_path):
    with pytest.raises(InputError, match=r"missing\.json: catalog not found"):
        check_catalog(str(tmp_path / "missing.json"))
    bad = tmp_path / "catalog.json"
    bad.write_text('{"events": []}')
    with pytest.raises(InputError, match=r"catalog\.json: not a catalog\.json"):
        check_catalog(str(bad))
    bad.write_text("not json at all")
    with pytest.raises(InputError, match=r"catalog\.json: not a catalog\.json"):
        check_catalog(str(bad))
    assert len(check_catalog(write_catalog(tmp_path))) == 2


def test_record_to_raw_round_trips_both_encodings():
    payload = event().to_json()
    assert record_to_raw(encode_record(T0, payload).encode()) == RawEvent(payload, T0)
    binary = b"\xff\xfe not utf-8"
    assert record_to_raw(encode_record(T0 + 1, binary).encode()) == RawEvent(binary, T0 + 1)


def test_read_event_log_dead_letters_bad_lines_and_stamps_arrival(tmp_path):
    good = event()
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        (encode_record(T0 + 7, good.to_json()) + "\n").encode()
        + b"this is not json\n"
        + b'{"arrival_ms": "soon", "data": "{}"}\n'
        + b"\xff\xfe\n"
    )
    with TestPipeline(options=beam.options.pipeline_options.PipelineOptions(runner="BundleBasedDirectRunner")) as p:
        out = p | ReadEventLog(str(path))
        arrivals = out["records"] | beam.Map(with_arrival) | beam.Map(lambda r: (r[0], r[1].payload))
        assert_that(arrivals, equal_to([(T0 + 7, good.to_json())]), label="records")
        stages = out[DEAD_LETTER] | beam.Map(lambda d: d.stage)
        assert_that(stages, equal_to(["record"] * 3), label="dead letters")
