"""Send purges politely: split into the target's batch limit, pace with a token bucket, retry
429 / 5xx / connection errors with exponential backoff and jitter (honouring Retry-After), and report
each batch as applied or failed; the caller dead-letters failures. Nothing is dropped silently.

Clock, sleep and random source are injected so tests run without waiting.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Sequence

from cliffhanger.purge.clients import PurgeError, Purger, chunk_keys


class TokenBucket:
    """`rate_per_s` tokens per second, at most `burst` saved up; `acquire` blocks until one is free."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"token bucket needs rate_per_s > 0 and burst >= 1, got {rate_per_s}, {burst}")
        self.rate_per_s, self.burst = rate_per_s, burst
        self._clock, self._sleep = clock, sleep
        self._tokens = float(burst)
        self._last = clock()
        self._not_before = 0.0

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
        self._last = now
        return now

    def acquire(self) -> float:
        """Take one token, sleeping as needed; returns the seconds waited."""
        now = self._refill()
        wait = max(0.0, self._not_before - now)
        if self._tokens < 1:
            wait = max(wait, (1 - self._tokens) / self.rate_per_s)
        if wait > 0:
            self._sleep(wait)
            self._refill()
        # The token we waited for is ours; clamping avoids busy-looping on float rounding.
        self._tokens = max(0.0, self._tokens - 1)
        return wait

    def hold(self, seconds: float) -> None:
        """The server said "not before `seconds` from now" (Retry-After): nobody sends until then."""
        self._not_before = max(self._not_before, self._clock() + seconds)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_backoff_s: float = 0.1
    max_backoff_s: float = 4.0
    max_retry_after_s: float = 60.0  # a server asking for a longer pause: give up, dead-letter

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Equal jitter after the `attempt`-th failure (1-based): half fixed, half random."""
        ceiling = min(self.max_backoff_s, self.base_backoff_s * 2 ** (attempt - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclasses.dataclass(frozen=True)
class SendOutcome:
    target: str
    keys: tuple[str, ...]
    applied: bool
    attempts: int
    error: str = ""  # the last error; '' when applied
    status: int | None = None  # the last HTTP status; None for a connection error or success


class PurgeSender:
    """One target's purger + rate limit + retry policy."""

    def __init__(
        self,
        purger: Purger,
        policy: RetryPolicy,
        bucket: TokenBucket,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.purger, self.policy, self.bucket = purger, policy, bucket
        self._sleep = sleep
        self._rng = rng or random.Random()

    @property
    def target(self) -> str:
        return self.purger.name

    def batches(self, keys: Sequence[str]) -> list[tuple[str, ...]]:
        return list(chunk_keys(keys, self.purger.max_keys, self.purger.max_header_bytes))

    def send(self, keys: tuple[str, ...]) -> SendOutcome:
        """One batch (within the limit) until applied, a permanent error, or attempts run out."""
        err: PurgeError | None = None
        for attempt in range(1, self.policy.max_attempts + 1):
            self.bucket.acquire()
            try:
                self.purger.purge(keys)
                return SendOutcome(self.target, keys, True, attempt)
            except PurgeError as exc:
                err = exc
            if not err.retryable or attempt == self.policy.max_attempts:
                break
            pause = self.policy.backoff_s(attempt, self._rng)
            if err.retry_after_s is not None:
                if err.retry_after_s > self.policy.max_retry_after_s:
                    return self._failed(keys, attempt, err, f" (Retry-After {err.retry_after_s:.0f}s is over budget)")
                self.bucket.hold(err.retry_after_s)  # the bucket waits it out before the next send
                pause = min(pause, self.policy.base_backoff_s)
            self._sleep(pause)
        return self._failed(keys, attempt, err)

    def _failed(self, keys: tuple[str, ...], attempts: int, err: PurgeError, note: str = "") -> SendOutcome:
        return SendOutcome(self.target, keys, False, attempts, f"{err}{note}"[:500], err.status)

    def send_all(self, keys: Sequence[str]) -> list[SendOutcome]:
        return [self.send(batch) for batch in self.batches(keys)]

    def close(self) -> None:
        self.purger.close()
