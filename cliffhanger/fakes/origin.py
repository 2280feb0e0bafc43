"""TEST DOUBLE of an origin behind the edge ("bench-origin"): a tiny loopback HTTP server whose
answer for a surrogate key changes when that key's entity changes. Not the serving API.

    GET /edge/<key>  ->  200 "<key> v<version>", headers
                         xkey: <key>                      (Varnish xkey tag)
                         Surrogate-Key: <key>             (Fastly's equivalent, for completeness)
                         Cache-Control: public, max-age=3600
                         X-Version: <version>

`bump(key)` makes the entity change (version + 1); only a purge of `<key>` lets the edge see it
before the hour is up. `fetches` counts requests that reached the origin (cache misses).
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/edge/"


class BenchOrigin:
    def __init__(self, port: int = 0, max_age_s: int = 3600) -> None:
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._versions: Counter[str] = Counter()
        self.fetches: Counter[str] = Counter()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @staticmethod
    def path(key: str) -> str:
        return PREFIX + key

    def version(self, key: str) -> int:
        with self._lock:
            return self._versions[key]

    def bump(self, key: str) -> int:
        """The entity behind `key` changed: returns its new version."""
        with self._lock:
            self._versions[key] += 1
            return self._versions[key]

    def fetch(self, key: str) -> int:
        with self._lock:
            self.fetches[key] += 1
            return self._versions[key]

    def start(self) -> BenchOrigin:
        threading.Thread(target=self._server.serve_forever, name="bench-origin", daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> BenchOrigin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler(origin: BenchOrigin):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

        def do_GET(self):  # noqa: N802 - http.server's naming
            if not self.path.startswith(PREFIX) or len(self.path) == len(PREFIX):
                self.send_error(404)
                return
            key = self.path[len(PREFIX) :]
            version = origin.fetch(key)
            body = f"{key} v{version}".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", f"public, max-age={origin.max_age_s}")
            self.send_header("xkey", key)
            self.send_header("Surrogate-Key", key)
            self.send_header("X-Version", str(version))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # noqa: A002 - quiet under load
            return

    return Handler


def read_version(body: bytes) -> int:
    """The version in an answer body ('<key> v<n>')."""
    return int(body.rsplit(b" v", 1)[1])


def edge_get(base_url: str, key: str, timeout_s: float = 2.0) -> tuple[str, int]:
    """GET the bench answer for `key` through an edge at `base_url`: (X-Cache or '', version)."""
    host, _, port = base_url.removeprefix("http://").rstrip("/").partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout_s)
    try:
        conn.request("GET", BenchOrigin.path(key))
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise OSError(f"GET {BenchOrigin.path(key)} via {base_url} answered {resp.status}")
        return resp.getheader("X-Cache", ""), read_version(body)
    finally:
        conn.close()
