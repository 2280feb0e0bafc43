"""Request validation, the in-process response cache and rendering (body + caching headers). No HTTP
framework here: the handler passes plain values in and copies bytes and headers out.

Caching contract:
  * In process: key = keyed hash of the user (cliffhanger.edge_keys.user_hash) + the normalised
    parameters; TTL `cache_ttl_s`, stale-while-revalidate `cache_swr_s`, single-flight. Degraded answers
    (a fallback rung, ranker failure) are cached for `degraded_ttl_s` only, so recovery shows fast.
  * At the edge: `Cache-Control: public, max-age=<ttl>, stale-while-revalidate=<swr>` (degraded:
    max-age=1, stale-while-revalidate=5). <ttl> follows serving/ttl_policy.edge_ttl: `cache_ttl_s`
    for a cold key, longer for a hot one (request rate), 1 s while a series it names is dropping. `public` is right although the answer is personal: the URL
    names the user, so the edge key is per user; nothing else varies the answer.
  * `xkey` and `Surrogate-Key` (same words): u-<keyed user hash>, s-<series>, e-<episode> of every item
    and of the request, c-<country>-<device>, and `all`. Purging any of them drops the answer at the
    edge (Varnish xkey) and in process (/admin/purge). The user id never appears in clear.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from cliffhanger import edge_keys
from cliffhanger.events import DEVICES
from serving.cache import Computed, TtlCache, held_json
from serving.metrics import Metrics
from serving.recommend import CONTEXTS, Recommendation, Recommender, RecRequest
from serving.settings import ServingSettings
from serving.ttl_policy import Freshness, RateMeter, edge_ttl

_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


class InvalidRequest(ValueError):
    """A bad parameter: maps to 400 naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


JSON_HEADERS = [(b"content-type", b"application/json")]
NO_STORE = (b"cache-control", b"no-store")
_RAW_NAMES = {
    name: name.lower().encode() for name in ("Cache-Control", "xkey", "Surrogate-Key", "X-Rung", "X-Bundle-Version")
}


def _raw_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """ASGI header pairs: names from a table, not encoded per answer; equal values share one bytes object
    (xkey and Surrogate-Key carry the same ~25 keys), which the response cache then holds once."""
    out, encoded = [], {}
    for name, value in headers.items():
        raw = encoded.get(value)
        if raw is None:
            raw = encoded[value] = value.encode()
        out.append((_RAW_NAMES.get(name) or name.lower().encode(), raw))
    return out


class Rendered(NamedTuple):
    """An answer as sent."""

    body: bytes
    headers: Mapping[str, str]
    rung: str
    raw_headers: tuple[tuple[bytes, bytes], ...] = ()  # ASGI form, with type and length

    def cached(self) -> tuple:
        """The form the response cache holds: ONE flat tuple of bytes and strings (body, rung, the number
        of ASGI header pairs, those pairs' names and values in turn, then the headers' names and values),
        which the garbage collector stops tracking at its first young collection. Nested tuples would
        stay tracked into the old generation; see serving/cache.py for why that matters."""
        flat: list = [self.body, self.rung, len(self.raw_headers)]
        for pair in self.raw_headers:
            flat += pair
        for pair in self.headers.items():
            flat += pair
        return tuple(flat)

    @classmethod
    def from_cached(cls, cached: tuple) -> Rendered:
        n_raw = 3 + 2 * cached[2]
        raw, headers = cached[3:n_raw], cached[n_raw:]
        names, values = headers[::2], headers[1::2]
        return cls(
            cached[0], dict(zip(names, values, strict=True)), cached[1], tuple(zip(raw[::2], raw[1::2], strict=True))
        )


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


# OpenAPI description of the recommendations endpoint's query (serving/app.py); `validate` checks it.
RECOMMENDATION_QUERY = [
    _query("context", "episode_end | home", {"type": "string", "enum": list(CONTEXTS), "default": "home"}),
    _query("series_id", "the series of the episode just finished", {"type": "string"}),
    _query("episode_id", "the episode just finished (episode_end)", {"type": "string"}),
    _query("n", "items wanted, 1..max_n (default: the configured default_n)", {"type": "integer", "minimum": 1}),
    _query("country", "ISO alpha-2; licensing and segment (default: the configured country)", {"type": "string"}),
    _query("device", " | ".join(DEVICES), {"type": "string", "enum": list(DEVICES)}),
]


def parse_n(raw: str | None) -> int | None:
    """The `n` query parameter: None when absent or empty, else an integer (400 naming `n` if not)."""
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest("n", f"n must be an integer, got {raw[:20]!r}") from None


