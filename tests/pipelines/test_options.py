"""pipelines/options.use_local_runner: no Prism download, big bundles and bounded pulls on the DirectRunner."""

from __future__ import annotations

import time

import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct import transform_evaluator as te
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
