"""One Pub/Sub subscription pulled in the background of the serving process: the loop the catalog feed
(serving/catalog_feed.py) and the notice feed (serving/notice_feed.py) share.

    class MyFeed(PubSubPull):
        async def handle_batch(self, payloads): ...     # on the event loop; acked when it returns
        def count(self, outcome): ...                   # "pull_error", into the feed's own metric

Pulls run on a dedicated thread (a pull waits up to `pull_timeout_s` for messages; it must not hold a
request-path executor thread). Each batch is handled on the event loop (where requests read what the
feed changes) and acked afterwards, so a crash between the two means a redelivery, which the feeds'
versions turn into a no-op. `handle_batch` is also called after an empty pull, so a feed can retry
work it could not finish (the notice feed re-reads rows a failed read left pending). A failed pull,
handling or ack is counted and retried with backoff; the messages of a failed batch are not acked and
come back after the subscription's ack deadline.

Replicas: Pub/Sub load-balances one subscription's messages across its subscribers, so every serving
replica needs its own subscription to each topic it follows. With one replica (CLIFFHANGER_REPLICA_ID
unset) the subscriptions declared in cliffhanger/resources.py are used, as provisioned (local stack,
Terraform). With a replica id and no explicit CLIFFHANGER_*_SUBSCRIPTION, serving/settings.py names them
`<declared>-<replica id>` and hands the feed its declaration (`create`: topic, ack deadline): before its first pull, the
feed creates the subscription if it is missing, on its pull thread (never on the event loop), with the
declared ack deadline and an expiration policy (REPLICA_SUBSCRIPTION_TTL_S of inactivity), so that a
replica's subscription goes away after the replica has. A failed creation (Pub/Sub down, no permission)
is a failed pull: counted, logged, retried with backoff. A new subscription only sees messages
published after it exists; the feeds cover the gap (the catalog file is re-read on start, the edge
replica reconciles from Bigtable).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from cliffhanger.resources import Subscription
from serving.background import BackgroundLoop

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
REPLICA_SUBSCRIPTION_TTL_S = 24 * 3600  # Pub/Sub's minimum expiration TTL: a gone replica's subscription


class PubSubPull(BackgroundLoop):
    def __init__(
        self,
        project: str,
        subscription: str,
        *,
        name: str,
        pull_timeout_s: float = 2.0,
        max_messages: int = 100,
        create: Subscription | None = None,
    ) -> None:
        self.project, self.subscription, self.name = project, subscription, name
        self.create = create  # a per-replica subscription: created as declared here if missing
        self.pull_timeout_s, self.max_messages = pull_timeout_s, max_messages
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._client = None
        self._task: asyncio.Task | None = None

    async def handle_batch(self, payloads: list[bytes]) -> None:  # pragma: no cover - each feed defines it
        """Apply one pulled batch (possibly empty); returning means it may be acked."""
        raise NotImplementedError

    def count(self, outcome: str) -> None:  # pragma: no cover - each feed defines it
        """Count a loop outcome ("pull_error") in the feed's metric."""
        raise NotImplementedError

    def _pull(self) -> list:
        from google.api_core import exceptions as gexc
        from google.cloud import pubsub_v1

        if self._client is None:
            client = pubsub_v1.SubscriberClient()
            if self.create is not None:
                self._ensure_subscription(client)
            self._client = client
        path = self._client.subscription_path(self.project, self.subscription)
        try:
            response = self._client.pull(subscription=path, max_messages=self.max_messages, timeout=self.pull_timeout_s)
        except gexc.DeadlineExceeded:  # no message within the pull timeout: an empty pull
            return []
        return list(response.received_messages)

    def _ensure_subscription(self, client) -> None:
        """Create this replica's subscription as `self.create` declares it, unless it exists (blocking)."""
        from google.api_core import exceptions as gexc
        from google.protobuf import duration_pb2

        request = {
            "name": client.subscription_path(self.project, self.subscription),
            "topic": f"projects/{self.project}/topics/{self.create.topic}",
            "ack_deadline_seconds": self.create.ack_deadline_s,
            "expiration_policy": {"ttl": duration_pb2.Duration(seconds=REPLICA_SUBSCRIPTION_TTL_S)},
        }
        try:
            client.create_subscription(request=request, timeout=10)
            log.info("%s: created subscription %s on topic %s", self.name, self.subscription, self.create.topic)
        except gexc.AlreadyExists:
            pass  # a restarted replica: keep pulling what queued meanwhile

    def _ack(self, ack_ids: list[str]) -> None:
        path = self._client.subscription_path(self.project, self.subscription)
        self._client.acknowledge(subscription=path, ack_ids=ack_ids)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.0
        while True:
            try:
                messages = await loop.run_in_executor(self._thread, self._pull)
                await self.handle_batch([m.message.data for m in messages])
                if messages:
                    await loop.run_in_executor(self._thread, self._ack, [m.ack_id for m in messages])
                backoff = 0.0
                if not messages:
                    await asyncio.sleep(0.1)  # an emulator may answer an empty pull at once
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Pub/Sub (or the store) down: counted, retried with backoff
                self.count("pull_error")
                backoff = min(max(0.5, backoff * 2), MAX_BACKOFF_S)
                log.warning("%s pull failed (retry in %.1f s): %s", self.name, backoff, exc)
                await asyncio.sleep(backoff)

    async def stop(self) -> None:
        await super().stop()
        self._thread.shutdown(wait=False, cancel_futures=True)
