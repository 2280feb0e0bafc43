from __future__ import annotations

import collections
import dataclasses
import time
import uuid
from concurrent.futures import Future

import pytest

from cliffhanger.events import EventError, parse_event
from cliffhanger.synth import Generated, LogRecord, write_log
from cliffhanger.synth.publish import Rebaser, publish_log


class FakeClock:
    def __init__(self, t: float = 1_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


class FakePublisher:
    def __init__(self):
        self.sent: list[tuple[str, bytes, dict]] = []

    def topic_path(self, project: str, topic: str) -> str:
        return f"projects/{project}/topics/{topic}"

    def publish(self, topic: str, data: bytes, **attrs: str) -> Future:
        self.sent.append((topic, data, attrs))
        fut: Future = Future()
        fut.set_result(str(len(self.sent)))
        return fut


def _sample(g: Generated, n: int = 300) -> list[LogRecord]:
    """The first n messages plus a few of each fault from later in the stream, in arrival order."""
    picked = list(g.messages[:n])
    for kind in ("duplicate", "late", "out_of_order", "malformed"):
        picked += [m for m in g.messages[n:] if m.kind == kind][:5]
    # a duplicate's original must be present too
    ids = {m.event_id for m in picked if m.kind != "duplicate"}
    picked += [m for m in g.messages[n:] if m.kind != "duplicate" and m.event_id not in ids and m.kind != "malformed"
               and any(d.event_id == m.event_id for d in picked if d.kind == "duplicate")]  # fmt: skip
    picked.sort(key=lambda m: m.arrival_ms)
    return [LogRecord(m.arrival_ms, m.payload) for m in picked]


def test_rebaser_preserves_lateness_and_duplicate_bytes():
    ev = parse_event(
        b'{"schema_version":1,"event_id":"e-1","user_id":"u1","series_id":"s1","episode_id":"s1e001",'
        b'"episode_number":1,"event_type":"complete","position_ms":60000,"duration_ms":60000,'
        b'"event_time":"2026-11-20T10:00:00.000Z","device":"ios","country":"US","session_id":"u1-1","app_version":"5"}'
    )
    payload = ev.to_json()
    rb = Rebaser()
    late_by = 1_234_567
    data, eid, seen = rb.rewrite(LogRecord(ev.event_time_ms + late_by, payload), send_ms=2_000_000_000_000)
    assert (eid, seen) == ("e-1", False)
    rebased = parse_event(data)
    assert rebased.event_time_ms == 2_000_000_000_000 - late_by
    assert rebased == dataclasses.replace(ev, event_time_ms=2_000_000_000_000 - late_by)  # nothing else changes
    again, _, seen = rb.rewrite(LogRecord(ev.event_time_ms + late_by + 5000, payload), send_ms=2_000_000_009_000)
    assert seen and again == data  # a duplicate is re-sent with the first copy's bytes
    junk = b'{"schema_version":1'
    assert rb.rewrite(LogRecord(1, junk), send_ms=5) == (junk, None, False)


def test_paced_at_rate_with_rebased_times(small: Generated):
    records = _sample(small)
    clock, pub = FakeClock(), FakePublisher()
    s = publish_log(records, "events", "p", rate=100.0, publisher=pub, clock=clock, sleep=clock.sleep, record_ids=True)
    assert s.count == len(pub.sent) == len(records)
    assert s.malformed == sum(1 for r in records if _bad(r.payload)) > 0
    assert s.duplicates > 0
    assert {t for t, _, _ in pub.sent} == {"projects/p/topics/events"}
    sent_ms = [int(a["published_ms"]) for _, _, a in pub.sent]
    for i, ms in enumerate(sent_ms):
        assert abs(ms - (1_000_000 + i * 10)) <= 3  # message i at start + i / rate
    assert s.elapsed_s == pytest.approx((len(records) - 1) / 100.0, abs=0.01)


def test_realtime_follows_log_spacing(small: Generated):
    records = [LogRecord(m.arrival_ms, m.payload) for m in small.messages[:200]]
    clock, pub = FakeClock(), FakePublisher()
    publish_log(records, "events", "p", rate=None, speed=10.0, publisher=pub, clock=clock, sleep=clock.sleep)
    for r, (_, _, attrs) in zip(records, pub.sent, strict=True):
        expected = 1_000_000 + (r.arrival_ms - records[0].arrival_ms) / 10.0
        assert abs(int(attrs["published_ms"]) - expected) <= 3


def test_publish_from_a_log_file_with_limit(tmp_path, small: Generated):
    path = tmp_path / "events.jsonl"
    write_log(path, small.messages)
    pub = FakePublisher()
    s = publish_log(path, "projects/x/topics/y", rate=1e6, limit=50, publisher=pub, progress=False)
    assert s.count == 50 and pub.sent[0][0] == "projects/x/topics/y"


def _bad(payload: bytes) -> bool:
    try:
        parse_event(payload)
    except EventError:
        return True
    return False


@pytest.mark.emulators
def test_publish_to_the_emulator_and_pull_back(local_stack, small: Generated):
    from google.cloud import pubsub_v1

    project = local_stack.settings.project
    name = f"synth-test-{uuid.uuid4().hex[:8]}"  # our own topic: the shared `events` subscription stays clean
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic, sub = publisher.topic_path(project, name), subscriber.subscription_path(project, name)
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=sub, topic=topic, ack_deadline_seconds=60)
    try:
        records = _sample(small)
        summary = publish_log(records, name, project, rate=2000.0, record_ids=True)
        assert summary.count == len(records)

        received = []
        deadline = time.monotonic() + 60
        while len(received) < len(records) and time.monotonic() < deadline:
            resp = subscriber.pull(subscription=sub, max_messages=1000, timeout=10)
            if resp.received_messages:
                subscriber.acknowledge(subscription=sub, ack_ids=[m.ack_id for m in resp.received_messages])
            received += [m.message for m in resp.received_messages]
        assert len(received) == len(records)

        sent_malformed = collections.Counter(r.payload for r in records if _bad(r.payload))
        got_malformed = collections.Counter(m.data for m in received if _bad(m.data))
        assert got_malformed == sent_malformed  # malformed payloads go out unchanged

        original = {}  # event_id -> lateness of its first copy in the log
        copies_sent = collections.Counter()
        for r in records:
            if not _bad(r.payload):
                e = parse_event(r.payload)
                original.setdefault(e.event_id, r.arrival_ms - e.event_time_ms)
                copies_sent[e.event_id] += 1
        by_id = collections.defaultdict(list)
        for m in received:
            if not _bad(m.data):
                by_id[parse_event(m.data).event_id].append(m)
        assert {k: len(v) for k, v in by_id.items()} == dict(copies_sent)
        for eid, msgs in by_id.items():
            assert len({m.data for m in msgs}) == 1  # duplicates are byte-identical after rebasing
            first_ms = summary.published_ms[eid]
            assert first_ms in {int(m.attributes["published_ms"]) for m in msgs}
            assert first_ms - parse_event(msgs[0].data).event_time_ms == original[eid]  # lateness preserved
        for m in received:
            publish_time_ms = int(m.publish_time.timestamp() * 1000)
            assert abs(publish_time_ms - int(m.attributes["published_ms"])) < 10_000
        assert max(copies_sent.values()) > 1 and any(v > 600_000 for v in original.values())
    finally:
        subscriber.delete_subscription(subscription=sub)
        publisher.delete_topic(topic=topic)
