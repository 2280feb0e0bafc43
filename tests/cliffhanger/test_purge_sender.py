"""cliffhanger.purge.sender: token bucket, backoff with jitter, Retry-After, give-up rules.
A scripted purger and a fake clock: no waiting, every pause checked."""

from __future__ import annotations

import random

import pytest

from cliffhanger.purge.clients import PurgeError, chunk_keys, parse_retry_after
from cliffhanger.purge.sender import PurgeSender, RetryPolicy, TokenBucket


class Clock:
    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


class Scripted:
    """Answers each purge with the next scripted item: None = success, an exception = raised."""

    name = "scripted"
    max_keys = 3
    max_header_bytes = None

    def __init__(self, clock, *script):
        self.clock, self.script, self.calls = clock, list(script), []

    def purge(self, keys):
        self.calls.append((self.clock.now, tuple(keys)))
        item = self.script.pop(0) if self.script else None
        if item is not None:
            raise item
        return len(keys)

    def close(self):
        pass


def _sender(clock, *script, policy=None, rate=100.0, burst=10):
    purger = Scripted(clock, *script)
    bucket = TokenBucket(rate, burst, clock=clock, sleep=clock.sleep)
    return PurgeSender(purger, policy or RetryPolicy(), bucket, sleep=clock.sleep, rng=random.Random(1)), purger


def test_token_bucket_allows_a_burst_then_paces_at_the_rate():
    clock = Clock()
    bucket = TokenBucket(5.0, 3, clock=clock, sleep=clock.sleep)
    waits = [bucket.acquire() for _ in range(6)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == pytest.approx([0.2, 0.2, 0.2])  # 5 per second after the burst


def test_backoff_is_exponential_with_jitter_and_capped():
    policy, rng = RetryPolicy(base_backoff_s=0.1, max_backoff_s=1.0), random.Random(0)
    for attempt, ceiling in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)):
        pauses = [policy.backoff_s(attempt, rng) for _ in range(200)]
        assert ceiling / 2 <= min(pauses) and max(pauses) <= ceiling
        assert len(set(pauses)) > 100  # jittered


def test_5xx_and_connection_errors_are_retried_then_applied():
    clock = Clock()
    sender, purger = _sender(clock, PurgeError("503", status=503), PurgeError("refused"), None)
    out = sender.send(("a", "b"))
    assert out.applied and out.attempts == 3 and out.error == ""
    assert len(purger.calls) == 3
    assert 0.05 <= clock.sleeps[0] <= 0.1 and 0.1 <= clock.sleeps[1] <= 0.2


def test_429_retry_after_is_honoured_before_the_next_request():
    clock = Clock()
    sender, purger = _sender(clock, PurgeError("429", status=429, retry_after_s=2.0), None)
    out = sender.send(("a",))
    assert out.applied and out.attempts == 2
    first, second = purger.calls[0][0], purger.calls[1][0]
    assert second - first >= 2.0


def test_permanent_errors_are_not_retried():
    for status in (400, 401, 403, 404):
        clock = Clock()
        sender, purger = _sender(clock, PurgeError("no", status=status))
        out = sender.send(("a",))
        assert not out.applied and out.attempts == 1 and out.status == status
        assert len(purger.calls) == 1


def test_gives_up_after_max_attempts_with_the_last_error():
    clock = Clock()
    errors = [PurgeError(f"503 #{i}", status=503) for i in range(10)]
    sender, purger = _sender(clock, *errors, policy=RetryPolicy(max_attempts=4))
    out = sender.send(("a",))
    assert not out.applied and out.attempts == 4 and out.error == "503 #3" and out.status == 503
    assert len(purger.calls) == 4


def test_a_retry_after_over_budget_gives_up_at_once():
    clock = Clock()
    sender, _ = _sender(clock, PurgeError("429", status=429, retry_after_s=3600), policy=RetryPolicy())
    out = sender.send(("a",))
    assert not out.applied and out.attempts == 1 and "over budget" in out.error


def test_send_all_splits_at_the_batch_limit():
    clock = Clock()
    sender, purger = _sender(clock)
    outs = sender.send_all(["a", "b", "c", "d", "e", "f", "g"])
    assert [o.keys for o in outs] == [("a", "b", "c"), ("d", "e", "f"), ("g",)]
    assert all(o.applied for o in outs)


def test_chunk_keys_respects_count_and_bytes():
    assert list(chunk_keys(["k1", "k2", "k3"], 2)) == [("k1", "k2"), ("k3",)]
    # "aaaa bbbb" is 9 bytes: a third key would make 14 > 10
    assert list(chunk_keys(["aaaa", "bbbb", "cccc"], 100, max_bytes=10)) == [("aaaa", "bbbb"), ("cccc",)]
    assert list(chunk_keys([], 5)) == []


def test_parse_retry_after():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now_s=1445412480.0) == pytest.approx(10.0)
