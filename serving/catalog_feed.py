"""Catalog events from Pub/Sub into the serving process's LiveCatalog.

    feed = CatalogFeed(project, "catalog-serving", live.apply_payload, metrics)
    task = feed.start()          # pulls on its own thread, applies on the event loop, then acks

Pulls run on a dedicated thread (a pull waits up to `pull_timeout_s` for messages; it must not hold a
request-path executor thread). Each message is applied on the event loop (where requests read the
catalog) and acked afterwards, so a crash between the two means a redelivery, which the per-series
versions turn into a no-op. A payload that cannot be parsed is counted and acked: the invalidation
pipeline dead-letters the same payload from its own subscription, a second copy would add nothing.

Replicas: Pub/Sub load-balances one subscription's messages across its subscribers, so every serving
replica needs its own subscription to the `catalog` topic. Locally (and for a single replica) the
declared `catalog-serving` is used; in the cloud each replica creates `catalog-serving-<instance>`
with an expiration policy (the subscription is deleted after the replica has been gone a day) and the
catalog file re-read on start covers what it missed while it did not exist.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from cliffhanger.catalog_events import CatalogEventError
from serving.background import BackgroundLoop
from serving.live_catalog import CatalogChange, parse_change
from serving.metrics import Metrics

log = logging.getLogger(__name__)


class CatalogFeed(BackgroundLoop):
    def __init__(
        self,
        project: str,
        subscription: str,
        apply: Callable[[CatalogChange], str],
        metrics: Metrics,
        *,
        pull_timeout_s: float = 2.0,
        max_messages: int = 100,
    ) -> None:
        self.project, self.subscription, self.apply, self.metrics = project, subscription, apply, metrics
        self.pull_timeout_s, self.max_messages = pull_timeout_s, max_messages
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="catalog-feed")
        self._client = None
        self._task: asyncio.Task | None = None

    def _pull(self) -> list:
        from google.api_core import exceptions as gexc
        from google.cloud import pubsub_v1

        if self._client is None:
            self._client = pubsub_v1.SubscriberClient()
        path = self._client.subscription_path(self.project, self.subscription)
        try:
            response = self._client.pull(subscription=path, max_messages=self.max_messages, timeout=self.pull_timeout_s)
        except gexc.DeadlineExceeded:  # no message within the pull timeout: an empty pull
            return []
        return list(response.received_messages)

    def _ack(self, ack_ids: list[str]) -> None:
        path = self._client.subscription_path(self.project, self.subscription)
        self._client.acknowledge(subscription=path, ack_ids=ack_ids)

    def handle(self, payload: bytes) -> str:
        """Parse + apply one payload; returns the outcome label (also counted)."""
        try:
            outcome = self.apply(parse_change(payload))
        except (CatalogEventError, ValueError) as exc:
            log.warning("catalog event not applied: %s", exc)
            outcome = "invalid"
        self.metrics.catalog_events.labels(outcome).inc()
        return outcome

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.0
        while True:
            try:
                messages = await loop.run_in_executor(self._thread, self._pull)
                for m in messages:
                    self.handle(m.message.data)
                if messages:
                    await loop.run_in_executor(self._thread, self._ack, [m.ack_id for m in messages])
                backoff = 0.0
                if not messages:
                    await asyncio.sleep(0.1)  # an emulator may answer an empty pull at once
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Pub/Sub down: counted, retried with backoff; the catalog stays
                self.metrics.catalog_events.labels("pull_error").inc()
                backoff = min(max(0.5, backoff * 2), 30.0)
                log.warning("catalog feed pull failed (retry in %.1f s): %s", backoff, exc)
                await asyncio.sleep(backoff)

    async def stop(self) -> None:
        await super().stop()
        self._thread.shutdown(wait=False, cancel_futures=True)
