"""Episode drops (issue 5, section 2): catalog events move serving's catalog forward with per-series
versions; drop windows and popularity set TTLs (serving/ttl_policy.py); end to end, a series:drop
published to the real Pub/Sub emulator reaches serving, and after a purge of the series key the next
request through Varnish lists the new episode; a viewer waiting for the episode, whose answer that
purge misses, is found by the candidates job's drop step and their answer refreshed."""

from __future__ import annotations

import dataclasses
import math
import time

import httpx
import pytest

from cliffhanger import resources
from cliffhanger.catalog import Catalog, Episode, Series
from cliffhanger.catalog_events import LICENSING_CHANGE, SERIES_DROP, SERIES_UPDATE, CatalogEvent, CatalogEventError
from serving.live_catalog import APPLIED, STALE, UNRESOLVED, CatalogChange, LiveCatalog, drop_payload, parse_change
from serving.ttl_policy import RateMeter, edge_ttl
from tests.pubsub_helpers import publish
from tests.serving.conftest import NOW_MS, start_edge_stack, stop_edge_stack

H = 3_600_000


def _series(n: int, licensing=None) -> Series:
    eps = tuple(Episode(f"s1e{i:03d}", "s1", i, 60_000, i * H) for i in range(1, n + 1))
    return Series("s1", "t", ("romance",), 0.5, eps, licensing or {"US": (0, None)})


def _drop(number: int, version: int, with_episode: bool = True, at: int = 100 * H) -> CatalogChange:
    event = CatalogEvent(SERIES_DROP, "s1", at, version, episode_id=f"s1e{number:03d}")
    ep = Episode(f"s1e{number:03d}", "s1", number, 60_000, at)
    return parse_change(drop_payload(event, ep) if with_episode else event.to_json())


def test_parse_change_reads_the_optional_episode() -> None:
    change = _drop(4, 7)
    assert change.event.version == 7 and change.episode == Episode("s1e004", "s1", 4, 60_000, 100 * H)
    assert _drop(4, 7, with_episode=False).episode is None
    with pytest.raises(CatalogEventError) as err:
        parse_change(b'{"type":"series:drop","series_id":"s1","episode_id":"x","event_time_ms":1,"version":1,'
                     b'"episode":{"episode_number":1,"duration_ms":0,"release_time_ms":1}}')  # fmt: skip
    assert err.value.field == "episode.duration_ms"


def test_drops_apply_once_in_version_order_whatever_the_delivery() -> None:
    live = LiveCatalog(Catalog([_series(3)]))
    seen: list[int] = []
    live.on_change(lambda cat, change: seen.append(change.event.version))
    # e005 (v2) before e004 (v1): it cannot be appended yet and is not recorded as applied
    assert live.apply(_drop(5, 2)) == UNRESOLVED
    assert live.apply(_drop(4, 1)) == APPLIED
    assert live.apply(_drop(4, 1)) == STALE  # at-least-once: a duplicate changes nothing
    assert live.apply(_drop(5, 2)) == APPLIED  # the redelivery applies
    assert live.apply(_drop(4, 1)) == STALE  # older than what was applied
    assert seen == [1, 2]
    cat = live.current
    assert [e.episode_id for e in cat.series("s1").episodes][-2:] == ["s1e004", "s1e005"]
    assert cat.next_episode("s1e003").episode_id == "s1e004"


def test_events_without_details_reread_the_catalog_file() -> None:
    file_catalog = [Catalog([_series(4)])]
    live = LiveCatalog(Catalog([_series(3)]), reload=lambda: file_catalog[0])
    assert live.apply(_drop(4, 1, with_episode=False)) == APPLIED
    assert len(live.current.series("s1").episodes) == 4
    assert live.apply(_drop(9, 2, with_episode=False)) == UNRESOLVED  # the file does not have it either
    assert not live.current.is_licensed("s1", "BR", 0)
    file_catalog[0] = Catalog([_series(4, {"US": (0, None), "BR": (0, None)})])  # licensing edited
    lic = CatalogEvent(LICENSING_CHANGE, "s1", 0, 3, countries=("BR",))
    assert live.apply(CatalogChange(lic)) == APPLIED and live.current.is_licensed("s1", "BR", 0)
    update = CatalogChange(CatalogEvent(SERIES_UPDATE, "s1", 0, 1))
    assert LiveCatalog(Catalog([_series(3)])).apply(update) == UNRESOLVED  # no file to re-read


