"""transforms/edge_warm.WarmNextUp on a TestPipeline, against a real Varnish (repo VCL) in front of the
chunk origin: a play_start warms the next episode once per rendition; other events and the last episode
warm nothing; chunks the origin cannot serve are reported as errors."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from benchmarks.chunk_replay import chunk_origin
from cliffhanger.catalog import Catalog
from tests.factories import T0, catalog, event, write_catalog
from transforms.edge_warm import WarmConfig, WarmNextUp, WarmResult


@pytest.fixture
def edge(varnish, tmp_path):
    only_s0001 = Catalog([catalog().series("s0001")])  # the origin has no media for s0002: its chunks 404
    origin = chunk_origin(only_s0001, tmp_path / "chunks")
    try:
        yield origin, varnish(backend_port=origin.server_address[1])
    finally:
        origin.shutdown()


def test_play_starts_warm_the_next_episode_once_per_rendition(edge, tmp_path):
    origin, cache = edge
    events = [
        event("play_start", episode=2, user="u1", t=T0),  # -> s0001e003 in 720p
        event("play_start", episode=2, user="u2", t=T0 + 1, device="android"),  # same rendition: deduplicated
        event("play_start", episode=2, user="u3", t=T0 + 2, device="tv"),  # -> 1080p
        event("progress", episode=3, t=T0 + 3, position_ms=30_000),  # not a play_start
        event("play_start", episode=5, t=T0 + 4),  # the last episode: nothing after it
        event("play_start", series="s0002", t=T0 + 5),  # the origin fails: reported as errors
    ]
    config = WarmConfig(edge_url=cache.url, segment_s=4.0, segments=2, concurrency=4, first_episodes=False)
    with TestPipeline(options=PipelineOptions(runner="BundleBasedDirectRunner")) as p:
        results = p | beam.Create(events) | WarmNextUp(write_catalog(tmp_path), config)
        assert_that(
            results,
            equal_to(
                [
                    WarmResult("s0001e003", "720p", 1, 0, 3, 0),
                    WarmResult("s0001e003", "1080p", 1, 0, 3, 0),
                    WarmResult("s0002e002", "720p", 1, 0, 0, 3),
                ]
            ),
        )
    assert sorted(origin.requests) == sorted(
        f"/chunks/s0001e003/{r}/v1/{n}" for r in ("720p", "1080p") for n in ("init.mp4", "0.m4s", "1.m4s")
    )


def test_episode_one_of_every_series_is_warmed_once_per_process(edge, tmp_path):
    """Entry points: the first event makes the worker warm episode 1 of each playable series in every
    rendition a device plays; a second run in the same process (the DirectRunner sets DoFns up per
    bundle) finds them already warmed."""
    origin, cache = edge
    config = WarmConfig(edge_url=cache.url, segment_s=4.0, segments=1, concurrency=4)
    path = write_catalog(tmp_path)
    for run in range(2):
        with TestPipeline(options=PipelineOptions(runner="BundleBasedDirectRunner")) as p:
            last = event("play_start", episode=5, t=T0 + run)  # the last episode: no next-up, entry points only
            results = p | beam.Create([last]) | WarmNextUp(path, config)
            want = (
                [
                    WarmResult("s0001e001", "720p", 1, 0, 2, 0),
                    WarmResult("s0001e001", "1080p", 1, 0, 2, 0),
                    WarmResult("s0002e001", "720p", 1, 0, 0, 2),  # no media at this origin: errors, retried later
                    WarmResult("s0002e001", "1080p", 1, 0, 0, 2),
                ]
                if run == 0
                else [
                    WarmResult("s0002e001", "720p", 1, 0, 0, 2),  # the failed ones were released: tried again
                    WarmResult("s0002e001", "1080p", 1, 0, 0, 2),
                ]
            )
            assert_that(results, equal_to(want))
    assert sorted(origin.requests) == sorted(
        f"/chunks/s0001e001/{r}/v1/{n}" for r in ("720p", "1080p") for n in ("init.mp4", "0.m4s")
    )  # s0001e001's chunks fetched once, by the first run
