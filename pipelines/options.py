"""Flags shared by the jobs, and what local runs need from the DirectRunner.

Shared flags live in `CliffhangerOptions` (read with `options.view_as(CliffhangerOptions)`); each
job adds its own few with `parse_known_args` in its `run()`.
"""

from __future__ import annotations

import logging

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

from cliffhanger import resources
from cliffhanger.config import Settings

_LOG = logging.getLogger(__name__)
_DEFAULTS = Settings.from_env()

# How many messages the DirectRunner pulls from Pub/Sub per bundle (see use_local_runner).
LOCAL_PUBSUB_PULL = 1000
# The deadline of one local Pub/Sub pull. The runner starts a source's next pull only when no other
# work is executing (executor._MonitorTask._add_work_if_necessary) and each pull long-polls 30 s on an
# empty subscription: with two sources (invalidation reads notices and catalog events) a message waited
# up to ~30 s behind the quiet one. The emulator answers an empty pull about 1 s before the caller's
# deadline (measured: 1.25 s -> 0.26 s, 2 s -> 1.06 s) and at once below ~1.1 s, which makes the runner
# spin; 1.2 s holds an idle pull ~0.2 s.
LOCAL_PULL_DEADLINE_S = 1.2


class CliffhangerOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--bigtable_instance", default=_DEFAULTS.bigtable_instance)
        parser.add_argument("--bigtable_table", default=resources.FEATURES_TABLE)
        parser.add_argument("--catalog", required=False, help="catalog.json (local path or gs://)")
        parser.add_argument("--allowed_lateness_s", type=int, default=_DEFAULTS.allowed_lateness_s)
        parser.add_argument("--max_clock_skew_s", type=int, default=_DEFAULTS.max_clock_skew_s)


def project_of(options: PipelineOptions) -> str:
    return options.view_as(GoogleCloudOptions).project or _DEFAULTS.project


def use_local_runner(options: PipelineOptions) -> str:
    """Make a local run fast and offline; returns the runner name in use.

    * `DirectRunner` first tries Prism, which downloads its binary from GitHub (unreachable here) before
      falling back; we go straight to the BundleBasedDirectRunner it falls back to.
    * That runner pulls 10 Pub/Sub messages per bundle (apache_beam/runners/direct/transform_evaluator.py,
      `_PubSubReadEvaluator._read_from_pubsub`), which caps a streaming job near 500 events/s no matter
      how the pipeline batches, and long-polls 30 s per pull (see LOCAL_PULL_DEADLINE_S). We raise the
      pull size and bound the wait for local runs only; Dataflow's streaming engine has neither limit.
      tests/pipelines/test_options.py fails if a Beam upgrade moves this hook.
    """
    standard = options.view_as(StandardOptions)
    if standard.runner in (None, "DirectRunner", "BundleBasedDirectRunner"):
        standard.runner = "BundleBasedDirectRunner"
        _raise_direct_pubsub_pull(LOCAL_PUBSUB_PULL)
    return standard.runner


class _PullSizeClient:
    """Wraps the DirectRunner's subscriber client so one bundle takes up to `max_messages`.

    The first pull waits at most LOCAL_PULL_DEADLINE_S for messages; further pulls return immediately and stop at the
    first short answer (the emulator hands out at most 100 messages per pull). Under a backlog,
    bundles grow to `max_messages`; when messages trickle in, a bundle is whatever has arrived, so
    batching never adds waiting time.
    """

    def __init__(self, client, max_messages: int):
        self._client = client
        self._max_messages = max_messages

    def pull(self, subscription, max_messages, timeout):  # noqa: ARG002 - signature of the wrapped call
        from google.api_core.exceptions import DeadlineExceeded
        from google.pubsub_v1.types import PullResponse

        try:
            response = self._client.pull(
                subscription=subscription, max_messages=self._max_messages, timeout=LOCAL_PULL_DEADLINE_S
            )
        except DeadlineExceeded:
            return PullResponse()  # nothing arrived in time; the runner simply pulls again
        got = len(response.received_messages)
        while 0 < got < self._max_messages:
            more = self._client.pull(
                request={
                    "subscription": subscription,
                    "max_messages": self._max_messages - got,
                    "return_immediately": True,
                },
                timeout=timeout,
            )
            if not more.received_messages:
                break
            response.received_messages.extend(more.received_messages)
            got += len(more.received_messages)
        return response

    def __getattr__(self, name):
        return getattr(self._client, name)


def _raise_direct_pubsub_pull(max_messages: int) -> None:
    from apache_beam.runners.direct import transform_evaluator as te

    evaluator = te._PubSubReadEvaluator
    if getattr(evaluator, "_cliffhanger_pull", None) == max_messages:
        return
    original = evaluator.__dict__["_get_subscriber_client"].__func__
    original = getattr(original, "_cliffhanger_original", original)

    def _get_subscriber_client(cls, transform):
        return _PullSizeClient(original(cls, transform), max_messages)

    _get_subscriber_client._cliffhanger_original = original
    evaluator._get_subscriber_client = classmethod(_get_subscriber_client)
    evaluator._cliffhanger_pull = max_messages
    _LOG.info("DirectRunner Pub/Sub pull size raised to %d messages per bundle", max_messages)
