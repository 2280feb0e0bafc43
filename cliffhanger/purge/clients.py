"""Purge clients: one request = one batch of surrogate keys at one target. No retries here (see
`cliffhanger.purge.sender`); each client only knows its vendor's request shape and batch limit.

* Varnish (xkey, the local default): `PURGE /` with `xkey-purge: k1 k2 ...`, answered 200 with
  `X-Purged: <objects>` by infra/varnish/default.vcl. The limit is the request header size
  (Varnish `http_req_hdr_len`, 8 KiB by default): we send at most 100 keys and 4 KiB per header.
* Fastly: `POST /service/{service_id}/purge`, header `Fastly-Key`, JSON body
  `{"surrogate_keys": [...]}`. "Up to 256 surrogate keys can be purged in one batch request"
  (Fastly API reference, Purging > bulkPurgeTag). Surrogate-key purges are not counted in the
  1,000 non-read requests per hour API limit (docs.fastly.com/api, "Rate limiting"); 429 is still
  possible and is honoured (Retry-After / Fastly-RateLimit-Reset).
* Cloudflare: `POST /client/v4/zones/{zone_id}/purge_cache`, `Authorization: Bearer <token>`,
  JSON `{"tags": [...]}`. developers.cloudflare.com/cache/how-to/purge-cache (2025/26): "Max
  operations per request: 100" on every plan (it was 30 tags per call before 2025), and a per-account
  token bucket: Free 5 requests/min (bucket 25), Pro 5/s (25), Business 10/s (50), Enterprise 50/s (500).

Tokens come from the environment (FASTLY_API_TOKEN, CLOUDFLARE_API_TOKEN), read when a client is
built (DoFn.setup on the worker), so they never enter the pipeline graph or the code.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Protocol

VARNISH_MAX_KEYS = 100
VARNISH_MAX_HEADER_BYTES = 4096
FASTLY_MAX_KEYS = 256
CLOUDFLARE_MAX_TAGS = 100
FASTLY_BASE_URL = "https://api.fastly.com"
CLOUDFLARE_BASE_URL = "https://api.cloudflare.com"
FASTLY_TOKEN_ENV = "FASTLY_API_TOKEN"
CLOUDFLARE_TOKEN_ENV = "CLOUDFLARE_API_TOKEN"

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class PurgeError(Exception):
    """A purge request that did not apply. `retryable`: 429, 5xx, timeouts and connection errors."""

    def __init__(self, message: str, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s
        self.retryable = status is None or status in RETRYABLE_STATUS


class MissingTokenError(RuntimeError):
    pass


class Purger(Protocol):
    name: str
    max_keys: int
    max_header_bytes: int | None

    def purge(self, keys: Sequence[str]) -> int:
        """Purge objects tagged with any of `keys`; returns the target's count (-1 if it gives none)."""
        ...

    def close(self) -> None: ...


def token_from_env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise MissingTokenError(f"{name} is not set: the purge API token comes from the environment")
    return value


def parse_retry_after(value: str | None, now_s: float | None = None) -> float | None:
    """Retry-After as seconds to wait: delta-seconds or an HTTP-date (RFC 9110 10.2.3); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now_s is None else now_s))


def chunk_keys(keys: Sequence[str], max_keys: int, max_bytes: int | None = None) -> Iterator[tuple[str, ...]]:
    """Split keys into batches of at most `max_keys` keys and (space-joined) `max_bytes` bytes."""
    batch: list[str] = []
    size = 0
    for key in keys:
        extra = len(key.encode()) + (1 if batch else 0)
        if batch and (len(batch) >= max_keys or (max_bytes is not None and size + extra > max_bytes)):
            yield tuple(batch)
            batch, size, extra = [], 0, len(key.encode())
        batch.append(key)
        size += extra
    if batch:
        yield tuple(batch)


class _Http:
    """One persistent HTTP/1.1 connection to a base URL; reconnects once if a kept-alive one went stale."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base URL must be http(s)://host[:port], got {base_url!r}")
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=self._timeout_s)

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes | None = None):
        """(status, headers with lower-case names, body); PurgeError(status=None) on connection failure."""
        for fresh in (False, True):
            reused = self._conn is not None and not fresh
            if self._conn is None or fresh:
                self.close()
                self._conn = self._connect()
            try:
                self._conn.request(method, self._prefix + path, body=body, headers=headers)
                resp = self._conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if reused and isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)):
                    continue  # the server closed an idle keep-alive connection: one immediate retry
                raise PurgeError(f"{type(exc).__name__}: {exc}") from exc
            if resp.will_close:
                self.close()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _raise_for(status: int, headers: dict[str, str], body: bytes, what: str) -> None:
    if 200 <= status < 300:
        return
    retry_after = parse_retry_after(headers.get("retry-after"))
    if retry_after is None and status == 429 and headers.get("fastly-ratelimit-reset", "").isdigit():
        retry_after = max(0.0, int(headers["fastly-ratelimit-reset"]) - time.time())
    snippet = body[:200].decode("utf-8", "replace")
    raise PurgeError(f"{what} answered {status}: {snippet}", status=status, retry_after_s=retry_after)


