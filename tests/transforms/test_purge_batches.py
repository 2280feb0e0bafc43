"""ParseChanges (notices / catalog events -> keys, bad ones dead-lettered) and BatchPurges (dedupe +
batch per target on a 1 s processing-time trigger, driven by TestStream)."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from cliffhanger import edge_keys
from cliffhanger.catalog_events import LICENSING_CHANGE, SERIES_DROP, CatalogEvent
from cliffhanger.notices import ChangeNotice
from transforms.parse import DEAD_LETTER, RawEvent
from transforms.purge_batches import CATALOG, KEYS, NOTICE, BatchPurges, ParseChanges, PurgeBatch

SECRET = "unit-test-secret"
T = 1_795_262_400_000


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv(edge_keys.SECRET_ENV, SECRET)


def _options(streaming=False):
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = streaming
    return options


def test_parse_notices_maps_to_keys_and_dead_letters_bad_ones():
    good = [
        ChangeNotice("user", "u000001", "completed_episode", 4, T),
        ChangeNotice("series", "s0001", "candidates", 1, T),
        ChangeNotice("cohort", "BR|android", "trending", 2, T),
    ]
    bad = [
        (b"not json", ""),
        (b'{"entity": "user", "id": "u1", "reason": "x", "version": "7", "event_time_ms": 1}', "version"),
        (b'{"entity": "planet", "id": "p1", "reason": "x", "version": 7, "event_time_ms": 1}', "entity"),
        (ChangeNotice("cohort", "BR", "trending", 2, T).to_json(), "id"),
    ]
    raws = [RawEvent(n.to_json(), T) for n in good] + [RawEvent(p, T + 1) for p, _ in bad]
    with TestPipeline(options=_options()) as p:
        out = p | beam.Create(raws) | ParseChanges(NOTICE)
        assert_that(
            out[KEYS],
            equal_to([edge_keys.user_key("u000001", SECRET.encode()), "s-s0001", "c-BR-android"]),
            label="keys",
        )
        assert_that(
            out[DEAD_LETTER] | beam.Map(lambda d: (d.payload, d.field, d.stage, d.reason.startswith("notice: "))),
            equal_to([(payload, field, "parse", True) for payload, field in bad]),
            label="dead",
        )


def test_parse_catalog_events():
    events = [
        CatalogEvent(SERIES_DROP, "s0001", T, 3, episode_id="s0001e010"),
        CatalogEvent(LICENSING_CHANGE, "s0002", T, 4, countries=("BR",)),
    ]
    raws = [RawEvent(e.to_json(), T) for e in events] + [RawEvent(b'{"type": "series:drop", "series_id": "s1"}', T)]
    with TestPipeline(options=_options()) as p:
        out = p | beam.Create(raws) | ParseChanges(CATALOG)
        expected = ["s-s0001", "e-s0001e010", "s-s0002", "c-BR-ios", "c-BR-android", "c-BR-web", "c-BR-tv"]
        assert_that(out[KEYS], equal_to(expected), label="keys")
        assert_that(out[DEAD_LETTER] | beam.Map(lambda d: d.field), equal_to(["event_time_ms"]), label="dead")


def test_notice_parse_fails_at_setup_without_the_secret(monkeypatch):
    monkeypatch.delenv(edge_keys.SECRET_ENV)
    with pytest.raises(Exception, match=edge_keys.SECRET_ENV), TestPipeline(options=_options()) as p:
        _ = p | beam.Create([RawEvent(b"{}", T)]) | ParseChanges(NOTICE)


def test_batches_dedupe_within_a_second_per_target_and_fire_on_processing_time():
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements(["u-1", "u-2", "u-1"])  # duplicates inside a bundle
        .add_elements(["u-2", "u-3"])  # and across bundles of the same pane
        .advance_processing_time(1.1)  # pane 1 fires ~1 s after its first key
        .add_elements(["u-1"])  # u-1 again after the pane was sent: purged again
        .advance_processing_time(0.5)
        .add_elements(["u-4"])  # 0.5 s later: same pane as u-1
        .advance_processing_time(0.6)
        .advance_processing_time(5)  # nothing new: nothing sent
        .advance_watermark_to_infinity()
    )
    with TestPipeline(options=_options(streaming=True)) as p:
        batches = p | stream | BatchPurges(("varnish", "fastly"), 1)
        expected = [
            PurgeBatch(t, keys) for t in ("varnish", "fastly") for keys in (("u-1", "u-2", "u-3"), ("u-1", "u-4"))
        ]
        assert_that(batches, equal_to(expected))


def test_batch_window_must_be_whole_seconds():
    with pytest.raises(ValueError, match="whole number"):
        BatchPurges(("varnish",), 0.5)
    with pytest.raises(ValueError, match="at least one target"):
        BatchPurges((), 1)
