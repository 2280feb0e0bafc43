"""The API end to end against the Bigtable emulator: full path, rules, caching headers, ladder rungs
for unknown users / missing lists / ranker failure, 400s naming the field, admin auth, metrics."""

from __future__ import annotations

import pytest

from cliffhanger import edge_keys
from serving.app import create_app
from serving.settings import ServingSettings
from tests.serving.conftest import ADMIN_TOKEN, NOW_MS, SECRET, seed, serving_env

pytestmark = pytest.mark.emulators


@pytest.fixture(scope="module")
def seeded(local_stack, world, bundle_root):
    return seed(local_stack, world, bundle_root)


@pytest.fixture
def app_factory(local_stack, bundle_root, catalog_path):
    def make(**extra):
        settings = ServingSettings.from_env(serving_env(local_stack, bundle_root, catalog_path, **extra))
        return create_app(settings, clock=lambda: NOW_MS)

    return make


@pytest.fixture
def server(seeded, app_factory, serve):
    return serve(app_factory())


def get(server, user: str, **params):
    import httpx

    return httpx.get(f"{server.url}/v1/users/{user}/recommendations", params=params, timeout=5)


def _listed_user(seeded) -> str:
    return sorted(seeded["lists"])[0]


def test_full_path_answer_rules_and_headers(server, seeded, world) -> None:
    catalog = world.world.catalog
    uid = _listed_user(seeded)
    user = seeded["users"][uid]
    r = get(server, uid, n=10, country=user.country, device=user.device)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rung"] == "personalized" and body["ranking"] == "onnx" and body["bundle_version"] == "v1"
    assert body["fallbacks"] == [] and body["freshness"]["served_stale"] is False
    assert body["freshness"]["feature_age_ms"] >= 0
    items = body["items"]
    # n is honoured as far as the catalog allows: a narrow ranked pool is topped up from the segment list
    # and the catalog; each series is entered at one episode, so at most one item per playable series
    playable = [
        s
        for s in catalog
        if catalog.is_licensed(s.series_id, user.country, NOW_MS)
        and any(e.release_time_ms <= NOW_MS for e in s.episodes)
    ]
    assert len(items) == min(10, len(playable)) and all(i["reason"] and isinstance(i["score"], float) for i in items)
    ids = [i["episode_id"] for i in items]
    assert len(ids) == len(set(ids))
    done = {e.episode_id for e in seeded["events"] if e.user_id == uid and e.event_type == "complete"}
    assert not set(ids) & done
    per_series: dict[str, int] = {}
    for i in items:
        per_series[i["series_id"]] = per_series.get(i["series_id"], 0) + 1
        assert catalog.is_licensed(i["series_id"], user.country, NOW_MS)
    assert max(per_series.values()) <= 2
    # caching headers: keyed user hash, series keys, never the raw user id
    assert r.headers["cache-control"] == "public, max-age=5, stale-while-revalidate=30"
    keys = r.headers["xkey"].split()
    assert keys == r.headers["surrogate-key"].split()
    assert edge_keys.user_key(uid, SECRET.encode()) in keys and "all" in keys
    assert {f"s-{i['series_id']}" for i in items} <= set(keys)
    assert uid not in r.headers["xkey"] and uid not in r.text
    assert r.headers["x-serving-cache"] == "miss"
    again = get(server, uid, n=10, country=user.country, device=user.device)
    assert again.headers["x-serving-cache"] == "hit" and again.json() == body


def test_episode_end_puts_the_next_episode_first(server, seeded, world) -> None:
    catalog = world.world.catalog
    uid = _listed_user(seeded)
    user = seeded["users"][uid]
    done = {e.episode_id for e in seeded["events"] if e.user_id == uid and e.event_type == "complete"}
    series = next(s for s in catalog if s.is_licensed(user.country, NOW_MS) and len(s.episodes) > 3)
    finished = next(e for e in series.episodes[:-1] if catalog.next_episode(e.episode_id).episode_id not in done)
    nxt = catalog.next_episode(finished.episode_id)
    r = get(server, uid, context="episode_end", episode_id=finished.episode_id, series_id=series.series_id,
            country=user.country, device=user.device, n=5)  # fmt: skip
    assert r.status_code == 200, r.text
    first = r.json()["items"][0]
    assert (first["episode_id"], first["reason"]) == (nxt.episode_id, "next_episode")
    assert f"e-{finished.episode_id}" in r.headers["xkey"].split()


def test_unknown_user_gets_a_segment_or_popularity_answer(server, seeded) -> None:
    user = next(iter(seeded["users"].values()))
    r = get(server, "never-seen-user", country=user.country, device=user.device)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rung"] in ("segment", "popularity") and body["items"]
    assert "unknown_user" in body["fallbacks"]
    assert r.headers["cache-control"] == "public, max-age=1, stale-while-revalidate=5"
    r = get(server, "never-seen-user", country="ZZ", device="tv")  # no segment list for ZZ#tv
    assert r.json()["rung"] == "popularity"


def test_missing_list_is_retrieved_on_demand(server, seeded, local_stack) -> None:
    from google.cloud import bigtable

    from transforms import rowkeys

    uid = sorted(seeded["lists"])[1]
    s = local_stack.settings
    table = bigtable.Client(project=s.project, admin=False).instance(s.bigtable_instance).table("features")
    row = table.direct_row(rowkeys.user_key(uid))
    row.delete_cell("cand", b"two_tower")
    row.commit()
    user = seeded["users"][uid]
    body = get(server, uid, country=user.country, device=user.device).json()
    assert body["rung"] == "on_demand_retrieval" and body["items"], body


