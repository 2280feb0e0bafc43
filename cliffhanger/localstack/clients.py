"""Admin clients bound to an emulator by an explicit insecure channel (no env vars, no credentials).

Used by the readiness probes, provisioning and tests, so none of them depends on (or mutates)
BIGTABLE_EMULATOR_HOST / PUBSUB_EMULATOR_HOST.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from google.cloud.bigtable_admin_v2 import BigtableTableAdminClient
    from google.pubsub_v1 import PublisherClient, SubscriberClient


def open_channel(port: int, host: str = "127.0.0.1") -> grpc.Channel:
    """An insecure gRPC channel to an emulator; use it as a context manager so it gets closed."""
    return grpc.insecure_channel(f"{host}:{port}")


def bigtable_admin(channel: grpc.Channel) -> BigtableTableAdminClient:
    from google.cloud.bigtable_admin_v2 import BigtableTableAdminClient
    from google.cloud.bigtable_admin_v2.services.bigtable_table_admin.transports import (
        BigtableTableAdminGrpcTransport,
    )

    return BigtableTableAdminClient(transport=BigtableTableAdminGrpcTransport(channel=channel))


def pubsub_publisher(channel: grpc.Channel) -> PublisherClient:
    from google.pubsub_v1 import PublisherClient
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

    return PublisherClient(transport=PublisherGrpcTransport(channel=channel))


def pubsub_subscriber(channel: grpc.Channel) -> SubscriberClient:
    from google.pubsub_v1 import SubscriberClient
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    return SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))
