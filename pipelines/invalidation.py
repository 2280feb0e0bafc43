"""Invalidation: change notices (`feature-changes`) and catalog events (`catalog`) -> surrogate keys ->
one deduplicated purge batch per target per ~1 s -> purge requests (batch limit, rate limit, retries).
Purges that keep failing, and notices / catalog events that cannot be parsed, go to the
`purge-dead-letter` topic: attribute `stage` = `purge` (JSON payload: target, keys, reason, attempts)
or `parse` (the raw payload; `reason` starts with its source, `notice:` or `catalog:`; `field`).

Locally (emulators + Varnish up, CLIFFHANGER_EDGE_KEY_SECRET set, see README):
    python -m pipelines.invalidation --varnish_url http://127.0.0.1:6081
With serving's in-process caches purged first (CLIFFHANGER_ADMIN_TOKEN set), one URL per replica:
    python -m pipelines.invalidation --origin_url http://127.0.0.1:8080,http://127.0.0.1:8081
With Fastly and Cloudflare as well (tokens in FASTLY_API_TOKEN / CLOUDFLARE_API_TOKEN):
    python -m pipelines.invalidation --targets varnish,fastly,cloudflare \
        --fastly_service_id SVC --cloudflare_zone_id ZONE --cloudflare_plan business
"""

from __future__ import annotations

import argparse
import logging
import os
import urllib.parse

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms.window import GlobalWindows

from cliffhanger import resources
from cliffhanger.localstack.varnish import VARNISH_PORT_ENV
from cliffhanger.purge import targets as purge_targets
from cliffhanger.purge.clients import CLOUDFLARE_BASE_URL, FASTLY_BASE_URL
from cliffhanger.purge.sender import RetryPolicy
from pipelines.options import project_of, use_local_runner
from transforms.parse import DEAD_LETTER, WriteDeadLetters, from_pubsub
from transforms.purge_batches import CATALOG, KEYS, NOTICE, BatchPurges, ParseChanges
from transforms.send_purges import SendPurges


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notices_subscription", default=resources.FEATURE_CHANGES_SUBSCRIPTION)
    parser.add_argument("--catalog_subscription", default=resources.CATALOG_SUBSCRIPTION)
    parser.add_argument(
        "--candidate_notices_subscription",
        default=resources.CANDIDATE_CHANGES_SUBSCRIPTION,
        help="candidates_refreshed notices from pipelines/candidates.py ('' to skip)",
    )
    parser.add_argument("--dead_letter_topic", default=resources.PURGE_DEAD_LETTER_TOPIC)
    parser.add_argument("--targets", default="varnish", help="comma-separated: varnish, fastly, cloudflare")
    parser.add_argument(
        "--varnish_url", default=f"http://127.0.0.1:{os.environ.get(VARNISH_PORT_ENV, '6081')}", help="xkey Varnish"
    )
    parser.add_argument(
        "--origin_url",
        action="append",
        default=[],
        help="serving replica whose in-process cache is purged before Varnish (needs CLIFFHANGER_ADMIN_TOKEN); "
        "several replicas: comma-separated and/or the flag repeated, every one is purged before the edge",
    )
    parser.add_argument("--fastly_service_id", default="")
    parser.add_argument("--fastly_base_url", default=FASTLY_BASE_URL)
    parser.add_argument("--cloudflare_zone_id", default="")
    parser.add_argument("--cloudflare_base_url", default=CLOUDFLARE_BASE_URL)
    parser.add_argument("--cloudflare_plan", default="pro", choices=sorted(purge_targets.CLOUDFLARE_PLANS))
    parser.add_argument("--batch_window_s", type=int, default=1, help="dedupe / batch window per target")
    parser.add_argument("--purge_max_attempts", type=int, default=6, help="then the batch is dead-lettered")
    return parser


def origin_urls(values: list[str]) -> tuple[str, ...]:
    """--origin_url values (repeated and/or comma-separated) -> the replicas' URLs, in order, once each."""
    return tuple(dict.fromkeys(u.strip() for v in values for u in v.split(",") if u.strip()))