def validate(
    settings: ServingSettings,
    catalog: Any,
    *,
    user_id: str,
    context: str,
    series_id: str | None,
    episode_id: str | None,
    n: int | None,
    country: str | None,
    device: str | None,
) -> RecRequest:
    if not _ID.match(user_id):
        raise InvalidRequest("user_id", "user_id must be 1-64 characters of [A-Za-z0-9_.:-]")
    if context not in CONTEXTS:
        raise InvalidRequest("context", f"context must be one of {', '.join(CONTEXTS)}")
    n = settings.default_n if n is None else n
    if not 1 <= n <= settings.max_n:
        raise InvalidRequest("n", f"n must be between 1 and {settings.max_n}")
    country = country or settings.default_country
    if not _COUNTRY.match(country):
        raise InvalidRequest("country", "country must be an ISO 3166 alpha-2 code in capitals, e.g. US")
    device = device or settings.default_device
    if device not in DEVICES:
        raise InvalidRequest("device", f"device must be one of {', '.join(DEVICES)}")
    for field, value in (("series_id", series_id), ("episode_id", episode_id)):
        if value is not None and not _ID.match(value):
            raise InvalidRequest(field, f"{field} must be 1-64 characters of [A-Za-z0-9_.:-]")
    if context == "episode_end" and not episode_id:
        raise InvalidRequest("episode_id", "context=episode_end needs the episode_id just finished")
    if episode_id:
        try:
            episode = catalog.episode(episode_id)
        except KeyError:
            raise InvalidRequest("episode_id", f"unknown episode_id {episode_id!r}") from None
        if series_id and episode.series_id != series_id:
            raise InvalidRequest("series_id", f"episode {episode_id} is not in series {series_id}")
        series_id = episode.series_id
    return RecRequest(user_id, context, series_id or None, episode_id or None, n, country, device)


class RecommendationService:
    def __init__(
        self,
        settings: ServingSettings,
        recommender: Recommender,
        metrics: Metrics,
        cache: TtlCache,
        dropping: Callable[[Iterable[str], int], bool] = lambda _series, _now: False,
    ) -> None:
        self.s, self.recommender, self.metrics, self.cache = settings, recommender, metrics, cache
        self.secret = settings.edge_key_secret
        self.dropping = dropping  # (series ids, now ms) -> inside a drop window (serving/live_catalog.py)
        self.rates = RateMeter()

    def cache_key(self, req: RecRequest) -> str:
        uh = edge_keys.user_hash(req.user_id, self.secret)
        return f"{uh}|{req.context}|{req.series_id or ''}|{req.episode_id or ''}|{req.n}|{req.country}|{req.device}"

    async def get(self, req: RecRequest) -> tuple[Rendered, str]:
        """(rendered answer, cache status: hit | stale | miss | coalesced)."""

        key = self.cache_key(req)
        rate = self.rates.rate(key)  # before this request: a first request gets the base TTL
        self.rates.hit(key)

        async def compute() -> Computed:
            rec = await self.recommender.recommend(req)
            fresh = self.freshness(req, rec, rate)
            rendered = self.render(req, rec, fresh)
            # interned: an answer's series, episode and cohort tags recur across answers; the cache then
            # holds one string each, not one per answer (~1 KB an answer)
            tags = tuple(map(sys.intern, rendered.headers["xkey"].split()))
            return Computed(rendered.cached(), fresh.max_age_s, fresh.swr_s, tags=tags)

        cached, status = await self.cache.get_or_compute(key, compute)
        self.metrics.cache_lookup(status)
        self.metrics.cache_entries.set(len(self.cache))
        return Rendered.from_cached(cached), status

    def surrogate_keys(self, req: RecRequest, rec: Recommendation) -> list[str]:
        keys = [edge_keys.user_key(req.user_id, self.secret)]
        series = dict.fromkeys(([req.series_id] if req.series_id else []) + [p.series_id for p in rec.items])
        keys += [edge_keys.series_key(s) for s in series]
        episodes = dict.fromkeys(([req.episode_id] if req.episode_id else []) + [p.episode_id for p in rec.items])
        keys += [edge_keys.episode_key(e) for e in episodes]
        keys += [edge_keys.cohort_key(*rec.cohort), edge_keys.ALL]
        return keys

    def freshness(self, req: RecRequest, rec: Recommendation, rate_per_s: float = 0.0) -> Freshness:
        series = ([req.series_id] if req.series_id else []) + [p.series_id for p in rec.items]
        return edge_ttl(
            base_s=self.s.cache_ttl_s,
            swr_s=self.s.cache_swr_s,
            rate_per_s=rate_per_s,
            hot_max_s=self.s.hot_ttl_max_s,
            dropping=self.dropping(series, rec.freshness["generated_ms"]),
            drop_ttl_s=self.s.drop_ttl_s,
            degraded=rec.degraded,
            degraded_ttl_s=self.s.degraded_ttl_s,
        )

    def render(self, req: RecRequest, rec: Recommendation, fresh: Freshness | None = None) -> Rendered:
        body = {
            "items": [
                {
                    "episode_id": p.episode_id,
                    "series_id": p.series_id,
                    "episode_number": p.episode_number,
                    "score": round(p.score, 6),
                    "reason": p.reason,
                }
                for p in rec.items
            ],
            "rung": rec.rung,
            "ranking": rec.ranking,
            "fallbacks": rec.fallbacks,
            "bundle_version": rec.bundle_version,
            "freshness": rec.freshness,
            "context": req.context,
        }
        cache_control = (fresh or self.freshness(req, rec)).cache_control()
        keys = " ".join(self.surrogate_keys(req, rec))
        headers = {
            "Cache-Control": cache_control,
            "xkey": keys,
            "Surrogate-Key": keys,
            "X-Rung": rec.rung,
            "X-Bundle-Version": rec.bundle_version,
        }
        data = held_json(body)  # held by the cache: its own length, not orjson's buffer
        raw = (
            *_raw_headers(headers),
            *JSON_HEADERS,
            (b"content-length", str(len(data)).encode()),
        )
        return Rendered(data, headers, rec.rung, raw)
