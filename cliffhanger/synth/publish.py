"""Replay an event log onto a Pub/Sub topic (real or emulator via PUBSUB_EMULATOR_HOST), "now".

Pacing: message i is sent at wall time `start + i / rate`, or with `rate=None` at
`start + (arrival_i - arrival_0) / speed` (the log's own spacing, sped up).

Time rebasing: a recorded log is from another day, so each valid event's event_time is rewritten to
`send_ms - (arrival_ms - event_time_ms)`: its lateness relative to arrival is preserved exactly, so
late events are still late and out-of-order events still out of order. The rewrite is computed once
per event_id, so a duplicate is re-sent with the same bytes as its first copy. Malformed payloads
are sent unchanged. Every message carries attribute `published_ms` (wall clock ms when sent), which
benchmarks use to measure freshness.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable

from cliffhanger.events import EventError, parse_event
from cliffhanger.synth.log import LogRecord, read_log
from cliffhanger.synth.sessions import serializer_for

log = logging.getLogger(__name__)
PROGRESS_THRESHOLD = 5000  # show a progress bar on a TTY above this many messages


@dataclasses.dataclass
class PublishSummary:
    count: int
    valid: int
    malformed: int
    duplicates: int  # valid messages whose event_id was already sent
    elapsed_s: float
    achieved_rate: float
    published_ms: dict[str, int] | None = None  # event_id -> published_ms of its first copy


class Rebaser:
    """Rewrites event_time relative to a new arrival time; once per event_id."""

    def __init__(self) -> None:
        self._by_id: dict[str, bytes] = {}
        self._serialize: Callable | None = None

    def rewrite(self, record: LogRecord, send_ms: int) -> tuple[bytes, str | None, bool]:
        """-> (payload to send, event_id or None if malformed, whether this event_id was seen before)."""
        try:
            event = parse_event(record.payload)
        except EventError:
            return record.payload, None, False
        cached = self._by_id.get(event.event_id)
        if cached is not None:
            return cached, event.event_id, True
        lateness = record.arrival_ms - event.event_time_ms
        rebased = dataclasses.replace(event, event_time_ms=send_ms - lateness)
        if self._serialize is None:
            self._serialize = serializer_for(rebased)
        data = self._serialize(rebased)
        self._by_id[event.event_id] = data
        return data, event.event_id, False


def make_publisher(max_latency_s: float = 0.01):
    """A PublisherClient batched for >= 2,000 msgs/s with ~10 ms added latency, blocking when 20k are in flight."""
    from google.cloud import pubsub_v1

    batch = pubsub_v1.types.BatchSettings(max_messages=1000, max_bytes=4 * 1024 * 1024, max_latency=max_latency_s)
    flow = pubsub_v1.types.PublishFlowControl(
        message_limit=20_000,
        byte_limit=64 * 1024 * 1024,
        limit_exceeded_behavior=pubsub_v1.types.LimitExceededBehavior.BLOCK,
    )
    return pubsub_v1.PublisherClient(
        batch_settings=batch, publisher_options=pubsub_v1.types.PublisherOptions(flow_control=flow)
    )


def publish_log(
    source: str | os.PathLike | Iterable[LogRecord],
    topic: str,
    project: str | None = None,
    *,
    rate: float | None = 500.0,
    speed: float = 1.0,
    limit: int | None = None,
    publisher=None,
    progress: bool | None = None,
    record_ids: bool = False,
    attributes: dict[str, str] | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> PublishSummary:
    """Publish a log (path to events.jsonl, or LogRecords in arrival order) to `topic`.

    topic: a short name (resolved in `project`, default from CLIFFHANGER_PROJECT) or `projects/p/topics/t`.
    rate: messages per second; None follows the log's arrival spacing divided by `speed`.
    """
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be positive or None, got {rate}")
    if speed <= 0:
        raise ValueError(f"speed must be positive, got {speed}")
    total = None
    if isinstance(source, str | os.PathLike):
        if progress or (progress is None and sys.stdout.isatty()):
            with open(source, "rb") as f:
                total = sum(1 for _ in f)
        records: Iterable[LogRecord] = read_log(source)
    else:
        records = source
        total = len(source) if hasattr(source, "__len__") else None
    if limit is not None:
        total = min(total, limit) if total is not None else limit
    show = progress if progress is not None else (sys.stdout.isatty() and (total or 0) > PROGRESS_THRESHOLD)

    own_publisher = publisher is None
    publisher = publisher or make_publisher()
    if not topic.startswith("projects/"):
        if project is None:
            from cliffhanger.config import Settings

            project = Settings.from_env().project
        topic = publisher.topic_path(project, topic)

    errors: list[BaseException] = []
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="msg", desc=f"publish {topic.rsplit('/', 1)[-1]}", mininterval=0.5)
    rebaser = Rebaser()
    sent_ms: dict[str, int] | None = {} if record_ids else None
    count = valid = malformed = duplicates = 0
    pending = []
    first_arrival = None
    start = clock()
    try:
        for i, rec in enumerate(records):
            if limit is not None and i >= limit:
                break
            if first_arrival is None:
                first_arrival = rec.arrival_ms
            target = start + (i / rate if rate is not None else (rec.arrival_ms - first_arrival) / 1000.0 / speed)
            ahead = target - clock()
            if ahead > 0.002:
                sleep(ahead)
            now_ms = int(clock() * 1000)
            data, event_id, seen = rebaser.rewrite(rec, now_ms)
            fut = publisher.publish(topic, data, published_ms=str(now_ms), **(attributes or {}))
            pending.append(fut)
            count += 1
            if event_id is None:
                malformed += 1
            else:
                valid += 1
                duplicates += seen
                if sent_ms is not None and not seen:
                    sent_ms[event_id] = now_ms
            if bar is not None:
                bar.update(1)
            if len(pending) >= 10_000:
                pending = _reap(pending, errors, wait=False)
                if errors:
                    break  # the topic is failing (missing, unreachable): stop rather than fail 100k more
        _reap(pending, errors, wait=True)
    finally:
        if bar is not None:
            bar.close()
        if own_publisher:
            publisher.stop()
    elapsed = clock() - start
    if errors:
        raise RuntimeError(f"{len(errors)} of {count} messages failed to publish to {topic}; first: {errors[0]!r}")
    return PublishSummary(
        count, valid, malformed, duplicates, elapsed, count / elapsed if elapsed > 0 else 0.0, sent_ms
    )


def _reap(pending: list, errors: list[BaseException], *, wait: bool) -> list:
    """Collect failures of finished publish futures (all of them if wait); -> those still pending."""
    still = []
    for fut in pending:
        if wait or fut.done():
            exc = fut.exception(timeout=120)
            if exc is not None:
                errors.append(exc)
        else:
            still.append(fut)
    return still