class VarnishPurger:
    name = "varnish"
    max_keys = VARNISH_MAX_KEYS
    max_header_bytes: int | None = VARNISH_MAX_HEADER_BYTES

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self._http = _Http(url, timeout_s)

    def purge(self, keys: Sequence[str]) -> int:
        status, headers, body = self._http.request("PURGE", "/", {"xkey-purge": " ".join(keys)})
        _raise_for(status, headers, body, "Varnish PURGE")
        return int(headers.get("x-purged", "-1"))

    def close(self) -> None:
        self._http.close()


class FastlyPurger:
    name = "fastly"
    max_keys = FASTLY_MAX_KEYS
    max_header_bytes: int | None = None  # keys go in the JSON body, not the Surrogate-Key header

    def __init__(self, service_id: str, token: str, base_url: str = FASTLY_BASE_URL, timeout_s: float = 5.0) -> None:
        self._path = f"/service/{urllib.parse.quote(service_id, safe='')}/purge"
        self._token = token
        self._http = _Http(base_url, timeout_s)

    def purge(self, keys: Sequence[str]) -> int:
        body = json.dumps({"surrogate_keys": list(keys)}).encode()
        headers = {"Fastly-Key": self._token, "Content-Type": "application/json", "Accept": "application/json"}
        status, resp_headers, data = self._http.request("POST", self._path, headers, body)
        _raise_for(status, resp_headers, data, "Fastly purge")
        return -1

    def close(self) -> None:
        self._http.close()


class CloudflarePurger:
    name = "cloudflare"
    max_keys = CLOUDFLARE_MAX_TAGS
    max_header_bytes: int | None = None

    def __init__(
        self, zone_id: str, token: str, base_url: str = CLOUDFLARE_BASE_URL, timeout_s: float = 5.0, max_tags: int = 0
    ) -> None:
        self._path = f"/client/v4/zones/{urllib.parse.quote(zone_id, safe='')}/purge_cache"
        self._token = token
        self._http = _Http(base_url, timeout_s)
        if max_tags:
            self.max_keys = max_tags  # e.g. 30 on an account still under the pre-2025 limit

    def purge(self, keys: Sequence[str]) -> int:
        body = json.dumps({"tags": list(keys)}).encode()
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"}
        status, resp_headers, data = self._http.request("POST", self._path, headers, body)
        _raise_for(status, resp_headers, data, "Cloudflare purge_cache")
        try:
            ok = json.loads(data).get("success") is True
        except (ValueError, AttributeError):
            ok = False
        if not ok:
            raise PurgeError(f"Cloudflare purge_cache answered {status} without success: {data[:200]!r}", status=status)
        return -1

    def close(self) -> None:
        self._http.close()


class OriginCachePurger:
    """One serving replica's in-process answer cache: `POST /admin/purge {"keys": [...]}` with the admin
    bearer token (CLIFFHANGER_ADMIN_TOKEN). Purged BEFORE the edge (see LayeredPurger); several replicas
    through FanOutPurger."""

    name = "origin"
    max_keys = VARNISH_MAX_KEYS
    max_header_bytes: int | None = None

    def __init__(self, url: str, token: str, timeout_s: float = 2.0) -> None:
        self._token = token
        self._http = _Http(url, timeout_s)

    def purge(self, keys: Sequence[str]) -> int:
        body = json.dumps({"keys": list(keys)}).encode()
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"}
        status, resp_headers, data = self._http.request("POST", "/admin/purge", headers, body)
        _raise_for(status, resp_headers, data, "origin purge")
        return int(json.loads(data or b"{}").get("purged", -1))

    def close(self) -> None:
        self._http.close()


class FanOutPurger:
    """The same keys to every serving replica's in-process answer cache (each replica holds its own).

    Every replica is tried, in order, even after one failed (the others' caches are then already fresh);
    then the first failure is raised, a non-retryable one before a retryable one, so the batch fails as
    a whole and is retried (or dead-lettered) as for one origin. The purges are idempotent, so a retry
    that purges the healthy replicas again is safe. Returns the sum of the replicas' counts."""

    def __init__(self, purgers: Sequence[Purger]) -> None:
        if not purgers:
            raise ValueError("FanOutPurger needs at least one purger")
        self._purgers = tuple(purgers)
        self.name = self._purgers[0].name
        self.max_keys = min(p.max_keys for p in self._purgers)
        sizes = [p.max_header_bytes for p in self._purgers if p.max_header_bytes is not None]
        self.max_header_bytes = min(sizes) if sizes else None

    def purge(self, keys: Sequence[str]) -> int:
        total, errors = 0, []
        for purger in self._purgers:
            try:
                total += max(0, purger.purge(keys))
            except PurgeError as exc:
                errors.append(exc)
        if errors:
            raise min(errors, key=lambda e: e.retryable)  # False < True: a non-retryable one first
        return total

    def close(self) -> None:
        for purger in self._purgers:
            purger.close()


class LayeredPurger:
    """Purge cache layers from the origin outwards: the origin's answer cache first, then the edge.

    In the other order a request arriving between the two purges would refill the edge from the
    origin's stale answer for a whole max-age. Both purges are idempotent, so a retry of the pair
    after a failure of either is safe."""

    def __init__(self, inner: Purger, outer: Purger) -> None:
        self._inner, self._outer = inner, outer
        self.name = outer.name
        self.max_keys = min(inner.max_keys, outer.max_keys)
        self.max_header_bytes = outer.max_header_bytes

    def purge(self, keys: Sequence[str]) -> int:
        self._inner.purge(keys)
        return self._outer.purge(keys)

    def close(self) -> None:
        self._inner.close()
        self._outer.close()