def test_drop_windows() -> None:
    live = LiveCatalog(Catalog([_series(3)]), window_ms=600_000)
    release = 3 * H  # s1e003's release time: scheduled drops are windows without any event
    assert live.dropping(["s1"], release - 599_000) and live.dropping(["s1"], release + 599_000)
    assert not live.dropping(["s1"], release + 601_000) and not live.dropping(["s2"], release)
    assert not live.dropping([], release)
    assert live.apply(_drop(4, 1, at=50 * H)) == APPLIED  # an event-announced drop opens a window too
    assert live.dropping(["s2", "s1"], 50 * H + 300_000) and not live.dropping(["s1"], 50 * H + 700_000)


def test_a_drop_trends_at_once_in_every_cohort() -> None:
    from serving.blend import trending_items, with_new_releases
    from tests.factories import catalog

    two = Series("s2", "t", ("romance",), 0.5, (Episode("s2e001", "s2", 1, 60_000, 0),), {"US": (0, None)})
    live = LiveCatalog(Catalog([_series(3), two]), window_ms=600_000)
    assert live.recent_drops(3 * H - 1) == []  # e002 (2 H) is long past, e003 not released yet: scheduled
    assert live.recent_drops(3 * H - 700_000) == []  # releases trend from their release time, not before
    assert live.recent_drops(3 * H + 1_000) == ["s1"]  # released a second ago
    assert live.recent_drops(3 * H + 601_000) == []  # the window closed
    assert live.apply(_drop(4, 1, at=50 * H)) == APPLIED
    assert live.recent_drops(50 * H + 1_000) == ["s1"]  # an event-announced drop trends too
    # the cohort's counts do not know the drop yet: it goes first, the rest keep their order
    cohort = [["s0002", 9.0], ["s0001", 4.0], ["s0003", 1.0]]
    assert with_new_releases(cohort, ["s0003"]) == [["s0003", 10.0], ["s0002", 9.0], ["s0001", 4.0]]
    assert with_new_releases(cohort, []) == cohort and with_new_releases([], ["s0001"]) == [["s0001", 1.0]]
    # a viewer who finished the episode before the drop enters the series at the new episode
    cw = {"s0001": {"episode_id": "s0001e002", "episode_number": 2, "completed": True, "updated_ms": 1}}
    items = trending_items(with_new_releases(cohort, ["s0001"]), cw, catalog())
    assert items[0] == ("s0001e003", 10.0)


def test_ttl_policy_formula() -> None:
    def ttl(rate: float) -> float:
        return edge_ttl(base_s=5, swr_s=30, rate_per_s=rate, hot_max_s=30).max_age_s

    assert ttl(0) == 5 and math.isclose(ttl(0.2), 10)  # rate * base = 1 -> 2 x base
    assert math.isclose(ttl(1.0), 5 * (1 + math.log2(6))) and ttl(10) == 30  # capped
    assert ttl(0.01) < ttl(0.2) < ttl(1.0) < ttl(5.0)  # monotone in popularity
    assert (
        edge_ttl(base_s=5, swr_s=30, rate_per_s=1.0).cache_control() == "public, max-age=17, stale-while-revalidate=30"
    )
    dropping = edge_ttl(base_s=5, swr_s=30, rate_per_s=10, dropping=True, drop_ttl_s=1)
    assert dropping.cache_control() == "public, max-age=1, stale-while-revalidate=1"  # overrides popularity
    degraded = edge_ttl(base_s=5, swr_s=30, dropping=True, degraded=True, degraded_ttl_s=1)
    assert degraded.cache_control() == "public, max-age=1, stale-while-revalidate=5"


def test_rate_meter_reads_a_steady_rate() -> None:
    now = [0.0]
    meter = RateMeter(tau_s=10, clock=lambda: now[0])
    for _ in range(600):  # 2 requests/s for 300 s (30 time constants)
        meter.hit("k")
        now[0] += 0.5
    assert 1.8 < meter.rate("k") < 2.2 and meter.rate("other") == 0.0
    now[0] += 100  # 10 time constants of silence
    assert meter.rate("k") < 0.001


