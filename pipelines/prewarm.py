"""Next-up pre-warming: playback events -> when a viewer starts episode k, episode k+1's chunks are
fetched through the edge (Varnish), once per (episode, rendition, media version), so the viewer (and
whoever comes next) starts it from cache. See serving/nextup_warm.py for what is warmed and why;
serving/prewarm.py warms trending episodes and fresh drops on a schedule, this job warms per viewer.

Locally (emulators + Varnish + the serving API behind it up, see README):
    python -m pipelines.prewarm --catalog var/world/catalog.json --varnish_url http://127.0.0.1:6081
On Dataflow (the workers must reach the edge; warming through a CDN warms the PoP the workers hit):
    python -m pipelines.prewarm --runner DataflowRunner --project P --region R \
        --temp_location gs://B/tmp --setup_file ./setup.py --catalog gs://B/world/catalog.json \
        --varnish_url http://VARNISH_HOST:6081

Malformed and too-late events are counted (the `parse` counters) and dropped by default: the features
job reads the same topic and already publishes each of them to `events-dead-letter`; pass
`--dead_letter_topic` to publish them from here as well.
"""

from __future__ import annotations

import argparse
import logging
import os

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from cliffhanger import resources
from cliffhanger.localstack.varnish import VARNISH_PORT_ENV
from pipelines.options import CliffhangerOptions, project_of, use_local_runner
from serving.settings import ServingSettings
from transforms.edge_warm import WarmConfig, WarmNextUp
from transforms.parse import DEAD_LETTER, EVENTS, ParseEvents, WriteDeadLetters


def _segments(text: str) -> int | None:
    if text == "all":
        return None
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 'all' or >= 0")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscription", default=resources.EVENTS_PREWARM_SUBSCRIPTION, help="events subscription")
    parser.add_argument(
        "--varnish_url", default=f"http://127.0.0.1:{os.environ.get(VARNISH_PORT_ENV, '6081')}", help="the edge"
    )
    parser.add_argument(
        "--segments", type=_segments, default=None, help="segments of the next episode to warm: 'all' (default) or N"
    )
    parser.add_argument("--segment_s", type=float, default=ServingSettings.segment_s, help="as serving's")
    parser.add_argument("--concurrency", type=int, default=8, help="GETs in flight per worker")
    parser.add_argument("--rewarm_after_s", type=int, default=3600, help="warm an episode again after this long")
    parser.add_argument(
        "--first_episodes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also warm episode 1 of every playable series (on start and when the catalog changes)",
    )
    parser.add_argument("--dead_letter_topic", default="", help="publish unparseable events here too ('' = count)")
    return parser


def run(argv: list[str] | None = None) -> beam.runners.runner.PipelineResult:
    """Build and start the job; returns the running PipelineResult (streaming jobs do not finish)."""
    parser = _parser()
    known, pipeline_args = parser.parse_known_args(argv)
    if known.concurrency < 1 or known.rewarm_after_s < 1 or known.segment_s <= 0:
        parser.error("--concurrency and --rewarm_after_s must be >= 1, --segment_s > 0")
    options = PipelineOptions(pipeline_args)
    options.view_as(StandardOptions).streaming = True  # Pub/Sub in: always a streaming job
    use_local_runner(options)
    flags = options.view_as(CliffhangerOptions)
    if not flags.catalog:
        parser.error("--catalog is required (path to the world's catalog.json, local or gs://)")
    project = project_of(options)
    config = WarmConfig(
        edge_url=known.varnish_url,
        segment_s=known.segment_s,
        segments=known.segments,
        concurrency=known.concurrency,
        rewarm_after_s=known.rewarm_after_s,
        first_episodes=known.first_episodes,
    )

    p = beam.Pipeline(options=options)
    parsed = (
        p
        | "ReadEvents"
        >> beam.io.ReadFromPubSub(
            subscription=f"projects/{project}/subscriptions/{known.subscription}", with_attributes=True
        )
        | "ParseEvents" >> ParseEvents(flags.allowed_lateness_s, flags.max_clock_skew_s)
    )
    _ = parsed[EVENTS] | "WarmNextUp" >> WarmNextUp(flags.catalog, config)
    if known.dead_letter_topic:
        _ = parsed[DEAD_LETTER] | "DeadLetters" >> WriteDeadLetters(
            f"projects/{project}/topics/{known.dead_letter_topic}"
        )
    return p.run()


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run().wait_until_finish()
