"""Varnish (repo VCL) in front of the app: a repeated answer is a HIT, a purge by the user's surrogate
key makes the next one a MISS; errors are not cached; cookies and parameter order do not split the cache."""

from __future__ import annotations

import httpx
import pytest

from cliffhanger import edge_keys
from serving.app import create_app
from serving.settings import ServingSettings
from tests.serving.conftest import NOW_MS, SECRET, seed, serving_env

pytestmark = [pytest.mark.emulators, pytest.mark.slow]


def test_edge_hit_and_purge_by_key(local_stack, world, bundle_root, catalog_path, serve, varnish) -> None:
    facts = seed(local_stack, world, bundle_root)
    settings = ServingSettings.from_env(serving_env(local_stack, bundle_root, catalog_path))
    server = serve(create_app(settings, clock=lambda: NOW_MS))
    edge = varnish(backend_port=server.port)
    uid = sorted(facts["lists"])[0]
    user = facts["users"][uid]
    path = f"/v1/users/{uid}/recommendations?n=7&country={user.country}&device={user.device}"
    reordered = f"/v1/users/{uid}/recommendations?device={user.device}&country={user.country}&n=7"

    with httpx.Client(base_url=edge.url, timeout=5) as client:
        first = client.get(path)
        assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
        assert first.json()["rung"] == "personalized"
        assert "xkey" not in first.headers and "surrogate-key" not in first.headers  # internal tags
        second = client.get(reordered, headers={"Cookie": "session=abc"})
        assert second.headers["x-cache"] == "HIT" and second.json() == first.json()

        purged = edge.purge(edge_keys.user_key(uid, SECRET.encode()))
        assert purged >= 1
        assert client.get(path).headers["x-cache"] == "MISS"
        assert client.get(path).headers["x-cache"] == "HIT"
        assert edge.purge(f"s-{first.json()['items'][0]['series_id']}") >= 1  # by series, too
        assert client.get(path).headers["x-cache"] == "MISS"

        for _ in range(2):
            bad = client.get(f"/v1/users/{uid}/recommendations?n=0")
            assert bad.status_code == 400 and bad.headers["x-cache"] == "MISS"
        assert client.get("/readyz").headers["x-cache"] == "MISS"
        assert client.get("/readyz").headers["x-cache"] == "MISS"
