"""TEST DOUBLE of two third-party APIs: Fastly's batch surrogate-key purge and Cloudflare's
purge-by-tag. Not a CDN and not affiliated with either vendor. It is a real HTTP server on loopback
that enforces the contract our clients must respect, so tests and benchmarks exercise real requests:

    POST /service/{service_id}/purge             Fastly-Key: <token>      {"surrogate_keys": [...]}
                                                 (or Surrogate-Key: k1 k2 header)      <= 256 keys
    POST /client/v4/zones/{zone_id}/purge_cache  Authorization: Bearer <t> {"tags": [...]}  <= 100 tags

* auth: missing credential -> 401, wrong one -> 403; unknown service / zone -> 404
* batch limit exceeded or bad body -> 400 (nothing applied)
* rate limit: a token bucket per vendor; empty -> 429 with Retry-After (seconds)
* faults on demand: `fail_rate` (random share answered `fail_status`, 503 by default) and
  `fail_next(n, status, retry_after_s)`; a failed request applies nothing
* `applied`: every purge that was applied, in order, with its arrival time

    with FakeCdn(FakeCdnConfig(fail_rate=0.2)) as cdn:
        FastlyPurger(cdn.config.fastly_service_id, cdn.config.fastly_token, cdn.url).purge(["s-1"])
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FASTLY, CLOUDFLARE = "fastly", "cloudflare"


@dataclasses.dataclass
class FakeCdnConfig:
    fastly_service_id: str = "svc-local"
    fastly_token: str = "fastly-test-token"
    cloudflare_zone_id: str = "zone-local"
    cloudflare_token: str = "cloudflare-test-token"
    fastly_max_keys: int = 256
    cloudflare_max_tags: int = 100
    fastly_rate_per_s: float = 50.0
    fastly_burst: int = 100
    cloudflare_rate_per_s: float = 10.0  # Business plan
    cloudflare_burst: int = 50
    fail_rate: float = 0.0
    fail_status: int = 503
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class AppliedPurge:
    vendor: str
    keys: tuple[str, ...]
    at_s: float  # time.monotonic() on arrival


class _Bucket:
    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate, self.burst = rate_per_s, burst
        self.tokens, self.last = float(burst), time.monotonic()

    def take(self) -> float:
        """0 if a token was taken, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class FakeCdn:
    def __init__(self, config: FakeCdnConfig | None = None, port: int = 0) -> None:
        self.config = config or FakeCdnConfig()
        self._lock = threading.Lock()
        self._rng = random.Random(self.config.seed)
        self._buckets = {
            FASTLY: _Bucket(self.config.fastly_rate_per_s, self.config.fastly_burst),
            CLOUDFLARE: _Bucket(self.config.cloudflare_rate_per_s, self.config.cloudflare_burst),
        }
        self._forced: list[tuple[int, float | None]] = []
        self.applied: list[AppliedPurge] = []
        self.statuses: list[tuple[str, int]] = []  # (vendor, status) of every request, in order
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeCdn:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-cdn", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeCdn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, n: int, status: int = 503, retry_after_s: float | None = None) -> None:
        with self._lock:
            self._forced.extend([(status, retry_after_s)] * n)

    def set_fail_rate(self, rate: float, status: int = 503) -> None:
        with self._lock:
            self.config.fail_rate, self.config.fail_status = rate, status

    def applied_keys(self, vendor: str) -> set[str]:
        with self._lock:
            return {k for p in self.applied if p.vendor == vendor for k in p.keys}

    def requests(self, vendor: str, status: int | None = None) -> int:
        with self._lock:
            return sum(1 for v, s in self.statuses if v == vendor and (status is None or s == status))

    # --- the contract, called by the handler under no lock -----------------------------------------

    def handle(self, method: str, path: str, headers, body: bytes) -> tuple[int, dict[str, str], dict]:
        vendor, status, extra, payload = self._decide(method, path, headers, body)
        with self._lock:
            self.statuses.append((vendor, status))
        return status, extra, payload

    def _decide(self, method, path, headers, body):
        parts = path.strip("/").split("/")
        if method == "POST" and len(parts) == 3 and parts[0] == "service" and parts[2] == "purge":
            return (FASTLY, *self._fastly(parts[1], headers, body))
        if (
            method == "POST"
            and len(parts) == 5
            and parts[:3] == ["client", "v4", "zones"]
            and parts[4] == "purge_cache"
        ):
            return (CLOUDFLARE, *self._cloudflare(parts[3], headers, body))
        return ("", 404, {}, {"msg": f"no route {method} {path}"})

    def _fastly(self, service_id, headers, body):
        c = self.config
        token = headers.get("Fastly-Key")
        if not token:
            return 401, {}, {"msg": "Provided credentials are missing or invalid"}
        if token != c.fastly_token:
            return 403, {}, {"msg": "Not authorized"}
        if service_id != c.fastly_service_id:
            return 404, {}, {"msg": "Record not found"}
        try:
            keys = json.loads(body)["surrogate_keys"] if body else headers.get("Surrogate-Key", "").split()
        except (ValueError, KeyError, TypeError):
            return 400, {}, {"msg": "Bad request", "detail": "surrogate_keys: required"}
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k for k in keys):
            return 400, {}, {"msg": "Bad request", "detail": "surrogate_keys must be a non-empty list of strings"}
        if len(keys) > c.fastly_max_keys:
            return 400, {}, {"msg": "Bad request", "detail": f"at most {c.fastly_max_keys} surrogate keys per request"}
        limited = self._limited(FASTLY)
        if limited is not None:
            status, extra = limited
            if status == 429 and "Retry-After" in extra:
                reset = str(int(time.time()) + int(extra["Retry-After"]))
                extra = {**extra, "Fastly-RateLimit-Remaining": "0", "Fastly-RateLimit-Reset": reset}
            return status, extra, {"msg": "Too many requests" if status == 429 else "Service unavailable"}
        self._apply(FASTLY, keys)
        return 200, {}, {k: f"purge-{i}" for i, k in enumerate(keys)}

    def _cloudflare(self, zone_id, headers, body):
        c = self.config

        def error(status, code, message):
            return status, {}, {"success": False, "errors": [{"code": code, "message": message}], "result": None}

        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return error(401, 10000, "Authentication error")
        if auth.removeprefix("Bearer ") != c.cloudflare_token:
            return error(403, 10000, "Authentication error")
        if zone_id != c.cloudflare_zone_id:
            return error(404, 7003, "Could not route to zone")
        try:
            tags = json.loads(body)["tags"]
        except (ValueError, KeyError, TypeError):
            return error(400, 1012, "Request must contain one of files, tags, hosts, prefixes or purge_everything")
        if not isinstance(tags, list) or not tags or not all(isinstance(t, str) and t for t in tags):
            return error(400, 1012, "tags must be a non-empty list of strings")
        if len(tags) > c.cloudflare_max_tags:
            return error(400, 1011, f"at most {c.cloudflare_max_tags} tags per request")
        limited = self._limited(CLOUDFLARE)
        if limited is not None:
            return limited[0], limited[1], {"success": False, "errors": [{"code": 971, "message": "rate limited"}]}
        self._apply(CLOUDFLARE, tags)
        return 200, {}, {"success": True, "errors": [], "messages": [], "result": {"id": c.cloudflare_zone_id}}

    def _limited(self, vendor: str) -> tuple[int, dict[str, str]] | None:
        """A forced or random fault, else the rate limit; None when the request may apply."""
        with self._lock:
            if self._forced:
                status, retry_after = self._forced.pop(0)
                return status, ({"Retry-After": str(int(retry_after))} if retry_after is not None else {})
            if self.config.fail_rate and self._rng.random() < self.config.fail_rate:
                return self.config.fail_status, {}
            wait = self._buckets[vendor].take()
        if wait > 0:
            return 429, {"Retry-After": str(max(1, int(wait + 0.999)))}
        return None

    def _apply(self, vendor: str, keys: list[str]) -> None:
        with self._lock:
            self.applied.append(AppliedPurge(vendor, tuple(keys), time.monotonic()))


def _handler(cdn: FakeCdn):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

        def do_POST(self):  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, extra, payload = cdn.handle("POST", self.path, self.headers, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args):  # noqa: A002 - quiet: tests make thousands of requests
            return

    return Handler
