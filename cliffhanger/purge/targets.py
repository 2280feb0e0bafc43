"""Purge targets as plain, picklable values (what a pipeline carries), and the clients built from them
on the worker. A spec never holds a token: only the name of the environment variable that does.

Default pacing (client side; the server's 429 + Retry-After is the backstop):
* varnish     50 requests/s, burst 50: our own cache, just don't hammer it
* fastly      20 requests/s, burst 50: keyed purges are outside Fastly's 1,000/h API limit; be modest
* cloudflare  per plan, from developers.cloudflare.com/cache/how-to/purge-cache (token bucket per
              account): free 5/min burst 25, pro 5/s burst 25, business 10/s burst 50,
              enterprise 50/s burst 500. Default: pro (the safe choice for a paid zone). We pace at
              HEADROOM (80 %) of the plan's rate and bucket: requests reach the API with jitter, so
              pacing at exactly its rate still draws an occasional 429.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from cliffhanger.purge.clients import (
    CLOUDFLARE_BASE_URL,
    CLOUDFLARE_TOKEN_ENV,
    FASTLY_BASE_URL,
    FASTLY_TOKEN_ENV,
    CloudflarePurger,
    FanOutPurger,
    FastlyPurger,
    LayeredPurger,
    OriginCachePurger,
    Purger,
    VarnishPurger,
    token_from_env,
)

VARNISH, FASTLY, CLOUDFLARE = "varnish", "fastly", "cloudflare"
ADMIN_TOKEN_ENV = "CLIFFHANGER_ADMIN_TOKEN"  # serving's admin token (see serving/settings.py)
KINDS = (VARNISH, FASTLY, CLOUDFLARE)
HEADROOM = 0.8
CLOUDFLARE_PLANS: dict[str, tuple[float, int]] = {
    "free": (5 / 60, 25),
    "pro": (5.0, 25),
    "business": (10.0, 50),
    "enterprise": (50.0, 500),
}


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    kind: str
    url: str  # Varnish base URL, or the vendor API base URL
    account: str = ""  # Fastly service id / Cloudflare zone id
    rate_per_s: float = 50.0
    burst: int = 50
    token_env: str = ""
    origin_urls: tuple[str, ...] = ()  # varnish only: serving replicas' in-process caches, purged before the edge

    @property
    def name(self) -> str:
        return self.kind

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"purge target kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind != VARNISH and not self.account:
            raise ValueError(
                f"a {self.kind} purge target needs its {'service id' if self.kind == FASTLY else 'zone id'}"
            )


def varnish(url: str, rate_per_s: float = 50.0, burst: int = 50, origin_urls: Sequence[str] = ()) -> TargetSpec:
    """Varnish xkey purges; with `origin_urls` (one per serving replica behind this Varnish), each batch
    first purges every replica's own answer cache."""
    if isinstance(origin_urls, str):
        raise TypeError("origin_urls is a sequence of URLs, not one string")
    return TargetSpec(
        VARNISH,
        url,
        rate_per_s=rate_per_s,
        burst=burst,
        token_env=ADMIN_TOKEN_ENV if origin_urls else "",
        origin_urls=tuple(origin_urls),
    )


def fastly(service_id: str, base_url: str = FASTLY_BASE_URL, rate_per_s: float = 20.0, burst: int = 50) -> TargetSpec:
    return TargetSpec(FASTLY, base_url, service_id, rate_per_s, burst, FASTLY_TOKEN_ENV)


def cloudflare(zone_id: str, base_url: str = CLOUDFLARE_BASE_URL, plan: str = "pro") -> TargetSpec:
    if plan not in CLOUDFLARE_PLANS:
        raise ValueError(f"Cloudflare plan must be one of {', '.join(CLOUDFLARE_PLANS)}, got {plan!r}")
    rate, burst = CLOUDFLARE_PLANS[plan]
    return TargetSpec(
        CLOUDFLARE, base_url, zone_id, rate * HEADROOM, max(1, int(burst * HEADROOM)), CLOUDFLARE_TOKEN_ENV
    )


def build_purger(spec: TargetSpec) -> Purger:
    """The client for a spec; reads the token from the environment (MissingTokenError if unset)."""
    if spec.kind == VARNISH:
        if spec.origin_urls:
            token = token_from_env(spec.token_env)
            origins = [OriginCachePurger(url, token) for url in spec.origin_urls]
            inner = origins[0] if len(origins) == 1 else FanOutPurger(origins)
            return LayeredPurger(inner, VarnishPurger(spec.url))
        return VarnishPurger(spec.url)
    if spec.kind == FASTLY:
        return FastlyPurger(spec.account, token_from_env(spec.token_env), spec.url)
    return CloudflarePurger(spec.account, token_from_env(spec.token_env), spec.url)
