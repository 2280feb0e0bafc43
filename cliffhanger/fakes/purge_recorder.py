"""TEST/BENCH HARNESS: a loopback HTTP proxy that forwards xkey `PURGE` requests to a Varnish and
records each one (arrival time, keys, status), so tests and benchmarks can count purge requests and
see which keys Varnish accepted. Varnish itself keeps no per-key purge log.

When the upstream cannot be reached the proxy answers 502, as a load balancer in front of a
restarting Varnish would.
"""

from __future__ import annotations

import dataclasses
import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclasses.dataclass(frozen=True)
class RecordedPurge:
    at_s: float  # time.monotonic() on arrival
    keys: tuple[str, ...]
    status: int  # Varnish's answer, 502 if it could not be reached


class PurgeRecorder:
    def __init__(self, upstream_port: int, port: int = 0, timeout_s: float = 2.0) -> None:
        self.upstream_port = upstream_port
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self.purges: list[RecordedPurge] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def applied_keys(self) -> set[str]:
        with self._lock:
            return {k for p in self.purges if p.status == 200 for k in p.keys}

    def snapshot(self) -> list[RecordedPurge]:
        with self._lock:
            return list(self.purges)

    def forward(self, keys_header: str) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=self.timeout_s)
        try:
            conn.request("PURGE", "/", headers={"xkey-purge": keys_header})
            resp = conn.getresponse()
            result = resp.status, {"X-Purged": resp.getheader("X-Purged", "0")}, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            result = 502, {}, f"upstream Varnish unreachable: {exc}".encode()
        finally:
            conn.close()
        with self._lock:
            self.purges.append(RecordedPurge(time.monotonic(), tuple(keys_header.split()), result[0]))
        return result

    def start(self) -> PurgeRecorder:
        threading.Thread(target=self._server.serve_forever, name="purge-recorder", daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> PurgeRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler(recorder: PurgeRecorder):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_PURGE(self):  # noqa: N802 - http.server's naming
            status, headers, body = recorder.forward(self.headers.get("xkey-purge", ""))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # noqa: A002 - quiet under load
            return

    return Handler
