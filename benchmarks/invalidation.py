"""Edge invalidation under a burst: 10,000 change notices over 10 s through pipelines/invalidation.

    python -m benchmarks.invalidation --out invalidation.json [--notices 10000 --seconds 10 --users 2000]

Loopback only: the Pub/Sub + Bigtable emulators (started here on free ports), the pipeline on the
BundleBasedDirectRunner in this process, a real Varnish (repo VCL) in front of the bench origin
(cliffhanger.fakes.origin: an answer per surrogate key whose version changes when its entity
changes), a PurgeRecorder in front of Varnish to count its purge requests, and the fake Fastly /
Cloudflare API (cliffhanger.fakes.cdn) enforcing their documented batch limits and a rate limit.

Each notice first bumps its entity at the origin, then is published. Measured:
* purge_requests: requests per target; per 1 s window, how many beyond ceil(keys / batch limit)
* lost_purges: (target, key) pairs whose last notice was never followed by an accepted purge nor a
  dead letter; also stale_at_end: keys whose answer through Varnish is still old once settled
* edge_fresh_p50_s / p95_s: notice publish -> the first GET through Varnish showing the new version,
  for a sample of notices whose key was cached just before
* chunk_hit_rate: the synthetic viewing day replayed through Varnish with next-up warming, by
  benchmarks/chunk_replay.py (its `--modes` via `--chunk-modes`; "" skips it); the full report of
  that replay is written next to FILE as FILE-chunks.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import secrets
import threading
import time
from collections import defaultdict

import numpy as np

from cliffhanger import edge_keys, resources
from cliffhanger.catalog_events import SERIES_UPDATE, CatalogEvent
from cliffhanger.fakes.cdn import CLOUDFLARE, FASTLY, FakeCdn, FakeCdnConfig
from cliffhanger.fakes.origin import BenchOrigin, edge_get, read_version
from cliffhanger.fakes.purge_recorder import PurgeRecorder
from cliffhanger.localstack import LocalStack, Varnish, settings_on_free_ports
from cliffhanger.notices import ChangeNotice
from cliffhanger.purge.clients import (
    CLOUDFLARE_MAX_TAGS,
    CLOUDFLARE_TOKEN_ENV,
    FASTLY_MAX_KEYS,
    FASTLY_TOKEN_ENV,
    VARNISH_MAX_KEYS,
)
from transforms.send_purges import FailedPurge

LIMITS = {"varnish": VARNISH_MAX_KEYS, FASTLY: FASTLY_MAX_KEYS, CLOUDFLARE: CLOUDFLARE_MAX_TAGS}
WINDOW_GAP_S = 0.5  # requests of one pipeline pane go out back to back; panes are ~1 s apart


class _Poller(threading.Thread):
    """Polls sampled keys through Varnish on one kept-alive connection until each shows its version."""

    def __init__(self, port: int):
        super().__init__(daemon=True, name="fresh-poller")
        self._port = port
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[int, float]] = {}  # key -> (version, publish time)
        self.latencies: list[float] = []
        self.stop_flag = False

    def watch(self, key: str, version: int, published_at: float) -> None:
        with self._lock:
            self._pending.setdefault(key, (version, published_at))

    def outstanding(self) -> int:
        with self._lock:
            return len(self._pending)

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=2)
        while not self.stop_flag:
            with self._lock:
                items = list(self._pending.items())
            for key, (version, t0) in items:
                try:
                    conn.request("GET", BenchOrigin.path(key))
                    got = read_version(conn.getresponse().read())
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=2)
                    continue
                if got >= version:
                    with self._lock:
                        self._pending.pop(key, None)
                        self.latencies.append(time.monotonic() - t0)
            time.sleep(0.01)
        conn.close()


def _messages(n: int, users: int, rng: random.Random, secret: bytes):
    """(topic, payload, surrogate key) for n notices: ~97 % users (Zipf-ish), 2 % series, 1 % catalog."""
    weights = [1 / (i + 1) ** 0.8 for i in range(users)]
    user_ids = rng.choices(range(1, users + 1), weights=weights, k=n)
    now = int(time.time() * 1000)
    for i, u in enumerate(user_ids):
        r = rng.random()
        if r < 0.01:
            sid = f"s{rng.randint(1, 50):04d}"
            event = CatalogEvent(SERIES_UPDATE, sid, now, i)
            yield resources.CATALOG_TOPIC, event.to_json(), edge_keys.series_key(sid)
        elif r < 0.03:
            sid = f"s{rng.randint(1, 50):04d}"
            notice = ChangeNotice("series", sid, "candidates", i, now)
            yield resources.FEATURE_CHANGES_TOPIC, notice.to_json(), edge_keys.series_key(sid)
        else:
            uid = f"u{u:06d}"
            notice = ChangeNotice("user", uid, "completed_episode", i, now)
            yield resources.FEATURE_CHANGES_TOPIC, notice.to_json(), edge_keys.user_key(uid, secret)


def _windows(requests: list[tuple[float, int, int]]) -> list[list[tuple[float, int, int]]]:
    """Group (time, keys, status) requests into panes separated by > WINDOW_GAP_S of silence."""
    panes: list[list[tuple[float, int, int]]] = []
    for req in sorted(requests):
        if panes and req[0] - panes[-1][-1][0] <= WINDOW_GAP_S:
            panes[-1].append(req)
        else:
            panes.append([req])
    return panes


def _request_stats(target: str, requests: list[tuple[float, int, int]]) -> dict:
    limit = LIMITS[target]
    panes = _windows(requests)
    statuses: dict[str, int] = defaultdict(int)
    for _, _, status in requests:
        statuses[str(status)] += 1
    ok = [r for r in requests if r[2] == 200]
    extra = sum(
        max(0, len(p) - math.ceil(sum(k for _, k, s in p if s == 200) / limit))
        for p in panes
        if any(r[2] == 200 for r in p)
    )
    return {
        "requests": len(requests),
        "by_status": dict(statuses),
        "windows": len(panes),
        "max_requests_in_a_window": max((len(p) for p in panes), default=0),
        "requests_beyond_minimum": extra,  # retries plus any split below the batch limit
        "batch_limit": limit,
        "max_keys_per_request": max((k for _, k, _ in requests), default=0),
        "mean_keys_per_accepted_request": round(sum(k for _, k, _ in ok) / len(ok), 1) if ok else 0,
    }


def run_benchmark(notices: int, seconds: float, users: int, sample_every: int, settle_s: float) -> dict:
    os.environ.setdefault(edge_keys.SECRET_ENV, secrets.token_hex(16))
    secret = edge_keys.secret_from_env()
    settings = settings_on_free_ports()
    stack = LocalStack(settings)
    stack.start(timeout_s=90)
    origin = BenchOrigin().start()
    cache = Varnish(f"127.0.0.1:{origin.port}")
    cdn_config = FakeCdnConfig(cloudflare_rate_per_s=10, cloudflare_burst=50)  # Cloudflare "business"
    cdn = FakeCdn(cdn_config).start()
    recorder = None
    result = None
    poller = None
    try:
        stack.provision()
        stack.apply_env()
        cache.start()
        recorder = PurgeRecorder(cache.listen_port).start()
        os.environ[FASTLY_TOKEN_ENV] = cdn_config.fastly_token
        os.environ[CLOUDFLARE_TOKEN_ENV] = cdn_config.cloudflare_token
        from google.cloud import pubsub_v1

        from pipelines import invalidation

        rng = random.Random(5)
        messages = list(_messages(notices, users, rng, secret))
        all_keys = sorted({key for _, _, key in messages})
        for key in all_keys:  # warm the edge: every answer cached at v0
            edge_get(cache.url, key)

        result = invalidation.run(
            [
                "--project", settings.project, "--runner", "DirectRunner",
                "--targets", "varnish,fastly,cloudflare", "--varnish_url", recorder.url,
                "--fastly_service_id", cdn_config.fastly_service_id, "--fastly_base_url", cdn.url,
                "--cloudflare_zone_id", cdn_config.cloudflare_zone_id, "--cloudflare_base_url", cdn.url,
                "--cloudflare_plan", "business",
            ]
        )  # fmt: skip
        time.sleep(3)  # let the runner start pulling
        publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=500, max_latency=0.005)
        )
        topics = {
            t: publisher.topic_path(settings.project, t)
            for t in (resources.FEATURE_CHANGES_TOPIC, resources.CATALOG_TOPIC)
        }
        poller = _Poller(cache.listen_port)
        poller.start()
        last_publish: dict[str, float] = {}
        futures = []
        ticks = max(1, int(seconds / 0.05))
        per_tick = math.ceil(len(messages) / ticks)
        start = time.monotonic()
        for tick in range(ticks):
            due = start + tick * 0.05
            if (pause := due - time.monotonic()) > 0:
                time.sleep(pause)
            for i in range(tick * per_tick, min(len(messages), (tick + 1) * per_tick)):
                topic, payload, key = messages[i]
                sampled = i % sample_every == 0
                if sampled:
                    edge_get(cache.url, key)  # cached right before the change: freshness is measurable
                version = origin.bump(key)
                t0 = time.monotonic()
                futures.append(publisher.publish(topics[topic], payload))
                last_publish[key] = t0
                if sampled:
                    poller.watch(key, version, t0)
        publish_s = time.monotonic() - start
        for f in futures:
            f.result(timeout=60)

        expected = {(t, k) for t in LIMITS for k in last_publish}
        dead: set[tuple[str, str]] = set()
        subscriber = pubsub_v1.SubscriberClient()
        dead_sub = subscriber.subscription_path(settings.project, resources.PURGE_DEAD_LETTER_SUBSCRIPTION)

        def accepted() -> set[tuple[str, str]]:
            done = {
                ("varnish", k)
                for p in recorder.snapshot()
                if p.status == 200
                for k in p.keys
                if p.at_s >= last_publish.get(k, 1e18)
            }
            with cdn._lock:  # noqa: SLF001 - a consistent copy of the double's record
                applied = list(cdn.applied)
            done |= {(p.vendor, k) for p in applied for k in p.keys if p.at_s >= last_publish.get(k, 1e18)}
            return done

        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline and (expected - accepted() - dead or poller.outstanding()):
            response = subscriber.pull(subscription=dead_sub, max_messages=1000, timeout=2.0)
            if response.received_messages:
                subscriber.acknowledge(subscription=dead_sub, ack_ids=[m.ack_id for m in response.received_messages])
            for m in response.received_messages:
                if m.message.attributes.get("stage") == "purge":
                    failed = FailedPurge.from_json(m.message.data)
                    dead |= {(failed.target, k) for k in failed.keys}
            time.sleep(0.2)
        lost = expected - accepted() - dead
        stale = sum(1 for k in last_publish if edge_get(cache.url, k)[1] < origin.version(k))
        latencies = np.array(poller.latencies)

        varnish_reqs = [(p.at_s, len(p.keys), p.status) for p in recorder.snapshot()]
        by_target = {"varnish": _request_stats("varnish", varnish_reqs)}
        for vendor in (FASTLY, CLOUDFLARE):  # the double times accepted requests; statuses for all
            accepted_reqs = [(p.at_s, len(p.keys), 200) for p in cdn.applied if p.vendor == vendor]
            stats = _request_stats(vendor, accepted_reqs)
            stats["requests"] = cdn.requests(vendor)
            stats["by_status"] = {
                str(s): cdn.requests(vendor, s) for s in sorted({s for v, s in cdn.statuses if v == vendor})
            }
            by_target[vendor] = stats
        return {
            "notices": len(messages),
            "publish_seconds": round(publish_s, 2),
            "distinct_keys": len(last_publish),
            "purge_requests": sum(t["requests"] for t in by_target.values()),
            "purge_requests_by_target": by_target,
            "lost_purges": len(lost),
            "dead_lettered_purges": len(dead),
            "stale_at_end": stale,
            "edge_fresh_p50_s": round(float(np.percentile(latencies, 50)), 3) if len(latencies) else None,
            "edge_fresh_p95_s": round(float(np.percentile(latencies, 95)), 3) if len(latencies) else None,
            "edge_fresh_max_s": round(float(latencies.max()), 3) if len(latencies) else None,
            "edge_fresh_samples": int(len(latencies)),
            "edge_fresh_unresolved": poller.outstanding(),
            "origin": "bench-origin",
            "edge": "varnish 7 + xkey, infra/varnish/default.vcl",
            "runner": "BundleBasedDirectRunner",
            "batch_window_s": 1,
            "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        }
    finally:
        if poller is not None:
            poller.stop_flag = True
        if result is not None:
            result.cancel()
        if recorder is not None:
            recorder.stop()
        cdn.stop()
        cache.stop()
        origin.stop()
        stack.stop()


def chunk_hit_rate(out: str, modes: str) -> dict:
    """The replayed viewing session's chunk hit rate (goal >= 0.9), from benchmarks/chunk_replay.py."""
    if not modes:
        return {"chunk_hit_rate": None, "chunk_hit_rate_note": "skipped (--chunk-modes '')"}
    from benchmarks import chunk_replay

    path = os.path.splitext(out)[0] + "-chunks.json"
    replay = chunk_replay.run(["--out", path, "--modes", modes])
    by_mode = {m: replay[m]["hit_rate"] for m in modes.split(",") if m in replay}
    return {
        "chunk_hit_rate": replay.get("hit_rate", next(iter(by_mode.values()), None)),
        "chunk_hit_rate_mode": replay.get("hit_rate_mode", next(iter(by_mode), None)),
        "chunk_hit_rate_by_mode": by_mode,
        "chunk_requests": replay["chunk_requests"],
        "goal_chunk_hit_rate": 0.9,
        "chunk_report": path,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--notices", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--sample_every", type=int, default=20, help="measure freshness for 1 notice in N")
    parser.add_argument("--settle_s", type=float, default=60.0, help="max wait for purges after the burst")
    parser.add_argument("--chunk-modes", default="cold,nextup_firsts", help="chunk replay modes; '' skips it")
    args = parser.parse_args(argv)
    report = run_benchmark(args.notices, args.seconds, args.users, args.sample_every, args.settle_s)
    report.update(chunk_hit_rate(args.out, args.chunk_modes))
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    by = report["purge_requests_by_target"]
    print(
        f"{report['notices']} notices in {report['publish_seconds']} s -> {report['distinct_keys']} keys; "
        f"purge requests {report['purge_requests']} "
        + ", ".join(f"{t} {s['requests']} ({s['requests_beyond_minimum']} beyond minimum)" for t, s in by.items())
        + f"; lost {report['lost_purges']}, dead-lettered {report['dead_lettered_purges']}, stale {report['stale_at_end']}; "
        f"edge freshness p50 {report['edge_fresh_p50_s']} s p95 {report['edge_fresh_p95_s']} s "
        f"({report['edge_fresh_samples']} samples); chunk hit rate {report['chunk_hit_rate']} "
        f"({report.get('chunk_hit_rate_mode', '-')}, goal >= 0.9)"
    )


if __name__ == "__main__":
    main()
