"""Several serving replicas on one host: each pulls its own Pub/Sub subscriptions (Pub/Sub load-balances
one subscription across its subscribers, so a shared one would give each replica part of the events).

Settings: CLIFFHANGER_REPLICA_ID names the subscriptions `<declared>-<id>` and marks them for creation;
an explicit CLIFFHANGER_*_SUBSCRIPTION wins. Then, on the real Pub/Sub emulator: two replicas' catalog
feeds create their subscriptions on start and BOTH apply the same published event; a restarted replica
reuses its subscription (and gets what was published while it was down)."""

from __future__ import annotations

import asyncio
import time

import pytest

from cliffhanger import resources
from cliffhanger.catalog_events import SERIES_UPDATE, CatalogEvent
from serving.catalog_feed import CatalogFeed
from serving.live_catalog import CatalogChange
from serving.metrics import Metrics
from serving.pubsub_pull import REPLICA_SUBSCRIPTION_TTL_S
from serving.settings import ServingConfigError, ServingSettings
from tests.pubsub_helpers import publish


def test_without_a_replica_id_the_declared_subscriptions_are_used_and_not_created() -> None:
    s = ServingSettings.from_env({})
    assert (s.replica_id, s.catalog_subscription, s.item_changes_subscription) == (
        "",
        resources.CATALOG_SERVING_SUBSCRIPTION,
        resources.ITEM_CHANGES_SERVING_SUBSCRIPTION,
    )
    assert s.owned_subscription(s.catalog_subscription) is None
    assert s.owned_subscription(s.item_changes_subscription) is None


def test_a_replica_id_gives_own_subscriptions_on_the_declared_topics() -> None:
    s = ServingSettings.from_env({"CLIFFHANGER_REPLICA_ID": "r1"})
    assert (s.catalog_subscription, s.item_changes_subscription) == ("catalog-serving-r1", "item-changes-serving-r1")
    catalog, notices = s.owned_subscription("catalog-serving-r1"), s.owned_subscription("item-changes-serving-r1")
    assert (catalog.name, catalog.topic) == ("catalog-serving-r1", resources.CATALOG_TOPIC)
    assert (notices.name, notices.topic) == ("item-changes-serving-r1", resources.ITEM_CHANGES_TOPIC)
    assert catalog.ack_deadline_s == resources.subscription(resources.CATALOG_SERVING_SUBSCRIPTION).ack_deadline_s


def test_an_explicit_subscription_wins_and_is_not_created() -> None:
    env = {
        "CLIFFHANGER_REPLICA_ID": "r1",
        "CLIFFHANGER_CATALOG_SUBSCRIPTION": "ops-managed",
        "CLIFFHANGER_ITEM_CHANGES_SUBSCRIPTION": "",
    }
    s = ServingSettings.from_env(env)
    assert (s.catalog_subscription, s.item_changes_subscription) == ("ops-managed", "")  # "" = feed off
    assert s.owned_subscription("ops-managed") is None and not s.owned_subscriptions


@pytest.mark.parametrize("bad", ["r 1", "-r1", "r/1", "x" * 64])
def test_a_bad_replica_id_names_the_variable(bad: str) -> None:
    with pytest.raises(ServingConfigError, match="CLIFFHANGER_REPLICA_ID"):
        ServingSettings.from_env({"CLIFFHANGER_REPLICA_ID": bad})


def _catalog_feed(project: str, replica_id: str, applied: list) -> CatalogFeed:
    s = ServingSettings.from_env({"CLIFFHANGER_REPLICA_ID": replica_id})

    def apply(change: CatalogChange) -> str:
        applied.append(change.event)
        return "applied"

    create = s.owned_subscription(s.catalog_subscription)
    return CatalogFeed(project, s.catalog_subscription, apply, Metrics(), create=create, pull_timeout_s=0.5)


async def _until(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _subscription(project: str, name: str):
    from google.cloud import pubsub_v1

    client = pubsub_v1.SubscriberClient()
    return client.get_subscription(subscription=client.subscription_path(project, name), timeout=10)


@pytest.mark.emulators
def test_two_replicas_each_create_their_subscription_and_both_get_every_event(local_stack) -> None:
    project = local_stack.settings.project
    suffix = str(time.monotonic_ns())[-8:]  # fresh names: the emulator lives for the whole session
    first = CatalogEvent(SERIES_UPDATE, "s0001", 1_000, 1)
    second = CatalogEvent(SERIES_UPDATE, "s0002", 2_000, 1)

    async def main() -> tuple[list, list, list]:
        got0: list = []
        got1: list = []
        feeds = [_catalog_feed(project, f"a{suffix}", got0), _catalog_feed(project, f"b{suffix}", got1)]
        for feed in feeds:
            feed.start()
        await _until(lambda: all(f._client is not None for f in feeds))  # subscriptions exist: first pull began
        publish(project, resources.CATALOG_TOPIC, [first.to_json()])
        await _until(lambda: got0 and got1)
        await feeds[1].stop()  # replica b goes away for a while ...
        publish(project, resources.CATALOG_TOPIC, [second.to_json()])
        await _until(lambda: len(got0) == 2)
        got1_again: list = []
        restarted = _catalog_feed(project, f"b{suffix}", got1_again)  # ... and comes back: same subscription
        restarted.start()
        await _until(lambda: got1_again)
        for feed in (feeds[0], restarted):
            await feed.stop()
        return got0, got1, got1_again

    got0, got1, got1_again = asyncio.run(main())
    assert got0 == [first, second]
    assert got1 == [first] and got1_again == [second]  # b's subscription kept what came while it was down
    sub = _subscription(project, f"catalog-serving-a{suffix}")
    assert sub.topic == f"projects/{project}/topics/{resources.CATALOG_TOPIC}"
    assert sub.ack_deadline_seconds == resources.subscription(resources.CATALOG_SERVING_SUBSCRIPTION).ack_deadline_s
    ttl = sub.expiration_policy.ttl  # (the emulator keeps the policy; it does not run the expiry)
    assert ttl.total_seconds() == REPLICA_SUBSCRIPTION_TTL_S  # a gone replica's subscription expires