@pytest.mark.emulators
@pytest.mark.slow
def test_series_drop_reaches_the_edge(local_stack, world, bundle_root, varnish, tmp_path) -> None:
    """User finished episode k of a series whose catalog ends at k; a drop of k+1 arrives through
    Pub/Sub; after the series purge the next request through Varnish leads with the new episode."""
    full = world.world.catalog
    facts_events = [m.event for m in world.events]
    users = {u.user_id: u for u in world.world.users}
    last_done: dict[tuple[str, str], Episode] = {}
    for e in facts_events:
        if e.event_type == "complete":
            ep = full.episode(e.episode_id)
            best = last_done.get((e.user_id, e.series_id))
            if best is None or ep.episode_number > best.episode_number:
                last_done[(e.user_id, e.series_id)] = ep
    (uid, sid), done = next(
        (k, ep)
        for k, ep in sorted(last_done.items())
        if full.is_licensed(k[1], users[k[0]].country, NOW_MS) and full.next_episode(ep.episode_id) is not None
    )
    new_ep = full.next_episode(done.episode_id)
    cut = dataclasses.replace(full.series(sid), episodes=full.series(sid).episodes[: done.episode_number])
    catalog_path = tmp_path / "catalog.json"
    Catalog([cut if s.series_id == sid else s for s in full]).save(catalog_path)

    facts, server, edge = start_edge_stack(
        local_stack, world, bundle_root, str(catalog_path), varnish, str(tmp_path / "chunks")
    )
    try:
        user = users[uid]
        params = {
            "context": "episode_end",
            "episode_id": done.episode_id,
            "country": user.country,
            "device": user.device,
        }
        rec_path = f"/v1/users/{uid}/recommendations"
        pl_params = {"episode_id": done.episode_id, "country": user.country, "device": user.device}
        with httpx.Client(base_url=edge.url, timeout=5) as client:
            before = client.get(rec_path, params=params)
            assert before.status_code == 200 and before.headers["x-cache"] == "MISS"
            assert new_ep.episode_id not in [i["episode_id"] for i in before.json()["items"]]
            assert before.headers["cache-control"].startswith("public, max-age=5")  # no drop window yet
            assert client.get(rec_path, params=params).headers["x-cache"] == "HIT"
            playlist = client.get(f"/v1/users/{uid}/next.m3u8", params=pl_params)
            assert playlist.status_code == 200 and new_ep.episode_id not in playlist.text

            version = int(time.time() * 1000)  # the catalog's revision of the series
            event = CatalogEvent(SERIES_DROP, sid, NOW_MS, version, episode_id=new_ep.episode_id)
            publish(local_stack.settings.project, resources.CATALOG_TOPIC, [drop_payload(event, new_ep)])
            live = server.app.state.serving.live
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and new_ep.episode_id not in {
                e.episode_id for e in live.current.series(sid).episodes
            }:
                time.sleep(0.05)
            assert live.versions.get(sid) == version, "serving did not apply the drop from Pub/Sub"

            assert edge.purge(f"s-{sid}") >= 2  # the answer and the playlist (the invalidation pipeline's job)
            after = client.get(rec_path, params=params)
            assert after.headers["x-cache"] == "MISS"
            first = after.json()["items"][0]
            assert first["episode_id"] == new_ep.episode_id and first["reason"] == "next_episode"
            assert after.headers["cache-control"] == "public, max-age=1, stale-while-revalidate=1"  # drop window
            playlist = client.get(f"/v1/users/{uid}/next.m3u8", params=pl_params)
            assert playlist.headers["x-cache"] == "MISS"
            assert f'#EXT-X-MAP:URI="/chunks/{new_ep.episode_id}/' in playlist.text.splitlines()[6]
            assert playlist.headers["cache-control"] == "public, max-age=1, stale-while-revalidate=1"
            chunk = client.get(f"/chunks/{new_ep.episode_id}/720p/v1/0.m4s")  # the new episode has media
            assert chunk.status_code == 200
    finally:
        stop_edge_stack(server)


