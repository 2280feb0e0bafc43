"""SendPurges: PurgeBatch -> purge requests at its target (batch limit, rate limit, retries);
batches that keep failing -> FailedPurge on the dead-letter output. Never dropped: every key of every
batch is counted either `<target>_keys_applied` or `<target>_keys_dead_lettered`.

Clients are built in `setup()` from picklable TargetSpecs (tokens read from the environment there).
The token bucket lives in the DoFn instance, so it paces one worker; the API's 429 + Retry-After
(honoured by the sender) keeps several workers honest.
"""

from __future__ import annotations

import dataclasses
import json
import random

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metricbase import Counter

from cliffhanger.purge.sender import PurgeSender, RetryPolicy, SendOutcome, TokenBucket
from cliffhanger.purge.targets import TargetSpec, build_purger
from transforms.parse import DEAD_LETTER
from transforms.purge_batches import NAMESPACE, PurgeBatch

APPLIED = "applied"


@dataclasses.dataclass(frozen=True, slots=True)
class FailedPurge:
    """A purge that kept failing: what, where, how often we tried and the last error."""

    target: str
    keys: tuple[str, ...]
    reason: str
    attempts: int
    status: int | None = None

    @classmethod
    def from_outcome(cls, outcome: SendOutcome) -> FailedPurge:
        return cls(outcome.target, outcome.keys, outcome.error, outcome.attempts, outcome.status)

    def to_pubsub(self):
        from apache_beam.io.gcp.pubsub import PubsubMessage

        payload = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        attrs = {
            "stage": "purge",
            "target": self.target,
            "reason": self.reason[:1024],
            "attempts": str(self.attempts),
            "keys": str(len(self.keys)),
        }
        return PubsubMessage(payload, attrs)

    @classmethod
    def from_json(cls, payload: bytes) -> FailedPurge:
        obj = json.loads(payload)
        return cls(obj["target"], tuple(obj["keys"]), obj["reason"], obj["attempts"], obj.get("status"))


class _SendPurgesFn(beam.DoFn):
    def __init__(self, targets: tuple[TargetSpec, ...], policy: RetryPolicy):
        self._targets = targets
        self._policy = policy
        self._counters: dict[str, Counter] = {}
        self._senders: dict[str, PurgeSender] = {}

    def _count(self, target: str, what: str, n: int = 1) -> None:
        name = f"{target}_{what}"
        if name not in self._counters:
            self._counters[name] = Metrics.counter(NAMESPACE, name)
        self._counters[name].inc(n)

    def setup(self):
        rng = random.Random()
        self._senders = {
            t.name: PurgeSender(build_purger(t), self._policy, TokenBucket(t.rate_per_s, t.burst), rng=rng)
            for t in self._targets
        }

    def process(self, batch: PurgeBatch):
        sender = self._senders.get(batch.target)
        if sender is None:
            self._count(batch.target, "keys_dead_lettered", len(batch.keys))
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER, FailedPurge(batch.target, batch.keys, "no purge client for this target", 0)
            )
            return
        batches = sender.batches(batch.keys)
        # The fewest requests this window could take: how close we are to "one per target per window".
        self._count(batch.target, "min_requests", len(batches))
        for keys in batches:
            outcome = sender.send(keys)
            self._count(batch.target, "requests", outcome.attempts)
            self._count(batch.target, "retries", outcome.attempts - 1)
            if outcome.applied:
                self._count(batch.target, "keys_applied", len(keys))
                yield outcome
            else:
                self._count(batch.target, "keys_dead_lettered", len(keys))
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, FailedPurge.from_outcome(outcome))

    def teardown(self):
        for sender in self._senders.values():
            sender.close()


class SendPurges(beam.PTransform):
    """PurgeBatch -> SendOutcome of applied requests (tag `applied`) and FailedPurge (tag `dead_letter`)."""

    def __init__(self, targets: tuple[TargetSpec, ...], policy: RetryPolicy | None = None):
        super().__init__()
        self._targets = tuple(targets)
        self._policy = policy or RetryPolicy()

    def expand(self, batches):
        return batches | beam.ParDo(_SendPurgesFn(self._targets, self._policy)).with_outputs(DEAD_LETTER, main=APPLIED)
