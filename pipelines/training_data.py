"""Training data: an event log (the generator's events.jsonl, or an export of the events topic) ->
point-in-time training examples computed by the SAME feature definitions as the streaming pipeline.

Locally (BundleBasedDirectRunner):
    python -m pipelines.training_data --events var/world/events.jsonl --catalog var/world/catalog.json \
        --output var/training/examples
On Dataflow:
    python -m pipelines.training_data --runner DataflowRunner --project P --region R \
        --temp_location gs://B/tmp --setup_file ./setup.py --events gs://B/export/events-*.jsonl \
        --catalog gs://B/world/catalog.json --output gs://B/training/examples

Writes, under the --output prefix:
    <output>-examples-SSSSS-of-NNNNN.jsonl      examples (transforms/point_in_time.py EXAMPLE_FIELDS)
    <output>-snapshots-SSSSS-of-NNNNN.jsonl     each user's `u` at the split cuts (evaluation queries)
    <output>-split.json                         the cuts {"valid": ms, "test": ms} (event time)
    <output>-dead-letter-SSSSS-of-NNNNN.jsonl   unreadable records, malformed and too-late events + reason
    <output>-schema.json                        examples schema + hash, label rule, counters of this run

Lateness uses each record's arrival_ms, exactly as streaming uses the Pub/Sub publish time.
"""

from __future__ import annotations

import argparse
import json
import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options import CliffhangerOptions, use_local_runner
from transforms.event_log import InputError, ReadEventLog, check_catalog, check_event_log, with_arrival
from transforms.parse import DEAD_LETTER, EVENTS, ParseEvents
from transforms.point_in_time import LABEL_HORIZON_MS, examples_schema
from transforms.training_examples import CUTS, EXAMPLES, SNAPSHOTS, PointInTimeExamples, WriteJsonLines

_LOG = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, PipelineOptions]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", required=True, help="events.jsonl (local path, gs://, or a glob)")
    parser.add_argument("--output", required=True, help="output prefix (local or gs://)")
    parser.add_argument("--horizon_min", type=int, default=LABEL_HORIZON_MS // 60_000, help="label horizon")
    known, pipeline_args = parser.parse_known_args(argv)
    options = PipelineOptions(pipeline_args)
    if not options.view_as(CliffhangerOptions).catalog:
        parser.error("--catalog is required (path to the world's catalog.json, local or gs://)")
    return known, options


def run(argv: list[str] | None = None) -> beam.runners.runner.PipelineResult:
    """Build and run the batch job to completion; returns the finished PipelineResult.

    Raises transforms.event_log.InputError (naming the file) for a missing, empty or non-log
    --events file or an unusable --catalog, before any pipeline is built.
    """
    known, options = parse_args(argv)
    runner = use_local_runner(options)
    flags = options.view_as(CliffhangerOptions)
    check_event_log(known.events)
    check_catalog(flags.catalog)
    horizon_ms = known.horizon_min * 60_000

    p = beam.Pipeline(options=options)
    log = p | "ReadEventLog" >> ReadEventLog(known.events)
    parsed = log["records"] | "ParseEvents" >> ParseEvents(flags.allowed_lateness_s, flags.max_clock_skew_s)
    events = parsed[EVENTS] | "WithArrival" >> beam.Map(with_arrival)
    features = events | "PointInTimeExamples" >> PointInTimeExamples(flags.catalog, horizon_ms)
    _ = features[EXAMPLES] | "WriteExamples" >> WriteJsonLines(known.output + "-examples")
    _ = features[SNAPSHOTS] | "WriteSnapshots" >> WriteJsonLines(known.output + "-snapshots")
    _ = features[CUTS] | "WriteSplit" >> WriteJsonLines(known.output + "-split", ".json", single=True)
    _ = (
        (log[DEAD_LETTER], parsed[DEAD_LETTER])
        | "AllDeadLetters" >> beam.Flatten()
        | "WriteDeadLetters" >> WriteJsonLines(known.output + "-dead-letter")
    )
    result = p.run()
    result.wait_until_finish()
    write_schema(known.output, result, horizon_ms, runner)
    return result


def counters(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    """Committed counters of a finished run, as {"namespace.name": value}."""
    out: dict[str, int] = {}
    for c in result.metrics().query()["counters"]:
        name = f"{c.key.metric.namespace}.{c.key.metric.name}"
        out[name] = out.get(name, 0) + int(c.committed or 0)
    return dict(sorted(out.items()))


def write_schema(output: str, result: beam.runners.runner.PipelineResult, horizon_ms: int, runner: str) -> dict:
    """<output>-schema.json: the examples schema and hash, the runner and this run's counters."""
    from apache_beam.io.filesystems import FileSystems

    doc = {**examples_schema(horizon_ms), "runner": runner, "counters": counters(result)}
    with FileSystems.create(output + "-schema.json") as handle:
        handle.write(json.dumps(doc, indent=2).encode())
    _LOG.info("training data: %s", doc["counters"])
    return doc


def main(argv: list[str] | None = None) -> None:
    try:
        run(argv)
    except InputError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    main()
