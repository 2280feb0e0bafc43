"""pipelines/invalidation.run(argv) on the DirectRunner against the real Pub/Sub emulator, a real
Varnish (repo VCL) in front of the bench origin, and the fake Fastly / Cloudflare API.

* a notice / catalog event published -> the object tagged with its key is purged (next GET is a MISS
  with the new content) within a few seconds; malformed ones -> dead-letter with stage=parse
* the purge endpoint fails 20 % of the time -> no purge lost: each key applied or dead-lettered, counted
* Varnish restarted mid-run -> the pipeline recovers: purges after the restart apply

"Applied" is read from the servers (the fake CDN's record; a PurgeRecorder in front of Varnish), not
from Beam counters: the BundleBasedDirectRunner's streaming metrics keep one bundle's values only
(Beam 2.77; the counters themselves are asserted in tests/transforms/test_send_purges.py).
"""

from __future__ import annotations

import time

import pytest

from cliffhanger import edge_keys, resources
from cliffhanger.catalog_events import SERIES_UPDATE, CatalogEvent
from cliffhanger.fakes.cdn import FASTLY, FakeCdn, FakeCdnConfig
from cliffhanger.fakes.origin import BenchOrigin, edge_get
from cliffhanger.fakes.purge_recorder import PurgeRecorder
from cliffhanger.localstack import Varnish, free_port
from cliffhanger.localstack.process import wait_for_port_release
from cliffhanger.notices import ChangeNotice
from cliffhanger.purge.clients import FASTLY_TOKEN_ENV
from pipelines import invalidation
from tests.pubsub_helpers import drain, publish
from transforms.send_purges import FailedPurge

pytestmark = pytest.mark.emulators

SECRET = "integration-secret"


@pytest.fixture
def secret(monkeypatch) -> bytes:
    monkeypatch.setenv(edge_keys.SECRET_ENV, SECRET)
    return SECRET.encode()


@pytest.fixture
def origin():
    with BenchOrigin() as server:
        yield server


def _empty_subscriptions(project: str) -> None:
    for sub in (
        resources.FEATURE_CHANGES_SUBSCRIPTION,
        resources.CATALOG_SUBSCRIPTION,
        resources.PURGE_DEAD_LETTER_SUBSCRIPTION,
        resources.CANDIDATE_CHANGES_SUBSCRIPTION,
    ):
        drain(project, sub, expect=10**6, timeout_s=1)


def _start(local_stack, *args: str):
    return invalidation.run(["--project", local_stack.settings.project, "--runner", "DirectRunner", *args])


