"""Publish raw payloads to, and drain, the emulator's topics in tests."""

from __future__ import annotations

import time

from google.cloud import pubsub_v1


def publish(project: str, topic: str, payloads: list[bytes]) -> None:
    client = pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=500, max_latency=0.005)
    )
    path = client.topic_path(project, topic)
    for future in [client.publish(path, p) for p in payloads]:
        future.result(timeout=30)


def drain(project: str, subscription: str, expect: int, timeout_s: float = 60.0) -> list:
    """Pull and ack until `expect` messages arrived (or the timeout passed); returns the messages."""
    client = pubsub_v1.SubscriberClient()
    path = client.subscription_path(project, subscription)
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expect and time.monotonic() < deadline:
        response = client.pull(subscription=path, max_messages=1000, timeout=5)
        if response.received_messages:
            client.acknowledge(subscription=path, ack_ids=[m.ack_id for m in response.received_messages])
            got.extend(m.message for m in response.received_messages)
    return got
