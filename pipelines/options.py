"""Flags shared by the jobs, and what local runs need from the DirectRunner.

Shared flags live in `CliffhangerOptions` (read with `options.view_as(CliffhangerOptions)`); each
job adds its own few with `parse_known_args` in its `run()`.
"""

from __future__ import annotations

import contextlib
import logging
import weakref

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
# How long the local Pub/Sub publisher holds a batch open. The DirectRunner runs every step on ONE
# executor thread (executor._ExecutorServiceParallelExecutor.NUM_WORKERS = 1), and WriteToPubSub's DoFn
# waits for its messages at the end of each bundle, so with the client's default (10 ms) every bundle
# of every Pub/Sub sink (notices, item notices, dead letters) held the whole pipeline ~10 ms.
LOCAL_PUBLISH_LATENCY_S = 0.001


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
    * Its Pub/Sub sinks wait for each bundle's messages on the runner's only executor thread; the
      publisher's batch latency is lowered to LOCAL_PUBLISH_LATENCY_S so that wait is a round trip,
      not a 10 ms timer.
    * It asks every step, for every bundle, whether its DoFn is stateful (userstate.get_dofn_specs,
      which builds a signature for every method of the DoFn); the answer is cached (see
      _cache_dofn_specs). Measured with benchmarks.streaming_features: it was ~8% of the executor
      thread, and freshness p95 0.55-0.64 s with the cache against 0.84-1.03 s without, alternating.
      tests/pipelines/test_options.py fails if a Beam upgrade moves these hooks.
    """
    standard = options.view_as(StandardOptions)
    if standard.runner in (None, "DirectRunner", "BundleBasedDirectRunner"):
        standard.runner = "BundleBasedDirectRunner"
        _raise_direct_pubsub_pull(LOCAL_PUBSUB_PULL)
        _lower_direct_publish_latency(LOCAL_PUBLISH_LATENCY_S)
        _cache_dofn_specs()
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


def _lower_direct_publish_latency(max_latency_s: float) -> None:
    """WriteToPubSub's DoFn (apache_beam.io.gcp.pubsub._PubSubWriteDoFn) builds its PublisherClient in
    `setup`; its batches then commit after `max_latency_s` instead of the client's 10 ms."""
    from apache_beam.io.gcp import pubsub as beam_pubsub

    fn = beam_pubsub._PubSubWriteDoFn
    if getattr(fn, "_cliffhanger_latency", None) == max_latency_s:
        return
    original = fn.__dict__["setup"]
    original = getattr(original, "_cliffhanger_original", original)

    def setup(self):
        original(self)
        client = self._pub_client
        client.batch_settings = client.batch_settings._replace(max_latency=max_latency_s)

    setup._cliffhanger_original = original
    fn.setup = setup
    fn._cliffhanger_latency = max_latency_s
    _LOG.info("DirectRunner Pub/Sub publish latency lowered to %.1f ms", max_latency_s * 1000)


def _cache_dofn_specs() -> None:
    """userstate.get_dofn_specs, memoized. A DoFn's state and timer specs come from its methods'
    parameter defaults: for an ordinary DoFn those are its class's, so the class is the key. A DoFn
    that wraps a callable (Map, FlatMap: it has `_inspect_<method>` hooks) takes them from that
    callable, so the key is the class and the callable, held weakly (the runner makes new ones)."""
    from apache_beam.runners.direct import transform_evaluator
    from apache_beam.transforms import userstate

    if getattr(userstate.get_dofn_specs, "_cliffhanger_original", None) is not None:
        return
    original = userstate.get_dofn_specs
    by_class: dict[type, tuple] = {}
    by_callable: dict[type, weakref.WeakKeyDictionary] = {}
    wraps_callable: dict[type, bool] = {}

    def get_dofn_specs(dofn):
        cls = type(dofn)
        if cls not in wraps_callable:
            wraps_callable[cls] = any(name.startswith("_inspect_") for name in dir(cls))
        if not wraps_callable[cls]:
            if cls not in by_class:
                by_class[cls] = original(dofn)
            return by_class[cls]
        fn = dofn._process_argspec_fn()
        cache = by_callable.setdefault(cls, weakref.WeakKeyDictionary())
        try:
            return cache[fn]
        except (KeyError, TypeError):  # TypeError: a callable that cannot be weakly referenced
            specs = original(dofn)
            with contextlib.suppress(TypeError):
                cache[fn] = specs
            return specs

    get_dofn_specs._cliffhanger_original = original
    userstate.get_dofn_specs = get_dofn_specs  # is_stateful_dofn and the runner look it up here
    transform_evaluator.get_dofn_specs = get_dofn_specs  # imported by name there
    _LOG.info("DirectRunner DoFn state/timer specs cached per class")
