"""Purge clients against real servers: the fake Fastly / Cloudflare API (cliffhanger.fakes.cdn, which
enforces auth, batch limits, rate limits and faults) and a real Varnish with the repo VCL."""

from __future__ import annotations

import http.client
import random
import time

import pytest

from cliffhanger.fakes.cdn import CLOUDFLARE, FASTLY, FakeCdn, FakeCdnConfig
from cliffhanger.fakes.origin import BenchOrigin, read_version
from cliffhanger.localstack import free_port
from cliffhanger.purge import targets
from cliffhanger.purge.clients import (
    CLOUDFLARE_MAX_TAGS,
    FASTLY_MAX_KEYS,
    CloudflarePurger,
    FastlyPurger,
    PurgeError,
    VarnishPurger,
)
from cliffhanger.purge.sender import PurgeSender, RetryPolicy, TokenBucket


@pytest.fixture
def cdn():
    with FakeCdn(FakeCdnConfig(fastly_rate_per_s=1000, fastly_burst=1000, cloudflare_rate_per_s=1000)) as server:
        yield server


def _fastly(cdn, token=None, service=None):
    c = cdn.config
    return FastlyPurger(service or c.fastly_service_id, token or c.fastly_token, cdn.url)


def _cloudflare(cdn, token=None, zone=None):
    c = cdn.config
    return CloudflarePurger(zone or c.cloudflare_zone_id, token or c.cloudflare_token, cdn.url)


def _keys(n, prefix="u-"):
    return [f"{prefix}{i:016x}" for i in range(n)]


def test_fastly_and_cloudflare_request_shapes_are_accepted(cdn):
    _fastly(cdn).purge(["s-s0001", "e-s0001e002"])
    _cloudflare(cdn).purge(["s-s0001"])
    assert cdn.applied_keys(FASTLY) == {"s-s0001", "e-s0001e002"}
    assert cdn.applied_keys(CLOUDFLARE) == {"s-s0001"}


@pytest.mark.parametrize(("make", "vendor"), [(_fastly, FASTLY), (_cloudflare, CLOUDFLARE)])
def test_bad_credentials_and_unknown_account_are_permanent_errors(cdn, make, vendor):
    for kwargs, status in (
        ({"token": "wrong"}, 403),
        ({"service": "nope"} if vendor == FASTLY else {"zone": "nope"}, 404),
    ):
        with pytest.raises(PurgeError) as info:
            make(cdn, **kwargs).purge(["s-1"])
        assert info.value.status == status and not info.value.retryable
    assert cdn.applied_keys(vendor) == set()


def test_missing_credentials_answer_401(cdn):
    conn = http.client.HTTPConnection("127.0.0.1", int(cdn.url.rsplit(":", 1)[1]), timeout=5)
    conn.request("POST", f"/service/{cdn.config.fastly_service_id}/purge", body=b'{"surrogate_keys":["a"]}')
    assert conn.getresponse().status == 401


@pytest.mark.parametrize(
    ("make", "vendor", "limit"), [(_fastly, FASTLY, FASTLY_MAX_KEYS), (_cloudflare, CLOUDFLARE, CLOUDFLARE_MAX_TAGS)]
)
def test_the_documented_batch_limit_is_enforced_and_respected(cdn, make, vendor, limit):
    purger = make(cdn)
    assert purger.max_keys == limit
    with pytest.raises(PurgeError) as info:
        purger.purge(_keys(limit + 1))
    assert info.value.status == 400 and not info.value.retryable
    sender = PurgeSender(purger, RetryPolicy(), TokenBucket(1000, 1000))
    outcomes = sender.send_all(_keys(2 * limit + 5))
    assert [len(o.keys) for o in outcomes] == [limit, limit, 5] and all(o.applied for o in outcomes)
    assert cdn.applied_keys(vendor) == set(_keys(2 * limit + 5))


def test_429_backoff_honours_retry_after(cdn):
    cdn.fail_next(1, status=429, retry_after_s=1)
    sender = PurgeSender(_cloudflare(cdn), RetryPolicy(), TokenBucket(1000, 1000))
    start = time.monotonic()
    out = sender.send(("s-1",))
    assert out.applied and out.attempts == 2
    assert time.monotonic() - start >= 1.0
    assert cdn.requests(CLOUDFLARE, 429) == 1 and cdn.requests(CLOUDFLARE, 200) == 1


