"""Streaming features: playback events from Pub/Sub -> fresh per-user / episode / series / cohort
features in Bigtable; malformed and too-late events -> the dead-letter topic with the reason.
Change notices: users' -> `feature-changes` (candidates, invalidation); episodes' -> `item-changes`
(the serving nodes' edge replicas; at most one per episode per second of event time, see
transforms/compute_features.py).

Locally (emulators up, see README):
    python -m pipelines.streaming_features --catalog var/world/catalog.json
On Dataflow:
    python -m pipelines.streaming_features --runner DataflowRunner --project P --region R \
        --temp_location gs://B/tmp --setup_file ./setup.py --catalog gs://B/world/catalog.json
"""

from __future__ import annotations

import argparse
import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from cliffhanger import resources
from pipelines.options import CliffhangerOptions, project_of, use_local_runner
from transforms.bigtable_sink import BigtableTarget
from transforms.compute_features import CHANGES, ITEM_CHANGES, ComputeFeatures, PublishNotices
from transforms.parse import DEAD_LETTER, EVENTS, ParseEvents, WriteDeadLetters, with_event_time


def run(argv: list[str] | None = None) -> beam.runners.runner.PipelineResult:
    """Build and start the job; returns the running PipelineResult (streaming jobs do not finish)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscription", default=resources.EVENTS_SUBSCRIPTION, help="events subscription id")
    parser.add_argument("--dead_letter_topic", default=resources.EVENTS_DEAD_LETTER_TOPIC)
    parser.add_argument(
        "--changes_topic", default=resources.FEATURE_CHANGES_TOPIC, help="change notices for invalidation"
    )
    parser.add_argument(
        "--item_changes_topic",
        default=resources.ITEM_CHANGES_TOPIC,
        help="episode notices for serving's edge replicas ('' to not publish them)",
    )
    known, pipeline_args = parser.parse_known_args(argv)
    options = PipelineOptions(pipeline_args)
    options.view_as(StandardOptions).streaming = True  # Pub/Sub in: always a streaming job
    use_local_runner(options)
    flags = options.view_as(CliffhangerOptions)
    if not flags.catalog:
        parser.error("--catalog is required (path to the world's catalog.json, local or gs://)")
    project = project_of(options)
    target = BigtableTarget(project, flags.bigtable_instance, flags.bigtable_table)

    p = beam.Pipeline(options=options)
    parsed = (
        p
        | "ReadEvents"
        >> beam.io.ReadFromPubSub(
            subscription=f"projects/{project}/subscriptions/{known.subscription}", with_attributes=True
        )
        | "ParseEvents" >> ParseEvents(flags.allowed_lateness_s, flags.max_clock_skew_s)
    )
    features = (
        parsed[EVENTS]
        | "EventTime" >> beam.Map(with_event_time)
        | "ComputeFeatures" >> ComputeFeatures(flags.catalog, target)
    )
    _ = features[CHANGES] | "PublishChanges" >> PublishNotices(f"projects/{project}/topics/{known.changes_topic}")
    if known.item_changes_topic:
        topic = f"projects/{project}/topics/{known.item_changes_topic}"
        _ = features[ITEM_CHANGES] | "PublishItemChanges" >> PublishNotices(topic)
    _ = parsed[DEAD_LETTER] | "DeadLetters" >> WriteDeadLetters(f"projects/{project}/topics/{known.dead_letter_topic}")
    return p.run()


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run().wait_until_finish()