def test_ranker_failure_serves_retrieval_order(server, seeded) -> None:
    ranker = server.app.state.serving.holder.current.ranker

    def broken(_features):
        raise RuntimeError("onnxruntime exploded")

    ranker.score = broken
    try:
        uid = sorted(seeded["lists"])[2]
        user = seeded["users"][uid]
        r = get(server, uid, country=user.country, device=user.device)
    finally:
        del ranker.score
    body = r.json()
    assert r.status_code == 200 and body["ranking"] == "retrieval_order" and "ranker_error" in body["fallbacks"]
    assert body["items"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"n": "0"}, "n"),
        ({"n": "abc"}, "n"),
        ({"n": "51"}, "n"),
        ({"country": "usa"}, "country"),
        ({"device": "fridge"}, "device"),
        ({"context": "bogus"}, "context"),
        ({"context": "episode_end"}, "episode_id"),
        ({"context": "episode_end", "episode_id": "nope"}, "episode_id"),
    ],
)
def test_bad_parameters_are_400_naming_the_field(server, params, field) -> None:
    r = get(server, "u000001", **params)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field and r.json()["error"]
    assert r.headers["cache-control"] == "no-store"


def test_admin_needs_the_token(server) -> None:
    import httpx

    url = server.url + "/admin/reload"
    assert httpx.post(url).status_code == 401
    assert httpx.post(url, headers={"Authorization": "Bearer wrong"}).status_code == 403
    ok = httpx.post(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert ok.status_code == 200 and ok.json()["version"] == "v1"


def test_admin_purge_drops_in_process_answers_by_key(server, seeded) -> None:
    import httpx

    uid = sorted(seeded["lists"])[3]
    user = seeded["users"][uid]
    get(server, uid, country=user.country, device=user.device)
    assert get(server, uid, country=user.country, device=user.device).headers["x-serving-cache"] == "hit"
    key = edge_keys.user_key(uid, SECRET.encode())
    r = httpx.post(
        server.url + "/admin/purge", json={"keys": [key]}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert r.status_code == 200 and r.json()["purged"] == 1
    assert get(server, uid, country=user.country, device=user.device).headers["x-serving-cache"] == "miss"


def test_admin_disabled_without_a_token(seeded, app_factory, serve) -> None:
    import httpx

    server = serve(app_factory(CLIFFHANGER_ADMIN_TOKEN=""))
    r = httpx.post(server.url + "/admin/reload", headers={"Authorization": "Bearer x"})
    assert r.status_code == 503 and "CLIFFHANGER_ADMIN_TOKEN" in r.json()["error"]


def test_metrics_docs_and_probes(server, seeded) -> None:
    import httpx

    uid = _listed_user(seeded)
    get(server, uid)
    assert httpx.get(server.url + "/healthz").status_code == 200
    assert httpx.get(server.url + "/readyz").json()["bundle_version"] == "v1"
    text = httpx.get(server.url + "/metrics").text
    for needle in (
        'cliffhanger_stage_seconds_bucket{le="0.005",stage="rerank"}',
        'cliffhanger_stage_seconds_count{stage="feature_read"}',
        "cliffhanger_cache_hit_ratio",
        "cliffhanger_cache_lookups_total",
        'cliffhanger_bundle_info{version="v1"} 1.0',
        'cliffhanger_gc_pause_seconds_count{generation="2"}',  # the server watches its collector
    ):
        assert needle in text, needle
    spec = httpx.get(server.url + "/openapi.json").json()
    params = spec["paths"]["/v1/users/{user_id}/recommendations"]["get"]["parameters"]
    assert {p["name"] for p in params} == {"user_id", "context", "series_id", "episode_id", "n", "country", "device"}
    ids = [op["operationId"] for path in spec["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids)), ids  # client generators refuse duplicate operation ids
    assert "get" in spec["paths"]["/chunks/{episode_id}/{rendition}/v{version}/{name}"]


def test_not_ready_without_a_bundle(local_stack, catalog_path, tmp_path, serve) -> None:
    import httpx

    from tests.serving.conftest import ThreadServer

    settings = ServingSettings.from_env(serving_env(local_stack, str(tmp_path), catalog_path))
    server = ThreadServer(create_app(settings, clock=lambda: NOW_MS))
    server.thread.start()
    try:
        for _ in range(100):
            try:
                r = httpx.get(server.url + "/readyz", timeout=1)
                break
            except httpx.HTTPError:
                import time

                time.sleep(0.05)
        assert r.status_code == 503 and r.json()["ready"] is False
        assert httpx.get(server.url + "/healthz").status_code == 200
        assert httpx.get(server.url + "/v1/users/u1/recommendations").status_code == 503
    finally:
        server.stop()


def test_the_documented_route_answers_as_the_fast_path_does(server, seeded) -> None:
    """A GET takes serving/fast_path.py; a HEAD goes through the FastAPI route. Same answer, same headers."""
    import httpx

    uid = _listed_user(seeded)
    user = seeded["users"][uid]
    url = f"{server.url}/v1/users/{uid}/recommendations"
    params = {"n": 5, "country": user.country, "device": user.device}
    got = httpx.get(url, params=params, timeout=5)
    head = httpx.head(url, params=params, timeout=5)  # the cached answer, via FastAPI
    assert got.status_code == head.status_code == 200
    for name in ("cache-control", "xkey", "surrogate-key", "x-rung", "x-bundle-version", "content-type"):
        assert head.headers[name] == got.headers[name], name
    assert int(head.headers["content-length"]) == len(got.content) and head.headers["x-serving-cache"] == "hit"
    bad_get, bad_head = httpx.get(url, params={"n": "abc"}), httpx.head(url, params={"n": "abc"})
    assert bad_get.status_code == bad_head.status_code == 400 and bad_get.json()["field"] == "n"
    assert bad_get.headers["cache-control"] == bad_head.headers["cache-control"] == "no-store"
