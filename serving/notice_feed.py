"""Episode notices from Pub/Sub into the serving process's edge replica (serving/replica.py).

    feed = NoticeFeed(project, "item-changes-serving", replica, metrics)
    task = feed.start()          # pulls on its own thread, applies on the event loop, reads, then acks

The features pipeline publishes an episode ChangeNotice (topic `item-changes`, version = the row's
`as_of_ms`) after it wrote the row. Per pulled batch this feed:

  1. parses each notice and keeps those for episodes in the replica's hot set (`is_hot`): the replica
     holds only hot episodes, the rest are counted (`notice_cold`) and dropped;
  2. `replica.apply(notice)`: a version not above the held or pending one is stale (a duplicate or an
     older delivery, counted by the replica) and changes nothing; a newer one becomes pending;
  3. reads every pending episode's row in ONE batched read (`fetch_pending`, on the feed's own thread,
     not a request-path executor thread) and applies it; then the batch is acked.

A read that fails (Bigtable slow or down) is counted (`notice_fetch_error`) and the batch is acked all
the same: its versions stay pending in the replica and are read again after the next pull (every
`pull_timeout_s` at most, empty pulls included) and by the next reconciliation. A notice that cannot
be parsed is counted (`notice_invalid`) and acked: nothing else consumes the topic, and the rows it
might have named are healed by reconciliation.

Counts go to `cliffhanger_replica_updates_total{result=...}` with the replica's own results.
Subscriptions per replica: see serving/pubsub_pull.py (CLIFFHANGER_REPLICA_ID: `item-changes-serving-<id>`,
created on start; or CLIFFHANGER_ITEM_CHANGES_SUBSCRIPTION).
"""

from __future__ import annotations

import logging

from cliffhanger.notices import ChangeNotice, NoticeError
from cliffhanger.resources import Subscription
from serving.metrics import Metrics
from serving.pubsub_pull import PubSubPull
from serving.replica import EdgeReplica

log = logging.getLogger(__name__)

PENDING, STALE, COLD, INVALID = "pending", "stale", "cold", "invalid"


class NoticeFeed(PubSubPull):
    def __init__(
        self,
        project: str,
        subscription: str,
        replica: EdgeReplica,
        metrics: Metrics,
        *,
        pull_timeout_s: float = 2.0,
        create: Subscription | None = None,
        max_messages: int = 500,
    ) -> None:
        super().__init__(
            project,
            subscription,
            name="notice-feed",
            pull_timeout_s=pull_timeout_s,
            max_messages=max_messages,
            create=create,
        )
        self.replica, self.metrics = replica, metrics

    def handle(self, payload: bytes) -> str:
        """Parse one notice and hand it to the replica; returns the outcome (counted unless the replica
        counted it: `stale`)."""
        try:
            notice = ChangeNotice.from_json(payload)
        except NoticeError as exc:
            log.warning("episode notice not applied: %s", exc)
            self.count(INVALID)
            return INVALID
        if notice.entity != "episode" or not self.replica.is_hot(notice.id):
            self.count(COLD)
            return COLD
        if not self.replica.apply(notice):
            return STALE
        self.count(PENDING)
        return PENDING

    async def handle_batch(self, payloads: list[bytes]) -> None:
        for payload in payloads:
            self.handle(payload)
        if not self.replica.pending:
            return
        try:
            await self.replica.fetch_pending(self._thread)
        except Exception as exc:  # counted; the versions stay pending and are read again next pull
            self.count("fetch_error")
            log.warning("edge replica could not read %d announced rows: %s", len(self.replica.pending), exc)

    def count(self, outcome: str) -> None:
        self.metrics.replica.labels(f"notice_{outcome}").inc()
