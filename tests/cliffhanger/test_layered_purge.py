"""The origin's answer cache is purged before the edge, with the admin token; a failure fails the pair."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from cliffhanger.purge.clients import LayeredPurger, OriginCachePurger, PurgeError
from cliffhanger.purge.targets import build_purger, varnish


class _Recorder(http.server.BaseHTTPRequestHandler):
    log: list = []
    fail_status = 0

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
        _Recorder.log.append(("origin", self.headers.get("Authorization"), keys))
        if _Recorder.fail_status:
            self._answer(_Recorder.fail_status, {"error": "boom"})
        else:
            self._answer(200, {"purged": len(keys)})

    def do_PURGE(self):  # edge: xkey
        _Recorder.log.append(("edge", None, self.headers.get("xkey-purge").split()))
        self._answer(200, {})

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Recorder.log, _Recorder.fail_status = [], 0
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_origin_first_then_edge_with_the_admin_token(server, monkeypatch):
    monkeypatch.setenv("CLIFFHANGER_ADMIN_TOKEN", "t0ken")
    purger = build_purger(varnish(server, origin_url=server))
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
