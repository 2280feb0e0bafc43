"""Playlists and chunks through Varnish (repo VCL): the playlist is per user with a short TTL and
preload hints; chunk URLs carry no user data, and one cached chunk serves every viewer whatever their
cookies, credentials or query string; purging answers never flushes media; 404s are not cached."""

from __future__ import annotations

import re

import httpx
import pytest

from cliffhanger import edge_keys
from serving import chunks, hls
from tests.serving.conftest import SECRET, start_edge_stack, stop_edge_stack

pytestmark = [pytest.mark.emulators, pytest.mark.slow]
CHUNK = re.compile(r"^/chunks/[A-Za-z0-9]+/(480p|720p|1080p)/v\d+/(init\.mp4|\d+\.m4s)$")


@pytest.fixture(scope="module")
def stack(local_stack, world, bundle_root, catalog_path, varnish, tmp_path_factory):
    facts, server, edge = start_edge_stack(
        local_stack, world, bundle_root, catalog_path, varnish, str(tmp_path_factory.mktemp("chunks"))
    )
    yield facts, server, edge
    stop_edge_stack(server)


def _user(facts) -> tuple[str, str, str]:
    uid = sorted(facts["lists"])[0]
    return uid, facts["users"][uid].country, facts["users"][uid].device


def _uris(text: str) -> list[str]:
    maps = [ln.split('URI="')[1].rstrip('"') for ln in text.splitlines() if ln.startswith("#EXT-X-MAP:")]
    return maps + [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


def test_playlist_through_the_edge(stack) -> None:
    facts, server, edge = stack
    uid, country, device = _user(facts)
    with httpx.Client(base_url=edge.url, timeout=5) as client:
        r = client.get(f"/v1/users/{uid}/next.m3u8", params={"country": country, "device": device})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/vnd.apple.mpegurl")
        assert r.headers["cache-control"] == "public, max-age=2, stale-while-revalidate=10"
        assert r.headers["x-cache"] == "MISS" and "xkey" not in r.headers
        again = client.get(f"/v1/users/{uid}/next.m3u8", params={"device": device, "country": country})
        assert again.headers["x-cache"] == "HIT" and again.content == r.content
        # the same episodes, in the same order, as the JSON answer for 3 items
        answer = httpx.get(
            f"{server.url}/v1/users/{uid}/recommendations", params={"n": 3, "country": country, "device": device}
        ).json()
    text = r.text
    maps = [ln for ln in text.splitlines() if ln.startswith("#EXT-X-MAP:")]
    listed = [m.split("/")[2] for m in maps]
    assert listed == [i["episode_id"] for i in answer["items"]] and 1 <= len(listed) <= 3
    assert text.count("#EXT-X-DISCONTINUITY") == len(listed) - 1
    uris = _uris(text)
    assert all(CHUNK.match(u) for u in uris), uris[:5]
    assert uid not in text and edge_keys.user_hash(uid, SECRET.encode()) not in text  # nothing personal in URLs
    links = [part.strip() for part in r.headers["link"].split(",")]
    base = f"/chunks/{listed[0]}/{hls.DEFAULT_RENDITION[device]}/v1"
    assert links == [f"<{base}/{name}>; rel=preload; as=video" for name in ("init.mp4", "0.m4s", "1.m4s")]
    assert uris[0] == f"{base}/init.mp4" and f"{base}/0.m4s" in uris


def test_one_cached_chunk_serves_every_viewer(stack) -> None:
    facts, server, edge = stack
    uid, country, device = _user(facts)
    playlist = httpx.get(f"{edge.url}/v1/users/{uid}/next.m3u8", params={"country": country, "device": device})
    path = [u for u in _uris(playlist.text) if u.endswith("/3.m4s")][0]
    episode_id, rendition = path.split("/")[2:4]
    with httpx.Client(base_url=edge.url, timeout=5) as client:
        first = client.get(path + "?user=a", headers={"Cookie": "session=a", "Authorization": "Bearer a"})
        assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
        assert first.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert first.content == chunks.sample_bytes(episode_id, rendition, 1, 3)
        for headers, query in (({"Cookie": "session=b"}, "?user=b"), ({"Authorization": "Bearer b"}, ""), ({}, "?x=1")):
            other = client.get(path + query, headers=headers)
            assert other.headers["x-cache"] == "HIT" and other.content == first.content
        assert client.head(path).headers["x-cache"] == "HIT"
        # purging answers (a new bundle: `all`; a user; the series) never flushes media
        assert edge.purge(edge_keys.ALL, edge_keys.user_key(uid, SECRET.encode()), f"s-{episode_id[:5]}") >= 1
        assert client.get(path).headers["x-cache"] == "HIT"
        assert (
            client.get(f"/v1/users/{uid}/next.m3u8", params={"country": country, "device": device}).headers["x-cache"]
            == "MISS"
        )
        for _ in range(2):  # a URL no chunk backs: 404, never cached
            missing = client.get(f"/chunks/{episode_id}/{rendition}/v1/99999.m4s")
            assert missing.status_code == 404 and missing.headers["x-cache"] == "MISS"
        assert client.post(path).status_code == 405
    served = [
        ln for ln in httpx.get(f"{server.url}/metrics").text.splitlines() if ln.startswith("cliffhanger_chunks_total")
    ]
    assert any('result="served"' in ln and ln.endswith(" 1.0") for ln in served), served  # one origin fetch
