"""Varnish in front of several serving replicas: render_vcl copies the backend once per replica behind
a `directors` director; with one backend the VCL is the committed one with only host/port changed.
Real varnishd in front of recording backends: the hash director keeps a user on one replica and spreads
users over all of them, round_robin alternates, and a replica that stops answering /readyz gets no more
requests (no error reaches the client)."""

from __future__ import annotations

import difflib
import http.client
import http.server
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from cliffhanger.localstack import LocalStackError, Varnish
from cliffhanger.localstack.varnish import DEFAULT_VCL, ROUND_ROBIN, parse_backends, render_vcl

VARNISHD = shutil.which("varnishd") or "/usr/sbin/varnishd"
needs_varnish = pytest.mark.skipif(not Path(VARNISHD).exists(), reason="varnishd not installed")


class _Replica(http.server.ThreadingHTTPServer):
    """Answers every GET 200 (uncacheable, so each request reaches a replica) and records its paths."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.ready = True

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(inner) -> None:  # noqa: N805 - the handler's self; `self` is the server
                ok = self.ready or inner.path != "/readyz"
                if inner.path != "/readyz":
                    self.paths.append(inner.path)
                inner.send_response(200 if ok else 503)
                inner.send_header("Cache-Control", "no-store")
                inner.send_header("Content-Length", "2")
                inner.end_headers()
                inner.wfile.write(b"ok")

            def log_message(inner, *args) -> None:  # noqa: N805
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def backend(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def replicas():
    started = [_Replica() for _ in range(3)]
    yield started
    for r in started:
        r.shutdown()
        r.server_close()


def _get(cache: Varnish, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", cache.listen_port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _who(replicas: list[_Replica], path: str) -> int:
    (index,) = [i for i, r in enumerate(replicas) if path in r.paths]
    return index


def test_one_backend_changes_only_the_host_and_port_lines() -> None:
    text = DEFAULT_VCL.read_text()
    out = render_vcl(text, [("10.0.0.7", 9000)])
    changed = sorted(d for d in difflib.ndiff(text.splitlines(), out.splitlines()) if d[:1] in "+-")
    assert changed == [
        '+     .host = "10.0.0.7";  # @backend-host',
        '+     .port = "9000";  # @backend-port',
        '-     .host = "127.0.0.1";  # @backend-host',
        '-     .port = "8080";  # @backend-port',
    ]


@needs_varnish
@pytest.mark.parametrize("director", ["hash", "round_robin"])
def test_several_backends_compile_with_one_probed_declaration_each(tmp_path: Path, director: str) -> None:
    out = render_vcl(DEFAULT_VCL.read_text(), [("127.0.0.1", 8001), ("127.0.0.1", 8002), ("10.0.0.3", 8003)], director)
    assert out.count(".probe = replica_ready;") == 3 and "backend default {" not in out
    assert f"new replicas = directors.{director}();" in out and out.count("replicas.add_backend(") == 3
    assert out.index("req.backend_hint") < out.index('if (req.url == "/.varnish-health")')  # before the VCL's own recv
    path = tmp_path / "replicas.vcl"
    path.write_text(out)
    compiled = subprocess.run(
        [VARNISHD, "-j", "none", "-n", str(tmp_path / "n"), "-C", "-f", str(path)], capture_output=True, text=True
    )
    assert compiled.returncode == 0, compiled.stderr[-2000:]


def test_bad_backends_and_directors_are_named() -> None:
    assert parse_backends("h:1, h:2") == [("h", 1), ("h", 2)] == parse_backends(["h:1", "h:2"])
    with pytest.raises(LocalStackError, match="host:port, got 'h2'"):
        parse_backends("h:1,h2")
    with pytest.raises(LocalStackError, match="director must be one of hash, round_robin"):
        Varnish(["h:1", "h:2"], director="random")
    with pytest.raises(LocalStackError, match="several backends"):
        render_vcl(
            'backend b {\n .host = "x";  # @backend-host\n .port = "1";  # @backend-port\n}\n', [("a", 1), ("b", 2)]
        )


@needs_varnish
def test_hash_keeps_a_user_on_one_replica_and_spreads_users(replicas) -> None:
    with Varnish([r.backend for r in replicas]) as cache:
        users = [f"u{i:03d}" for i in range(60)]
        for u in users:
            for what in ("recommendations?n=10", "recommendations?n=20", "next.m3u8"):
                assert _get(cache, f"/v1/users/{u}/{what}") == 200
        homes = {
            u: {_who(replicas, f"/v1/users/{u}/{w}") for w in ("recommendations?n=10", "next.m3u8")} for u in users
        }
        assert all(len(h) == 1 for h in homes.values())  # every request of a user: one replica
        spread = Counter(next(iter(h)) for h in homes.values())
        assert len(spread) == 3 and min(spread.values()) >= 8, spread  # 60 users over 3 replicas


@needs_varnish
def test_round_robin_alternates_and_a_replica_that_is_not_ready_gets_nothing(replicas) -> None:
    with Varnish([r.backend for r in replicas], director=ROUND_ROBIN) as cache:
        for i in range(30):
            assert _get(cache, f"/v1/users/u1/recommendations?i={i}") == 200
        assert [len(r.paths) for r in replicas] == [10, 10, 10]
        replicas[1].ready = False  # /readyz 503: the probe marks it sick after two failed polls
        time.sleep(3.5)
        before = [len(r.paths) for r in replicas]
        statuses = [_get(cache, f"/v1/users/u2/recommendations?i={i}") for i in range(20)]
        assert statuses == [200] * 20
        assert [len(r.paths) - b for r, b in zip(replicas, before, strict=True)] == [10, 0, 10]
