"""Catalog events from Pub/Sub into the serving process's LiveCatalog.

    feed = CatalogFeed(project, "catalog-serving", live.apply, metrics)
    task = feed.start()          # pulls on its own thread, applies on the event loop, then acks

The pull loop, its thread, acks and backoff are serving/pubsub_pull.py's (shared with the notice feed);
so is the note on subscriptions per replica. Each event is applied on the event loop (where requests
read the catalog) and acked afterwards, so a crash between the two means a redelivery, which the
per-series versions turn into a no-op. A payload that cannot be parsed is counted and acked: the
invalidation pipeline dead-letters the same payload from its own subscription, a second copy would add
nothing.

Replicas: with one replica the declared `catalog-serving` is used; with CLIFFHANGER_REPLICA_ID set the
replica pulls (and creates on start) `catalog-serving-<id>` (or CLIFFHANGER_CATALOG_SUBSCRIPTION), and
the catalog file re-read on start covers what it missed while that subscription did not exist.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from cliffhanger.catalog_events import CatalogEventError
from cliffhanger.resources import Subscription
from serving.live_catalog import CatalogChange, parse_change
from serving.metrics import Metrics
from serving.pubsub_pull import PubSubPull

log = logging.getLogger(__name__)


class CatalogFeed(PubSubPull):
    def __init__(
        self,
        project: str,
        subscription: str,
        apply: Callable[[CatalogChange], str],
        metrics: Metrics,
        *,
        pull_timeout_s: float = 2.0,
        create: Subscription | None = None,
        max_messages: int = 100,
    ) -> None:
        super().__init__(
            project,
            subscription,
            name="catalog-feed",
            pull_timeout_s=pull_timeout_s,
            max_messages=max_messages,
            create=create,
        )
        self.apply, self.metrics = apply, metrics

    def handle(self, payload: bytes) -> str:
        """Parse + apply one payload; returns the outcome label (also counted)."""
        try:
            outcome = self.apply(parse_change(payload))
        except (CatalogEventError, ValueError) as exc:
            log.warning("catalog event not applied: %s", exc)
            outcome = "invalid"
        self.metrics.catalog_events.labels(outcome).inc()
        return outcome

    async def handle_batch(self, payloads: list[bytes]) -> None:
        for payload in payloads:
            self.handle(payload)

    def count(self, outcome: str) -> None:
        self.metrics.catalog_events.labels(outcome).inc()
