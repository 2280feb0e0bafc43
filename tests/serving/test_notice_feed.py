"""The notice feed (issue 5, section 3): episode notices keep the edge replica fresh between
reconciliations. Unit tests over a dict store; then the real thing on the emulators: an event published
for a hot episode reaches the replica through the streaming features job, the `item-changes` topic and
the feed within seconds (no reconciliation runs), and duplicated or older notices do not regress it."""

from __future__ import annotations

import asyncio
import time

import pytest

from cliffhanger import resources
from cliffhanger.notices import ChangeNotice
from serving.feature_store import FeatureRow, FeatureStore
from serving.metrics import Metrics
from serving.notice_feed import NoticeFeed
from serving.replica import EdgeReplica
from tests.factories import event, write_catalog
from tests.pubsub_helpers import drain, publish
from transforms import rowkeys

HOT = ["s0001e001", "s0001e002"]


def _row(episode_id: str, version: int, plays: int) -> FeatureRow:
    values = {"i": {"plays_24h": plays, "as_of_ms": version}}
    return FeatureRow(rowkeys.episode_key(episode_id), values, {"i": {"plays_24h": version}})


class _Store:
    """read_direct over a dict of rows; `fail` makes the next reads raise (Bigtable down)."""

    def __init__(self) -> None:
        self.rows: dict[bytes, FeatureRow] = {}
        self.reads: list[list[bytes]] = []
        self.fail = 0

    def read_direct(self, keys, timeout_s, column_range=None):
        self.reads.append(list(keys))
        if self.fail:
            self.fail -= 1
            raise TimeoutError("bigtable unavailable")
        return {k: self.rows[k] for k in keys if k in self.rows}


def _count(metrics: Metrics, result: str) -> float:
    return metrics.registry.get_sample_value("cliffhanger_replica_updates_total", {"result": result}) or 0.0


def _notice(episode_id: str, version: int) -> bytes:
    return ChangeNotice("episode", episode_id, "item_features", version, version).to_json()


def _feed(store: _Store) -> tuple[NoticeFeed, EdgeReplica, Metrics]:
    metrics = Metrics()
    replica = EdgeReplica(store, metrics)
    asyncio.run(replica.reconcile(HOT))  # the hot set; no rows yet
    return NoticeFeed("p", "item-changes-serving", replica, metrics), replica, metrics


def test_a_batch_applies_hot_notices_in_one_read_and_never_goes_back() -> None:
    store = _Store()
    feed, replica, metrics = _feed(store)
    store.rows[rowkeys.episode_key("s0001e001")] = _row("s0001e001", 2000, plays=7)
    store.rows[rowkeys.episode_key("s0001e002")] = _row("s0001e002", 3000, plays=9)
    store.reads.clear()
    batch = [
        _notice("s0001e001", 2000),
        _notice("s0001e002", 3000),
        _notice("s0001e001", 2000),  # at-least-once: a duplicate in the same batch
        _notice("s0002e001", 5000),  # not hot: the replica does not hold it
        ChangeNotice("user", "u1", "new_session", 4, 4).to_json(),
        b"not json",
    ]
    asyncio.run(feed.handle_batch(batch))
    assert {e: replica.version(e) for e in HOT} == {"s0001e001": 2000, "s0001e002": 3000}
    assert len(store.reads) == 1 and sorted(store.reads[0]) == sorted(rowkeys.episode_key(e) for e in HOT)
    assert (_count(metrics, "notice_pending"), _count(metrics, "stale")) == (2, 1)
    assert (_count(metrics, "notice_cold"), _count(metrics, "notice_invalid")) == (2, 1)

    store.rows[rowkeys.episode_key("s0001e001")] = _row("s0001e001", 1500, plays=1)  # what an old read would see
    asyncio.run(feed.handle_batch([_notice("s0001e001", 1500), _notice("s0001e001", 2000)]))  # older, duplicate
    assert replica.version("s0001e001") == 2000 and replica.entries["s0001e001"].features["plays_24h"] == 7
    assert len(store.reads) == 1 and _count(metrics, "stale") == 3  # nothing to read: both were stale