def target_specs(known: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[purge_targets.TargetSpec, ...]:
    """The purge targets the flags ask for; a parser error (exit 2) names a bad or incomplete one."""
    origins = origin_urls(known.origin_url)
    for url in origins:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            parser.error(f"--origin_url: {url!r} is not http(s)://host[:port] (one URL per serving replica)")
    specs = []
    for kind in [k.strip() for k in known.targets.split(",") if k.strip()]:
        try:
            if kind == purge_targets.VARNISH:
                specs.append(purge_targets.varnish(known.varnish_url, origin_urls=origins))
            elif kind == purge_targets.FASTLY:
                specs.append(purge_targets.fastly(known.fastly_service_id, known.fastly_base_url))
            elif kind == purge_targets.CLOUDFLARE:
                specs.append(
                    purge_targets.cloudflare(known.cloudflare_zone_id, known.cloudflare_base_url, known.cloudflare_plan)
                )
            else:
                parser.error(f"--targets: unknown target {kind!r} (varnish, fastly, cloudflare)")
        except ValueError as exc:
            parser.error(f"--targets {kind}: {exc} (--fastly_service_id / --cloudflare_zone_id)")
    if not specs or len({s.name for s in specs}) != len(specs):
        parser.error("--targets: name each of varnish, fastly, cloudflare at most once, at least one")
    return tuple(specs)


def run(argv: list[str] | None = None) -> beam.runners.runner.PipelineResult:
    """Build and start the job; returns the running PipelineResult (streaming jobs do not finish)."""
    parser = _parser()
    known, pipeline_args = parser.parse_known_args(argv)
    targets = target_specs(known, parser)
    if known.batch_window_s < 1 or known.purge_max_attempts < 1:
        parser.error("--batch_window_s must be >= 1 and --purge_max_attempts >= 1")
    options = PipelineOptions(pipeline_args)
    options.view_as(StandardOptions).streaming = True  # Pub/Sub in: always a streaming job
    use_local_runner(options)  # locally: bounded Pub/Sub pulls, so two sources do not stall each other
    project = project_of(options)

    def subscription(name: str) -> str:
        return f"projects/{project}/subscriptions/{name}"

    p = beam.Pipeline(options=options)
    notices = (
        p
        | "ReadNotices"
        >> beam.io.ReadFromPubSub(subscription=subscription(known.notices_subscription), with_attributes=True)
        | "NoticeArrival" >> beam.Map(from_pubsub)
        | "ParseNotices" >> ParseChanges(NOTICE)
    )
    catalog = (
        p
        | "ReadCatalog"
        >> beam.io.ReadFromPubSub(subscription=subscription(known.catalog_subscription), with_attributes=True)
        | "CatalogArrival" >> beam.Map(from_pubsub)
        | "ParseCatalog" >> ParseChanges(CATALOG)
    )
    keys, dead = [notices[KEYS], catalog[KEYS]], [notices[DEAD_LETTER], catalog[DEAD_LETTER]]
    if known.candidate_notices_subscription:
        refreshed = (
            p
            | "ReadCandidateNotices"
            >> beam.io.ReadFromPubSub(
                subscription=subscription(known.candidate_notices_subscription), with_attributes=True
            )
            | "CandidateNoticeArrival" >> beam.Map(from_pubsub)
            | "ParseCandidateNotices" >> ParseChanges(NOTICE)
        )
        keys.append(refreshed[KEYS])
        dead.append(refreshed[DEAD_LETTER])
    sent = (
        tuple(keys)
        | "AllKeys" >> beam.Flatten()
        | "DedupeAndBatch" >> BatchPurges(tuple(t.name for t in targets), known.batch_window_s)
        | "SendPurges" >> SendPurges(targets, RetryPolicy(max_attempts=known.purge_max_attempts))
    )
    failed = sent[DEAD_LETTER] | "UntriggeredWindow" >> beam.WindowInto(GlobalWindows())  # as parse's dead letters
    _ = (
        (*dead, failed)
        | "AllDeadLetters" >> beam.Flatten()
        | "DeadLetters" >> WriteDeadLetters(f"projects/{project}/topics/{known.dead_letter_topic}")
    )
    return p.run()


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run().wait_until_finish()