def _waiting_pairs(world, at_ms: int) -> list[tuple[str, str, Episode]]:
    """(user, series, episode) where the user's latest playback in the series completed `episode`, the
    series has a later episode and is licensed in the user's country: drop that later one, and the user
    is a viewer waiting for it."""
    from transforms.features import _TYPE_RANK

    full = world.world.catalog
    users = {u.user_id: u for u in world.world.users}
    latest: dict[tuple[str, str], tuple] = {}
    for m in world.events:
        e = m.event
        if e.event_type in ("play_start", "progress", "complete", "skip"):
            key = (e.user_id, e.series_id)
            cand = (e.event_time_ms, _TYPE_RANK[e.event_type], e.event_id, e.event_type, e.episode_id)
            latest[key] = max(latest.get(key, cand), cand)
    out = []
    for (uid, sid), (*_, kind, episode_id) in sorted(latest.items()):
        later = full.next_episode(episode_id) is not None
        if kind == "complete" and later and full.is_licensed(sid, users[uid].country, at_ms):
            out.append((uid, sid, full.episode(episode_id)))
    return out


@pytest.mark.emulators
@pytest.mark.slow
def test_a_drop_refreshes_the_waiting_viewers_answers_the_series_purge_misses(
    local_stack, world, bundle_root, varnish, tmp_path
) -> None:
    """A viewer who finished the last episode of a series has no episode of it in their home answer, so
    the drop's s-<series> purge misses that answer. The candidates job's drop step finds them (the real
    Bigtable scan) and its `new_episode` notice purges u-<user> (here applied to the origin's cache and
    Varnish directly, as the invalidation pipeline does); the next home request has the new episode."""
    from cliffhanger.purge.keys import notice_keys
    from tests.serving.conftest import ADMIN_TOKEN, SECRET
    from transforms.bigtable_sink import BigtableTarget
    from transforms.candidates_drop import Drop, new_episode_notice, waiting_viewers

    full = world.world.catalog
    users = {u.user_id: u for u in world.world.users}
    uid, sid, done = _waiting_pairs(world, NOW_MS)[0]
    new_ep = full.next_episode(done.episode_id)
    cut = dataclasses.replace(full.series(sid), episodes=full.series(sid).episodes[: done.episode_number])
    catalog_path = tmp_path / "catalog.json"
    Catalog([cut if s.series_id == sid else s for s in full]).save(catalog_path)

    _, server, edge = start_edge_stack(local_stack, world, bundle_root, str(catalog_path), varnish, str(tmp_path / "c"))
    try:
        user = users[uid]
        params = {"context": "home", "country": user.country, "device": user.device, "n": 50}
        path = f"/v1/users/{uid}/recommendations"
        with httpx.Client(base_url=edge.url, timeout=5) as client:
            before = client.get(path, params=params)
            assert before.status_code == 200 and sid not in {i["series_id"] for i in before.json()["items"]}
            assert client.get(path, params=params).headers["x-cache"] == "HIT"

            version = int(time.time() * 1000)
            event = CatalogEvent(SERIES_DROP, sid, NOW_MS, version, episode_id=new_ep.episode_id)
            publish(local_stack.settings.project, resources.CATALOG_TOPIC, [drop_payload(event, new_ep)])
            live = server.app.state.serving.live
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and live.versions.get(sid) != version:
                time.sleep(0.05)
            assert live.versions.get(sid) == version, "serving did not apply the drop from Pub/Sub"
            assert edge.purge(f"s-{sid}") == 0  # the series purge does not reach this viewer's answer
            assert client.get(path, params=params).headers["x-cache"] == "HIT"

            s = local_stack.settings
            table = BigtableTarget(s.project, s.bigtable_instance, "features").open_table()
            drop = Drop(sid, new_ep.episode_id, new_ep.episode_number, version, NOW_MS)
            waiting = sorted(waiting_viewers(table, drop))
            assert uid in waiting
            keys = sorted({k for w in waiting for k in notice_keys(new_episode_notice(w, drop), SECRET.encode())})
            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}  # origin first, then the edge (--origin_url)
            assert httpx.post(f"{server.url}/admin/purge", json={"keys": keys}, headers=auth).json()["purged"] >= 1
            assert sum(edge.purge(k) for k in keys) >= 1

            after = client.get(path, params=params)
            assert after.headers["x-cache"] == "MISS"
            items = after.json()["items"]
            assert new_ep.episode_id in [i["episode_id"] for i in items], items
    finally:
        stop_edge_stack(server)
