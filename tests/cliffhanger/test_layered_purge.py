"""The origin's answer cache is purged before the edge, with the admin token; a failure fails the pair.
With several serving replicas (--origin_url a,b or repeated), every replica is purged before the edge,
and a failure of any one fails the batch (retryable), after the others were purged."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from cliffhanger.localstack import free_port
from cliffhanger.purge.clients import FanOutPurger, LayeredPurger, OriginCachePurger, PurgeError
from cliffhanger.purge.targets import build_purger, varnish
from pipelines import invalidation


class _Recorder(http.server.BaseHTTPRequestHandler):
    log: list = []
    fail_status = 0
    fail_ports: dict[int, int] = {}  # port -> status: one replica failing
    origins: list[int] = []  # the port of each origin purge, in order

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Purged", "3")
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # origin: /admin/purge
        length = int(self.headers.get("Content-Length", 0))
        keys = json.loads(self.rfile.read(length))["keys"]
        port = self.server.server_address[1]
        _Recorder.log.append(("origin", self.headers.get("Authorization"), keys))
        _Recorder.origins.append(port)
        if _Recorder.fail_status or port in _Recorder.fail_ports:
            self._answer(_Recorder.fail_status or _Recorder.fail_ports[port], {"error": "boom"})
        else:
            self._answer(200, {"purged": len(keys)})

    def do_PURGE(self):  # edge: xkey
        _Recorder.log.append(("edge", None, self.headers.get("xkey-purge").split()))
        self._answer(200, {})

    def log_message(self, *args):
        pass


def _start() -> http.server.ThreadingHTTPServer:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.fixture
def servers():
    """Three recording HTTP servers (serving replicas and, on the first, the edge)."""
    _Recorder.log, _Recorder.fail_status, _Recorder.fail_ports, _Recorder.origins = [], 0, {}, []
    started = [_start() for _ in range(3)]
    yield [f"http://127.0.0.1:{h.server_address[1]}" for h in started]
    for httpd in started:
        httpd.shutdown()


@pytest.fixture
def server(servers):
    return servers[0]


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_origin_first_then_edge_with_the_admin_token(server, monkeypatch):
    monkeypatch.setenv("CLIFFHANGER_ADMIN_TOKEN", "t0ken")
    purger = build_purger(varnish(server, origin_urls=[server]))
    assert isinstance(purger, LayeredPurger) and purger.name == "varnish"
    assert purger.purge(["u-abc", "s-s0001"]) == 3
    assert _Recorder.log == [("origin", "Bearer t0ken", ["u-abc", "s-s0001"]), ("edge", None, ["u-abc", "s-s0001"])]


def test_an_origin_failure_stops_before_the_edge_and_is_retryable(server):
    _Recorder.fail_status = 503
    purger = LayeredPurger(OriginCachePurger(server, "t"), build_purger(varnish(server)))
    with pytest.raises(PurgeError) as err:
        purger.purge(["u-abc"])
    assert err.value.retryable
    assert [kind for kind, _, _ in _Recorder.log] == ["origin"]


def test_without_origin_url_it_is_plain_varnish(server):
    assert not isinstance(build_purger(varnish(server)), LayeredPurger)


def test_every_replica_is_purged_before_the_edge(servers, monkeypatch):
    monkeypatch.setenv("CLIFFHANGER_ADMIN_TOKEN", "t0ken")
    edge, *replicas = servers
    purger = build_purger(varnish(edge, origin_urls=[edge, *replicas]))
    assert purger.purge(["u-abc"]) == 3
    assert _Recorder.origins == [_port(u) for u in servers]
    assert [kind for kind, _, _ in _Recorder.log] == ["origin", "origin", "origin", "edge"]
    assert {auth for kind, auth, _ in _Recorder.log if kind == "origin"} == {"Bearer t0ken"}


def test_one_failing_replica_fails_the_batch_after_purging_the_others(servers, monkeypatch):
    monkeypatch.setenv("CLIFFHANGER_ADMIN_TOKEN", "t0ken")
    edge, *replicas = servers
    _Recorder.fail_ports = {_port(replicas[0]): 503}
    purger = build_purger(varnish(edge, origin_urls=[edge, *replicas]))
    with pytest.raises(PurgeError) as err:
        purger.purge(["s-s0001"])
    assert err.value.retryable and err.value.status == 503
    assert _Recorder.origins == [_port(u) for u in servers]  # the healthy replicas were purged anyway
    assert "edge" not in [kind for kind, _, _ in _Recorder.log]  # never the edge before every origin


def test_a_non_retryable_replica_failure_wins_over_a_retryable_one(servers):
    edge, *replicas = servers
    _Recorder.fail_ports = {_port(replicas[0]): 503, _port(replicas[1]): 401}
    fan_out = FanOutPurger([OriginCachePurger(u, "wrong") for u in replicas])
    with pytest.raises(PurgeError) as err:
        fan_out.purge(["u-abc"])
    assert (err.value.status, err.value.retryable) == (401, False)  # dead-lettered, not retried forever


def test_a_dead_replica_is_a_retryable_failure(servers):
    dead = f"http://127.0.0.1:{free_port()}"
    fan_out = FanOutPurger([OriginCachePurger(servers[1], "t"), OriginCachePurger(dead, "t")])
    with pytest.raises(PurgeError) as err:
        fan_out.purge(["u-abc"])
    assert err.value.retryable and err.value.status is None
    assert _Recorder.origins == [_port(servers[1])]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--origin_url", "http://h:1"], ("http://h:1",)),
        (["--origin_url", "http://h:1,http://h:2"], ("http://h:1", "http://h:2")),
        (["--origin_url", "http://h:1", "--origin_url", "http://h:2, http://h:1"], ("http://h:1", "http://h:2")),
        ([], ()),
    ],
)
def test_invalidation_flags_name_every_replica(flags, expected):
    parser = invalidation._parser()
    known, _ = parser.parse_known_args(flags)
    (spec,) = invalidation.target_specs(known, parser)
    assert spec.origin_urls == expected


def test_a_bad_origin_url_is_a_flag_error_naming_it(capsys):
    parser = invalidation._parser()
    known, _ = parser.parse_known_args(["--origin_url", "http://h:1,h2:8080"])
    with pytest.raises(SystemExit):
        invalidation.target_specs(known, parser)
    assert "--origin_url: 'h2:8080'" in capsys.readouterr().err
