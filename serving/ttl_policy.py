"""Edge and in-process freshness of an answer: ONE function decides (`edge_ttl`), plus the request-rate
meter that feeds it. Pure, no I/O.

Policy, first match wins:

    degraded answer (a fallback rung)   max-age = degraded_ttl (1 s), swr 5 s: recovery shows fast
    a series in it is dropping          max-age = drop_ttl (1 s), swr = drop_ttl: during a drop window
                                        (serving/live_catalog.py) an answer that names the series,
                                        or a playlist that lists it, lives one second at most
    otherwise (popularity-driven)       max-age = min(hot_max, base * (1 + log2(1 + rate * base)))
                                        swr     = swr_base (unchanged)

`rate` is the key's request rate (requests/s, exponentially decayed, `RateMeter`), so `rate * base` is
the number of requests expected within one base TTL. A cold key (rate * base << 1) keeps `base`; a key
asked about once per base TTL gets 2 x base; each doubling of its rate adds one more `base`, up to
`hot_max`. Example with base 5 s, cap 30 s: 0.01 req/s -> 5.4 s, 0.2/s -> 10 s, 1/s -> 17.9 s,
5/s -> 28.5 s, 10/s -> 30 s.

Why longer for hot keys: every expiry of a hot key is a synchronized refetch at the origin, and the
origin load a key costs is its rate / its TTL; correctness does not rest on the TTL, because a change
purges the key's surrogate keys (the invalidation pipeline). The TTL only bounds how stale an answer
can be when a purge is lost, and that bound grows slowly (logarithmically) with popularity. The drop
window overrides it because there the race "purge reached the edge before serving applied the catalog
event" is likely, and one second bounds what that race can cost.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable


@dataclasses.dataclass(frozen=True, slots=True)
class Freshness:
    max_age_s: float
    swr_s: float

    def cache_control(self) -> str:
        # whole seconds, rounded down: a TTL is never longer than the policy says
        return f"public, max-age={int(self.max_age_s)}, stale-while-revalidate={int(self.swr_s)}"


def edge_ttl(
    *,
    base_s: float,
    swr_s: float,
    rate_per_s: float = 0.0,
    hot_max_s: float = 30.0,
    dropping: bool = False,
    drop_ttl_s: float = 1.0,
    degraded: bool = False,
    degraded_ttl_s: float = 1.0,
) -> Freshness:
    """The freshness of one answer (module docstring has the formula and the reasoning)."""
    if degraded:
        return Freshness(degraded_ttl_s, 5.0)
    if dropping:
        return Freshness(drop_ttl_s, drop_ttl_s)
    rate = max(0.0, rate_per_s)
    hot = base_s * (1.0 + math.log2(1.0 + rate * base_s))
    return Freshness(max(base_s, min(hot_max_s, hot)), swr_s)


class RateMeter:
    """Exponentially decayed request rate per key (requests/s with time constant `tau_s`), LRU-bounded.

    rate(t) = sum over requests at t_i of exp(-(t - t_i) / tau) / tau: a steady r req/s reads r.
    """

    def __init__(
        self, tau_s: float = 60.0, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.tau_s, self.max_keys, self._clock = tau_s, max_keys, clock
        self._state: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # key -> (value, at)

    def _decayed(self, key: Hashable, now: float) -> float:
        value, at = self._state.get(key, (0.0, now))
        return value * math.exp(-(now - at) / self.tau_s)

    def hit(self, key: Hashable) -> float:
        """Count one request; returns the rate including it."""
        now = self._clock()
        value = self._decayed(key, now) + 1.0 / self.tau_s
        self._state[key] = (value, now)
        self._state.move_to_end(key)
        while len(self._state) > self.max_keys:
            self._state.popitem(last=False)
        return value

    def rate(self, key: Hashable) -> float:
        return self._decayed(key, self._clock()) if key in self._state else 0.0