def test_a_failed_read_keeps_the_versions_pending_until_the_next_pull() -> None:
    store = _Store()
    feed, replica, metrics = _feed(store)
    store.rows[rowkeys.episode_key("s0001e001")] = _row("s0001e001", 2000, plays=7)
    store.fail = 1
    asyncio.run(feed.handle_batch([_notice("s0001e001", 2000)]))  # returns: the batch is acked
    assert replica.pending == {"s0001e001": 2000} and replica.version("s0001e001") is None
    assert _count(metrics, "notice_fetch_error") == 1
    asyncio.run(feed.handle_batch([]))  # the next (empty) pull retries the read
    assert replica.pending == {} and replica.version("s0001e001") == 2000


def test_reconcile_forgets_pending_versions_of_episodes_that_left_the_hot_set() -> None:
    store = _Store()
    feed, replica, _ = _feed(store)
    store.fail = 1
    asyncio.run(feed.handle_batch([_notice("s0001e002", 2000)]))
    assert replica.pending == {"s0001e002": 2000}
    asyncio.run(replica.reconcile(HOT[:1]))
    assert replica.pending == {} and not replica.is_hot("s0001e002") and replica.is_hot("s0001e001")


def _wait(predicate, timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"{what} within {timeout_s} s")


@pytest.mark.emulators
@pytest.mark.slow
def test_an_event_reaches_the_replica_through_the_features_job_within_seconds(local_stack, clean_bigtable, tmp_path):
    """publish -> streaming_features.run (DirectRunner) -> row + episode notice -> feed -> replica."""
    import threading

    from pipelines import streaming_features

    s = local_stack.settings
    for sub in (resources.EVENTS_SUBSCRIPTION, resources.ITEM_CHANGES_SERVING_SUBSCRIPTION):
        drain(s.project, sub, expect=10**6, timeout_s=1)  # other tests' messages on the shared topics
    store = FeatureStore.open(s.project, s.bigtable_instance, resources.FEATURES_TABLE)
    metrics = Metrics()
    replica = EdgeReplica(store, metrics)
    feed = NoticeFeed(s.project, resources.ITEM_CHANGES_SERVING_SUBSCRIPTION, replica, metrics, pull_timeout_s=1)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def on_loop(coro, timeout_s: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout_s)

    async def start() -> None:
        await replica.reconcile(HOT)  # once, before any row exists: from here on only notices move it
        feed.start()

    on_loop(start())
    result = streaming_features.run(
        ["--catalog", write_catalog(tmp_path), "--project", s.project, "--runner", "DirectRunner"]
    )
    try:
        now = int(time.time() * 1000)
        first = event("play_start", t=now - 3_000, user="u000001")
        publish(s.project, resources.EVENTS_TOPIC, [first.to_json()])  # the job's first bundle: start-up cost
        _wait(lambda: replica.version("s0001e001") == now - 3_000, 90, "the first event never reached the replica")

        second = event("complete", t=now - 1_000, user="u000001")  # 2 s of event time later: past the interval
        cold = event("play_start", t=now - 1_000, user="u000002", series="s0002")
        publish(s.project, resources.EVENTS_TOPIC, [second.to_json(), cold.to_json()])
        took = _wait(lambda: replica.version("s0001e001") == now - 1_000, 10, "the second event did not arrive")
        assert took < 5.0, f"publish -> replica took {took:.2f} s"
        held = replica.entries["s0001e001"].features
        assert (held["plays_24h"], held["completes_24h"]) == (1, 1)
        _wait(lambda: _count(metrics, "notice_cold") >= 1, 10, "the s0002 notice was not seen")
        assert replica.version("s0002e001") is None  # not hot: not held

        stale_before = _count(metrics, "stale")
        publish(
            s.project,
            resources.ITEM_CHANGES_TOPIC,
            [_notice("s0001e001", now - 3_000), _notice("s0001e001", now - 1_000)],  # older, duplicate
        )
        _wait(lambda: _count(metrics, "stale") >= stale_before + 2, 10, "the stale notices were not seen")
        assert replica.version("s0001e001") == now - 1_000 and replica.entries["s0001e001"].features == held
        assert _count(metrics, "reconciled") == 0  # every update came through the feed
        print(f"\npublish -> replica: {took:.2f} s")
    finally:
        result.cancel()
        on_loop(feed.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
