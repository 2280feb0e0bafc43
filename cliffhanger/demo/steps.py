"""The demo's steps, each calling the same entry points users call (run(argv), python -m serving)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from cliffhanger import edge_keys, resources
from cliffhanger.config import Settings
from cliffhanger.events import PlaybackEvent
from cliffhanger.localstack import LocalStack, free_port
from cliffhanger.probes import CompletionProber, completion_samples


@dataclasses.dataclass
class DemoWorld:
    dir: Path
    catalog_path: str
    generated: Any  # cliffhanger.synth.Generated
    summary: str

    def user(self, user_id: str):
        return next(u for u in self.generated.world.users if u.user_id == user_id)


def make_world(directory: Path, seed: int, users: int, series: int) -> DemoWorld:
    from cliffhanger.synth import FaultKnobs, generate, write_world

    knobs = FaultKnobs(duplicate_rate=0.01, out_of_order_rate=0.01, late_rate=0.005, malformed_rate=0.005)
    g = generate(seed, "small", knobs=knobs, n_users=users, n_series=series, days=1)
    write_world(directory, g.world, g.messages, knobs=g.knobs, days=g.days)
    n_eps = sum(len(s.episodes) for s in g.world.catalog)
    kinds: dict[str, int] = {}
    for m in g.messages:
        kinds[m.kind] = kinds.get(m.kind, 0) + 1
    faults = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()) if k != "event")
    summary = (
        f"{len(g.world.catalog)} series / {n_eps} episodes, {len(g.messages):,} messages ({faults}) -> {directory}"
    )
    return DemoWorld(directory, str(directory / "catalog.json"), g, summary)


@dataclasses.dataclass
class Bundle:
    version: str
    headline: dict[str, str]


def train_bundle(world_dir: Path, bundle_root: Path) -> Bundle:
    from pipelines import segment_candidates, train

    result = train.run(["--world", str(world_dir), "--bundle-root", str(bundle_root), "--preset", "small"])
    m = result.metrics
    headline = {
        "two-tower recall@20": f"{m['two_tower_test_recall@20']:.3f} (popularity {m['popularity_test_recall@20']:.3f})",
        "ranker AUC": f"{m['ranker_test_auc']:.3f} (prior {m['prior_test_auc']:.3f})",
        "gates": "passed" if result.published else "FAILED",
    }
    segment_candidates.run(["--bundle_root", str(bundle_root), "--catalog", str(world_dir / "catalog.json")])
    return Bundle(result.version, headline)


@dataclasses.dataclass
class Edge:
    api_url: str
    varnish: Any  # cliffhanger.localstack.Varnish


def _get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body): HTTP names are case-insensitive, and the API sends
    them lower-case while Varnish adds its own capitalized."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, _lower(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, _lower(err.headers), err.read()


def _lower(headers) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def start_serving(
    stack: LocalStack, running: contextlib.ExitStack, world: DemoWorld, bundle_root: Path, logs: Path
) -> Edge:
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(os.environ, CLIFFHANGER_BUNDLE_ROOT=str(bundle_root), CLIFFHANGER_CATALOG=world.catalog_path)
    log = open(logs / "serving.log", "w")  # noqa: SIM115 - closed by the exit stack
    running.callback(log.close)
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=log,
        stderr=log,
    )
    running.callback(proc.wait, 10)
    running.callback(proc.terminate)
    api = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the serving API exited with {proc.returncode}; see {logs / 'serving.log'}")
        with contextlib.suppress(OSError):
            if _get(api + "/readyz", timeout=1)[0] == 200:
                break
        time.sleep(0.3)
    else:
        raise RuntimeError(f"the serving API was not ready within 120 s; see {logs / 'serving.log'}")
    varnish = stack.start_varnish(backend=f"127.0.0.1:{port}")
    return Edge(api, varnish)


def start_pipelines(running: contextlib.ExitStack, world: DemoWorld, bundle_root: Path, edge: Edge) -> list[str]:
    from pipelines import candidates, invalidation, streaming_features

    project = Settings.from_env().project
    jobs = {
        "streaming_features": streaming_features.run(["--catalog", world.catalog_path, "--project", project]),
        "candidates": candidates.run(["--bundle_root", str(bundle_root), "--project", project]),
        "invalidation": invalidation.run(
            ["--varnish_url", edge.varnish.url, "--origin_url", edge.api_url, "--project", project]
        ),
    }
    for result in jobs.values():
        running.callback(result.cancel)
    return list(jobs)


@dataclasses.dataclass
class Published:
    payloads: list[bytes]
    on_time: list[bool]  # not late / malformed: the pipeline will apply it
    published_ms: dict[str, int]
    ended: float
    summary: str


def publish(world: DemoWorld, n: int, rate: float) -> Published:
    from cliffhanger.synth import LogRecord
    from cliffhanger.synth.publish import publish_log

    messages = world.generated.messages[:n]
    records = [LogRecord(m.arrival_ms, m.payload) for m in messages]
    pub = publish_log(records, resources.EVENTS_TOPIC, rate=rate, record_ids=True, progress=True)
    summary = f"{pub.count:,} sent in {pub.elapsed_s:.1f} s ({pub.valid:,} valid incl. {pub.duplicates} duplicates, {pub.malformed} malformed)"
    on_time = [m.kind not in ("late", "malformed") for m in messages]
    return Published([r.payload for r in records], on_time, pub.published_ms or {}, time.time(), summary)


def _store():
    from serving.feature_store import FeatureStore

    s = Settings.from_env()
    return FeatureStore.open(s.project, s.bigtable_instance, resources.FEATURES_TABLE)


def wait_until_landed(published: Published, timeout_s: float = 120) -> float:
    payloads = [p if ok else b"" for p, ok in zip(published.payloads, published.on_time, strict=True)]
    samples = completion_samples(payloads, every=max(1, len(payloads) // 2000))[-200:]
    prober = CompletionProber(_store(), [s[:3] for s in samples], lambda: len(published.payloads), 0.05)
    prober.start()
    prober.join(timeout=timeout_s)
    prober.stop.set()
    if len(prober.seen) < len(samples):
        print(f"   warning: {len(samples) - len(prober.seen)} of {len(samples)} sampled completions not visible yet")
    return max(prober.seen.values(), default=published.ended) - published.ended


def read_rows(users: list[str], series: list[str], cohorts: list[tuple[str, str]]) -> dict:
    from transforms import rowkeys

    keys = {("u", u): rowkeys.user_key(u) for u in users}
    keys |= {("s", s): rowkeys.series_key(s) for s in series}
    keys |= {("c", c): rowkeys.cohort_key(*c) for c in cohorts}
    rows = _store().read(keys.values())
    return {name: rows.get(key) for name, key in keys.items()}


def dead_letters(published: Published) -> str:
    from google.cloud import pubsub_v1

    sub = pubsub_v1.SubscriberClient()
    path = sub.subscription_path(Settings.from_env().project, resources.EVENTS_DEAD_LETTER_SUBSCRIPTION)
    reasons: dict[str, int] = {}
    while True:
        response = sub.pull(subscription=path, max_messages=1000, timeout=5, return_immediately=True)
        if not response.received_messages:
            break
        sub.acknowledge(subscription=path, ack_ids=[m.ack_id for m in response.received_messages])
        for m in response.received_messages:
            stage = m.message.attributes.get("stage", "?")
            reason = m.message.attributes.get("reason", "?").split(":")[0]
            key = f"{stage}/{m.message.attributes.get('field') or reason}"
            reasons[key] = reasons.get(key, 0) + 1
    total = sum(reasons.values())
    top = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])[:6])
    return f"{total} messages, each with its reason ({top})"


def _rec_url(edge: Edge, world: DemoWorld, user_id: str) -> str:
    u = world.user(user_id)
    return f"{edge.varnish.url}/v1/users/{user_id}/recommendations?n=8&country={u.country}&device={u.device}"


def _fetch(url: str) -> tuple[dict, dict[str, str], float]:
    t0 = time.perf_counter()
    status, headers, body = _get(url)
    elapsed = (time.perf_counter() - t0) * 1000
    if status != 200:
        raise RuntimeError(f"GET {url} -> {status}: {body[:200]!r}")
    return json.loads(body), headers, elapsed


def show_edge(edge: Edge, user_id: str, world: DemoWorld) -> None:
    url = _rec_url(edge, world, user_id)
    print(f"   GET {url.replace(edge.varnish.url, '<varnish>')}")
    for attempt in ("first", "again"):
        body, headers, ms = _fetch(url)
        print(
            f"   {attempt}: {headers.get('x-cache', '?')} in {ms:.1f} ms, rung {body.get('rung')}, bundle {body.get('bundle_version')}"
        )
    for item in body.get("items", [])[:5]:
        print(f"      {item['episode_id']}  score {item['score']:.3f}  {item['reason']}")
    key = edge_keys.user_key(user_id, edge_keys.secret_from_env())
    purged = edge.varnish.purge(key)
    body, headers, ms = _fetch(url)
    print(f"   purge xkey {key} ({purged} object(s)) -> next request: {headers.get('x-cache', '?')} in {ms:.1f} ms")


def close_the_loop(edge: Edge, user_id: str, world: DemoWorld) -> None:
    from cliffhanger.synth.publish import make_publisher

    url = _rec_url(edge, world, user_id)
    body, _, _ = _fetch(url)
    target = next((i for i in body["items"] if i["episode_id"]), None)
    if target is None:
        print("   (no recommendation to watch)")
        return
    ep = world.generated.world.catalog.episode(target["episode_id"])
    u = world.user(user_id)
    now = int(time.time() * 1000)
    common = dict(
        user_id=user_id,
        series_id=ep.series_id,
        episode_id=ep.episode_id,
        episode_number=ep.episode_number,
        duration_ms=ep.duration_ms,
        device=u.device,
        country=u.country,
        session_id=f"{user_id}-demo",
        app_version=u.app_version,
    )
    events = [
        PlaybackEvent(
            event_id=f"demo-{now}-play",
            event_type="play_start",
            position_ms=0,
            event_time_ms=now - ep.duration_ms,
            **common,
        ),
        PlaybackEvent(
            event_id=f"demo-{now}-done", event_type="complete", position_ms=ep.duration_ms, event_time_ms=now, **common
        ),
    ]
    print(f"   {user_id} was offered {ep.episode_id} first; they watch it to the end now")
    publisher = make_publisher()
    topic = publisher.topic_path(Settings.from_env().project, resources.EVENTS_TOPIC)
    t0 = time.perf_counter()
    for e in events:
        publisher.publish(topic, e.to_json()).result(timeout=10)
    deadline = t0 + 30
    while time.perf_counter() < deadline:
        body, headers, _ = _fetch(url)
        if all(i["episode_id"] != ep.episode_id for i in body["items"]):
            took = time.perf_counter() - t0
            first = body["items"][0] if body["items"] else {}
            print(
                f"   {took:.2f} s after the event: the answer through Varnish ({headers.get('x-cache', '?')}) no longer offers it;"
            )
            print(f"   now first: {first.get('episode_id')} ({first.get('reason')}), rung {body.get('rung')}")
            return
        time.sleep(0.05)
    print("   the answer still offered the finished episode after 30 s (see var/logs)")


def drop_episode(edge: Edge, user_id: str, world: DemoWorld) -> None:
    """A new episode of a series the viewer finished goes live: catalog.json gains it, a `series:drop`
    goes to the catalog topic; serving applies it, the invalidation job purges the series key, and the
    viewer's episode-end answer through Varnish leads with the new episode."""
    from cliffhanger.catalog import Catalog, Episode, episode_id_for
    from cliffhanger.catalog_events import SERIES_DROP, CatalogEvent
    from cliffhanger.synth.publish import make_publisher
    from serving.live_catalog import drop_payload

    catalog = Catalog.load(world.catalog_path)
    u = world.user(user_id)
    series = max(
        catalog,
        key=lambda s: len(s.episodes) if catalog.is_licensed(s.series_id, u.country, int(time.time() * 1000)) else -1,
    )
    last = series.episodes[-1]
    now = int(time.time() * 1000)
    new = Episode(
        episode_id_for(series.series_id, last.episode_number + 1),
        series.series_id,
        last.episode_number + 1,
        last.duration_ms,
        now,
    )
    updated = Catalog(
        [
            dataclasses.replace(s, episodes=s.episodes + (new,)) if s.series_id == series.series_id else s
            for s in catalog
        ]
    )
    tmp = Path(world.catalog_path).with_suffix(".json.tmp")
    updated.save(tmp)
    os.replace(tmp, world.catalog_path)  # readers see the old file or the new one
    url = (
        f"{edge.varnish.url}/v1/users/{user_id}/recommendations?context=episode_end&series_id={series.series_id}"
        f"&episode_id={last.episode_id}&n=5&country={u.country}&device={u.device}"
    )
    body, headers, _ = _fetch(url)
    first = body["items"][0]["episode_id"] if body["items"] else None
    print(
        f"   {user_id} just finished {last.episode_id}, the last episode of {series.series_id}; first offer now: {first} ({headers.get('x-cache')})"
    )
    event = CatalogEvent(SERIES_DROP, series.series_id, now, now, episode_id=new.episode_id)
    publisher = make_publisher()
    t0 = time.perf_counter()
    publisher.publish(
        publisher.topic_path(Settings.from_env().project, resources.CATALOG_TOPIC), drop_payload(event, new)
    ).result(timeout=10)
    print(f"   series:drop {new.episode_id} published")
    while time.perf_counter() - t0 < 30:
        body, headers, _ = _fetch(url)
        if body["items"] and body["items"][0]["episode_id"] == new.episode_id:
            print(
                f"   {time.perf_counter() - t0:.2f} s later, through Varnish ({headers.get('x-cache')}, "
                f"{headers.get('cache-control')}): first offer {new.episode_id} ({body['items'][0]['reason']})"
            )
            return
        time.sleep(0.05)
    print("   the new episode did not reach the answer within 30 s (see var/logs)")
