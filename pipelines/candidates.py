"""Candidates: change notices (`feature-changes`, subscription `feature-changes-candidates`) -> each
changed user's top-N episodes from the CURRENT bundle's query tower + ScaNN index, precomputed into
Bigtable (row u#<salt>#<user>, family `cand`, column `two_tower`) -> a `candidates_refreshed` notice per
user on `candidate-changes` (for the invalidation pipeline: the user's cached answers are stale now).
Malformed notices -> `candidates-dead-letter` with the reason.

The features pipeline only notices meaningful changes (a finished episode, a new session), so that is
when a list is refreshed. Segment and global lists for new users: pipelines/segment_candidates.py.

Episode drops (`catalog`, subscription `catalog-candidates`): a `series:drop` -> the viewers waiting
for the new episode (they completed the one before it) -> a `new_episode` notice each on
`candidate-changes`, so the invalidation pipeline purges their cached answers. No list is rewritten:
the new episode has no embedding until retrain, and serving already maps a listed or continue-watching
series to the viewer's entry episode with its live catalog (transforms/candidates_drop.py says why in
full). Catalog payloads that cannot be parsed -> `candidates-dead-letter` as well.

Locally (emulators up, a bundle published, see README):
    python -m pipelines.candidates --bundle_root var/bundles
On Dataflow:
    python -m pipelines.candidates --runner DataflowRunner --project P --region R \
        --temp_location gs://B/tmp --setup_file ./setup.py --bundle_root gs://B/bundles
"""

from __future__ import annotations

import argparse
import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from cliffhanger import resources
from pipelines.options import CliffhangerOptions, project_of, use_local_runner
from transforms.bigtable_sink import BigtableTarget
from transforms.candidates import NOTICES, CoalesceNotices, ParseNotices, RefreshCandidates
from transforms.candidates_drop import DROPS, ParseDrops, WaitingViewers
from transforms.compute_features import PublishNotices
from transforms.parse import DEAD_LETTER, WriteDeadLetters, from_pubsub


def run(argv: list[str] | None = None) -> beam.runners.runner.PipelineResult:
    """Build and start the job; returns the running PipelineResult (streaming jobs do not finish)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle_root", "--bundle-root", dest="bundle_root", required=True, help="local or gs://")
    parser.add_argument("--subscription", default=resources.FEATURE_CHANGES_CANDIDATES_SUBSCRIPTION)
    parser.add_argument(
        "--catalog_subscription",
        default=resources.CATALOG_CANDIDATES_SUBSCRIPTION,
        help="catalog events: episode drops reach waiting viewers ('' to skip)",
    )
    parser.add_argument(
        "--changes_topic", default=resources.CANDIDATE_CHANGES_TOPIC, help="candidates_refreshed, new_episode"
    )
    parser.add_argument("--dead_letter_topic", default=resources.CANDIDATES_DEAD_LETTER_TOPIC)
    parser.add_argument("--top_n", type=int, default=200, help="episodes per list")
    parser.add_argument("--reload_check_s", type=float, default=30.0, help="look for a new bundle at most this often")
    known, pipeline_args = parser.parse_known_args(argv)
    if known.top_n < 1 or known.reload_check_s < 0:
        parser.error("--top_n must be >= 1 and --reload_check_s >= 0")
    options = PipelineOptions(pipeline_args)
    options.view_as(StandardOptions).streaming = True  # Pub/Sub in: always a streaming job
    use_local_runner(options)
    flags = options.view_as(CliffhangerOptions)
    project = project_of(options)
    target = BigtableTarget(project, flags.bigtable_instance, flags.bigtable_table)

    def subscription(name: str) -> str:
        return f"projects/{project}/subscriptions/{name}"

    p = beam.Pipeline(options=options)
    parsed = (
        p
        | "ReadNotices" >> beam.io.ReadFromPubSub(subscription=subscription(known.subscription), with_attributes=True)
        | "NoticeArrival" >> beam.Map(from_pubsub)
        | "ParseNotices" >> ParseNotices()
    )
    refreshed = (
        parsed[NOTICES]
        | "LatestPerUser" >> CoalesceNotices()
        | "RefreshLists" >> RefreshCandidates(known.bundle_root, target, known.top_n, known.reload_check_s)
    )
    notices, dead = [refreshed], [parsed[DEAD_LETTER]]
    if known.catalog_subscription:
        drops = (
            p
            | "ReadCatalog"
            >> beam.io.ReadFromPubSub(subscription=subscription(known.catalog_subscription), with_attributes=True)
            | "CatalogArrival" >> beam.Map(from_pubsub)
            | "ParseDrops" >> ParseDrops()
        )
        notices.append(drops[DROPS] | "WaitingViewers" >> WaitingViewers(target))
        dead.append(drops[DEAD_LETTER])
    _ = (
        tuple(notices)
        | "AllNotices" >> beam.Flatten()
        | "PublishNotices" >> PublishNotices(f"projects/{project}/topics/{known.changes_topic}")
    )
    _ = (
        tuple(dead)
        | "AllDeadLetters" >> beam.Flatten()
        | "DeadLetters" >> WriteDeadLetters(f"projects/{project}/topics/{known.dead_letter_topic}")
    )
    return p.run()


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run().wait_until_finish()