def _wait(predicate, timeout_s: float, what: str, poll_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def _fresh(cache_url: str, key: str, version: int) -> bool:
    try:
        return edge_get(cache_url, key)[1] >= version
    except OSError:
        return False


def _notice(user_id: str, version: int = 1) -> bytes:
    return ChangeNotice("user", user_id, "completed_episode", version, int(time.time() * 1000)).to_json()


def test_a_refreshed_candidate_list_purges_the_user(local_stack, varnish, origin, secret):
    """pipelines/candidates.py publishes candidates_refreshed to `candidate-changes`: the user's answers go."""
    project = local_stack.settings.project
    _empty_subscriptions(project)
    cache = varnish(backend_port=origin.port)
    user = edge_keys.user_key("u000077", secret)
    edge_get(cache.url, user)
    origin.bump(user)
    result = _start(local_stack, "--varnish_url", cache.url)
    try:
        notice = ChangeNotice("user", "u000077", "candidates_refreshed", 3, int(time.time() * 1000)).to_json()
        publish(project, resources.CANDIDATE_CHANGES_TOPIC, [notice])
        _wait(lambda: _fresh(cache.url, user, 1), 60, "the candidates notice to purge the user")
    finally:
        result.cancel()


def test_notice_and_catalog_event_purge_the_tagged_objects_in_varnish(local_stack, varnish, origin, secret):
    project = local_stack.settings.project
    _empty_subscriptions(project)
    cache = varnish(backend_port=origin.port)
    user, series = edge_keys.user_key("u000042", secret), edge_keys.series_key("s0001")
    untouched = edge_keys.user_key("u000043", secret)
    for key in (user, series, untouched):
        edge_get(cache.url, key)
        assert edge_get(cache.url, key) == ("HIT", 0)
        origin.bump(key)  # the origin changed; the edge still has v0 until purged
    result = _start(local_stack, "--varnish_url", cache.url)
    try:
        start = time.monotonic()
        publish(project, resources.FEATURE_CHANGES_TOPIC, [_notice("u000042"), b"not json"])
        event = CatalogEvent(SERIES_UPDATE, "s0001", int(time.time() * 1000), 2)
        publish(project, resources.CATALOG_TOPIC, [event.to_json(), b'{"type": "series:drop"}'])
        _wait(lambda: _fresh(cache.url, user, 1) and _fresh(cache.url, series, 1), 60, "purges to reach Varnish")
        elapsed = time.monotonic() - start
        assert edge_get(cache.url, untouched) == ("HIT", 0)  # only what changed was purged
        dead = drain(project, resources.PURGE_DEAD_LETTER_SUBSCRIPTION, expect=2, timeout_s=30)
        got = sorted((m.attributes["stage"], m.attributes["reason"].split(":")[0], m.attributes["field"]) for m in dead)
        assert got == [("parse", "catalog", "series_id"), ("parse", "notice", "")]
        assert {m.data for m in dead} == {b"not json", b'{"type": "series:drop"}'}
        # Loose bound for a shared 2-core machine; the benchmark measures the real distribution.
        assert elapsed < 15, f"purge took {elapsed:.1f}s"
    finally:
        result.cancel()


def test_endpoint_failing_20_percent_loses_no_purge(local_stack, secret, monkeypatch):
    project = local_stack.settings.project
    _empty_subscriptions(project)
    users = [f"u{i:06d}" for i in range(1, 301)]
    expected = {edge_keys.user_key(u, secret) for u in users}
    config = FakeCdnConfig(fail_rate=0.2, fastly_rate_per_s=1000, fastly_burst=1000, seed=7)
    with FakeCdn(config) as cdn:
        cdn.fail_next(2, status=503)  # the first request exhausts its 2 attempts: the dead-letter path runs
        monkeypatch.setenv(FASTLY_TOKEN_ENV, config.fastly_token)
        args = ["--targets", "fastly", "--fastly_service_id", config.fastly_service_id, "--fastly_base_url", cdn.url]
        # Two attempts per request: at 20 % failure ~4 % of requests exhaust them.
        result = _start(local_stack, *args, "--purge_max_attempts", "2")
        try:
            for i in range(0, len(users), 20):  # spread over a few windows: many small batches
                publish(project, resources.FEATURE_CHANGES_TOPIC, [_notice(u) for u in users[i : i + 20]])
                time.sleep(0.3)
            dead: set[str] = set()
            deadline = time.monotonic() + 90
            while (cdn.applied_keys(FASTLY) | dead) != expected and time.monotonic() < deadline:
                for m in drain(project, resources.PURGE_DEAD_LETTER_SUBSCRIPTION, expect=1, timeout_s=2):
                    assert m.attributes["stage"] == "purge" and m.attributes["target"] == FASTLY
                    failed = FailedPurge.from_json(m.data)
                    assert failed.attempts == 2 and failed.status == 503
                    dead |= set(failed.keys)
            applied = cdn.applied_keys(FASTLY)
            assert applied | dead == expected, f"lost: {len(expected - applied - dead)}"
            assert not applied & dead
            assert dead, "the first request failed twice: its keys must be on the dead-letter topic"
            assert cdn.requests(FASTLY, 503) >= 2
        finally:
            result.cancel()


def test_varnish_restarted_mid_run_the_pipeline_recovers(local_stack, origin, secret, tmp_path):
    project = local_stack.settings.project
    _empty_subscriptions(project)
    listen, admin = free_port(), free_port()
    cache = Varnish(f"127.0.0.1:{origin.port}", listen_port=listen, admin_port=admin, workdir=tmp_path / "v1")
    cache.start()
    recorder = PurgeRecorder(listen).start()  # the pipeline purges through it: we see what Varnish accepted
    result = _start(local_stack, "--varnish_url", recorder.url)
    try:
        before = edge_keys.user_key("u100001", secret)
        edge_get(cache.url, before)
        origin.bump(before)
        publish(project, resources.FEATURE_CHANGES_TOPIC, [_notice("u100001")])
        _wait(lambda: _fresh(cache.url, before, 1), 60, "the purge before the restart")

        cache.stop()  # the edge goes away; notices keep coming
        during_users = [f"u2{i:05d}" for i in range(20)]
        publish(project, resources.FEATURE_CHANGES_TOPIC, [_notice(u) for u in during_users])
        _wait(lambda: any(p.status == 502 for p in recorder.snapshot()), 30, "a purge to hit the stopped Varnish")
        assert wait_for_port_release(listen)
        cache = Varnish(f"127.0.0.1:{origin.port}", listen_port=listen, admin_port=admin, workdir=tmp_path / "v2")
        cache.start()

        after_users = [f"u3{i:05d}" for i in range(5)]
        after = [edge_keys.user_key(u, secret) for u in after_users]
        for key in after:
            edge_get(cache.url, key)
            origin.bump(key)
        publish(project, resources.FEATURE_CHANGES_TOPIC, [_notice(u) for u in after_users])
        _wait(lambda: all(_fresh(cache.url, k, 1) for k in after), 60, "purges after the restart")

        # None of the notices sent while Varnish was down is lost: each key was accepted by the
        # restarted Varnish (retries) or is on the dead-letter topic.
        during = {edge_keys.user_key(u, secret) for u in during_users}
        dead: set[str] = set()
        deadline = time.monotonic() + 30
        while not during <= recorder.applied_keys() | dead and time.monotonic() < deadline:
            for m in drain(project, resources.PURGE_DEAD_LETTER_SUBSCRIPTION, expect=1, timeout_s=2):
                dead |= set(FailedPurge.from_json(m.data).keys)
        assert during <= recorder.applied_keys() | dead, f"lost: {during - recorder.applied_keys() - dead}"
        assert any(p.status == 502 for p in recorder.snapshot())  # the outage was really hit
    finally:
        result.cancel()
        recorder.stop()
        cache.stop()
