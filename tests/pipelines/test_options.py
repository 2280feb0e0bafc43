"""pipelines/options.use_local_runner: no Prism download, big bundles and bounded pulls, a short publish
latency and cached DoFn specs on the DirectRunner."""

from __future__ import annotations

import time

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct import transform_evaluator as te
from apache_beam.transforms import userstate
from google.cloud import pubsub_v1

from cliffhanger import resources
from pipelines.options import LOCAL_PUBSUB_PULL, _PullSizeClient, use_local_runner
from tests.pubsub_helpers import drain, publish


def test_direct_runner_becomes_the_bundle_based_runner_and_the_hook_exists():
    options = PipelineOptions(["--runner", "DirectRunner"])
    assert use_local_runner(options) == "BundleBasedDirectRunner"
    assert options.view_as(StandardOptions).runner == "BundleBasedDirectRunner"
    # The private hook we wrap; if a Beam upgrade moves it, this fails loudly rather than going slow.
    assert "_get_subscriber_client" in te._PubSubReadEvaluator.__dict__
    assert te._PubSubReadEvaluator._cliffhanger_pull == LOCAL_PUBSUB_PULL


def test_dataflow_runner_is_left_alone():
    options = PipelineOptions(["--runner", "DataflowRunner"])
    assert use_local_runner(options) == "DataflowRunner"


@pytest.mark.emulators
def test_one_pull_drains_a_backlog_and_an_empty_pull_returns_quickly(local_stack):
    project = local_stack.settings.project
    drain(project, resources.EVENTS_SUBSCRIPTION, expect=10**6, timeout_s=1)
    publish(project, resources.EVENTS_TOPIC, [b"m%d" % i for i in range(350)])
    client = _PullSizeClient(pubsub_v1.SubscriberClient(), max_messages=1000)
    path = client.subscription_path(project, resources.EVENTS_SUBSCRIPTION)
    response = client.pull(subscription=path, max_messages=10, timeout=30)
    assert len(response.received_messages) == 350  # the emulator gives 100 per pull; the wrapper keeps going
    client.acknowledge(subscription=path, ack_ids=[m.ack_id for m in response.received_messages])
    start = time.monotonic()
    assert len(client.pull(subscription=path, max_messages=10, timeout=30).received_messages) == 0
    assert time.monotonic() - start < 5  # not the runner's 30 s long poll


def test_the_local_publisher_commits_its_batches_after_a_millisecond(monkeypatch):
    """WriteToPubSub's DoFn waits for every bundle's messages on the DirectRunner's only executor
    thread; with the client's default 10 ms batch latency each bundle of each sink held the pipeline."""
    from apache_beam.io.gcp import pubsub as beam_pubsub

    from pipelines.options import LOCAL_PUBLISH_LATENCY_S

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:1")  # a client without credentials; never called
    use_local_runner(PipelineOptions(["--runner", "DirectRunner"]))
    transform = beam_pubsub.WriteToPubSub("projects/local-project/topics/events")
    dofn = beam_pubsub._PubSubWriteDoFn(transform)  # the private DoFn we wrap: fails here if Beam moves it
    dofn.setup()
    try:
        assert dofn._pub_client.batch_settings.max_latency == LOCAL_PUBLISH_LATENCY_S == 0.001
        assert dofn._topic == "projects/local-project/topics/events"  # Beam's own setup still ran
    finally:
        dofn._pub_client.stop()


class _Stateful(beam.DoFn):
    COUNT = userstate.ReadModifyWriteStateSpec("count", VarIntCoder())

    def process(self, kv, count=beam.DoFn.StateParam(COUNT)):
        yield kv


def _stateful_fn(kv, count=beam.DoFn.StateParam(_Stateful.COUNT)):
    return [kv]


def test_cached_dofn_specs_agree_with_beams_per_class_and_per_wrapped_callable():
    """The DirectRunner asks every step, every bundle, for its DoFn's specs; the cache must give what
    Beam's own introspection gives: per class for an ordinary DoFn, per callable for Map/FlatMap."""
    use_local_runner(PipelineOptions(["--runner", "DirectRunner"]))
    cached = userstate.get_dofn_specs
    original = cached._cliffhanger_original  # fails if the hook is not installed
    assert te.get_dofn_specs is cached  # the runner imported it by name: both places are patched

    wrap = beam.transforms.core.CallableWrapperDoFn  # what ParDo(callable), Map and FlatMap build
    plain, stateful = wrap(lambda x: [x]), wrap(_stateful_fn)  # one class, two callables
    for dofn in (_Stateful(), _Stateful(), plain, stateful, beam.Map(lambda x: x).dofn, plain, stateful):
        assert cached(dofn) == original(dofn)
    assert userstate.is_stateful_dofn(_Stateful())
    assert not userstate.is_stateful_dofn(plain) and not userstate.is_stateful_dofn(beam.Map(str).dofn)