def test_5xx_is_retried_and_a_permanent_failure_is_reported(cdn):
    cdn.fail_next(2, status=500)
    sender = PurgeSender(_fastly(cdn), RetryPolicy(base_backoff_s=0.01), TokenBucket(1000, 1000))
    assert sender.send(("s-1",)).applied
    cdn.fail_next(10, status=503)
    out = PurgeSender(_fastly(cdn), RetryPolicy(max_attempts=3, base_backoff_s=0.01), TokenBucket(1000, 1000)).send(
        ("s-2",)
    )
    assert not out.applied and out.attempts == 3 and out.status == 503
    assert "s-2" not in cdn.applied_keys(FASTLY)


def test_client_rate_limit_keeps_under_the_server_limit():
    config = FakeCdnConfig(cloudflare_rate_per_s=10, cloudflare_burst=5)
    with FakeCdn(config) as cdn:
        spec = targets.cloudflare(cdn.config.cloudflare_zone_id, cdn.url, plan="business")
        assert (spec.rate_per_s, spec.burst) == (8.0, 40)  # 80 % of business: 10/s, bucket 50
        sender = PurgeSender(_cloudflare(cdn), RetryPolicy(), TokenBucket(8, 4))  # the same headroom
        start = time.monotonic()
        outcomes = [sender.send((f"s-{i}",)) for i in range(12)]
        elapsed = time.monotonic() - start
    assert all(o.applied and o.attempts == 1 for o in outcomes)
    assert cdn.requests(CLOUDFLARE, 429) == 0
    assert elapsed >= 0.95  # 4 at once, then 8 at 8/s


def test_server_rate_limit_answers_429_to_an_impolite_client():
    with FakeCdn(FakeCdnConfig(fastly_rate_per_s=2, fastly_burst=2)) as cdn:
        purger = _fastly(cdn)
        purger.purge(["a"])
        purger.purge(["b"])
        with pytest.raises(PurgeError) as info:
            purger.purge(["c"])
    assert info.value.status == 429 and info.value.retryable and info.value.retry_after_s >= 1


def test_fault_rate_fails_about_that_share_and_applies_nothing_then():
    with FakeCdn(FakeCdnConfig(fail_rate=0.2, fastly_rate_per_s=1e6, fastly_burst=10**6, seed=3)) as cdn:
        purger = _fastly(cdn)
        failed = 0
        for i in range(300):
            try:
                purger.purge([f"k{i}"])
            except PurgeError as exc:
                assert exc.status == 503
                failed += 1
        assert 30 <= failed <= 90
        assert len(cdn.applied_keys(FASTLY)) == 300 - failed


def _get(url, path):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp.getheader("X-Cache"), read_version(resp.read())


def test_varnish_purger_purges_tagged_objects_in_real_varnish(varnish):
    with BenchOrigin() as origin:
        cache = varnish(backend_port=origin.port)
        keys = [f"u-{random.getrandbits(64):016x}" for _ in range(150)]
        for k in keys:
            _get(cache.url, origin.path(k))
        assert _get(cache.url, origin.path(keys[0])) == ("HIT", 0)
        for k in keys:
            origin.bump(k)
        sender = PurgeSender(VarnishPurger(cache.url), RetryPolicy(), TokenBucket(1000, 1000))
        outcomes = sender.send_all(keys)
        assert [len(o.keys) for o in outcomes] == [100, 50] and all(o.applied for o in outcomes)
        assert VarnishPurger(cache.url).purge(["never-tagged"]) == 0
        assert {_get(cache.url, origin.path(k)) for k in keys} == {("MISS", 1)}


def test_varnish_down_is_a_retryable_connection_error():
    with pytest.raises(PurgeError) as info:
        VarnishPurger(f"http://127.0.0.1:{free_port()}", timeout_s=1).purge(["a"])
    assert info.value.status is None and info.value.retryable
