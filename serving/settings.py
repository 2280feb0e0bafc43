"""Serving configuration: the ONE place for serving knobs, read from the environment at start-up.

Shared infrastructure settings (project, Bigtable instance, emulator ports) stay in
`cliffhanger.config.Settings`; this dataclass holds them in `.base` and adds what only serving uses.

Environment variables (all optional unless noted):

    CLIFFHANGER_BUNDLE_ROOT         model bundle root with a CURRENT pointer          (bundles)
    CLIFFHANGER_CATALOG             catalog.json path                                 (catalog.json)
    CLIFFHANGER_ADMIN_TOKEN         bearer token for /admin/*; unset = admin disabled (503)
    CLIFFHANGER_EDGE_KEY_SECRET     HMAC secret for user hashes (cache keys, xkey); required
    CLIFFHANGER_BUDGET_MS           whole-request deadline                            (50)
    CLIFFHANGER_FEATURE_TIMEOUT_MS  user-row read deadline before last-known features (20)
    CLIFFHANGER_RETRIEVAL_TIMEOUT_MS on-demand retrieval deadline before segment list (20)
    CLIFFHANGER_CANDIDATES          candidate pool size reranked per request          (500)
    CLIFFHANGER_MAX_PER_SERIES      at most k items per series in an answer           (2)
    CLIFFHANGER_BLEND               source ratios, e.g. two_tower=0.8,continue_watching=0.1,trending=0.1
    CLIFFHANGER_CACHE_TTL_S         in-process + edge freshness (max-age)             (5)
    CLIFFHANGER_CACHE_SWR_S         stale-while-revalidate window                     (30)
    CLIFFHANGER_CACHE_MAX_ENTRIES   in-process response cache size (LRU)              (50000)
    CLIFFHANGER_SHARED_TTL_S        TTL of shared rows (item features, segment lists) (30)
    CLIFFHANGER_BUNDLE_POLL_S       how often CURRENT is polled                       (5)
    CLIFFHANGER_DEFAULT_COUNTRY     country when the request names none               (US)
    CLIFFHANGER_DEFAULT_DEVICE      device when the request names none                (android)
    CLIFFHANGER_REPLICA_ID          this process's replica id when several serve one host ("": one replica);
                                    the two subscriptions below default to `<declared name>-<id>` then, and
                                    the process creates them on start (serving/pubsub_pull.py)
  Episode drops and edge TTLs (serving/ttl_policy.py, serving/live_catalog.py):
    CLIFFHANGER_CATALOG_SUBSCRIPTION  Pub/Sub subscription of catalog events; "" = off  (catalog-serving)
    CLIFFHANGER_DROP_WINDOW_S       a series is "dropping" this long around a release (600)
    CLIFFHANGER_DROP_TTL_S          max-age of answers naming a dropping series       (1)
    CLIFFHANGER_HOT_TTL_MAX_S       cap of the popularity-driven max-age              (30)
  Edge replica (serving/replica.py, serving/notice_feed.py):
    CLIFFHANGER_REPLICA_RECONCILE_S how often the hot set is re-read from Bigtable     (60)
    CLIFFHANGER_ITEM_CHANGES_SUBSCRIPTION  episode notices for the replica; "" = off   (item-changes-serving)
  Playlists and chunks (serving/hls.py, serving/chunks.py):
    CLIFFHANGER_PLAYLIST_EPISODES   episodes stitched into next.m3u8                  (3)
    CLIFFHANGER_SEGMENT_S           media segment duration                            (4)
    CLIFFHANGER_CHUNK_DIR           where sample chunk files are written and served   (var/chunks)
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

from cliffhanger import resources
from cliffhanger.config import Settings

# The Pub/Sub subscriptions a serving process pulls: settings field -> (env var, declared subscription).
FEED_SUBSCRIPTIONS = {
    "catalog_subscription": ("CLIFFHANGER_CATALOG_SUBSCRIPTION", resources.CATALOG_SERVING_SUBSCRIPTION),
    "item_changes_subscription": ("CLIFFHANGER_ITEM_CHANGES_SUBSCRIPTION", resources.ITEM_CHANGES_SERVING_SUBSCRIPTION),
}
_REPLICA_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.~+-]{0,62}")
DEFAULT_BLEND = {"two_tower": 0.8, "continue_watching": 0.1, "trending": 0.1}


class ServingConfigError(ValueError):
    """A serving setting is malformed; the message names the environment variable."""


def _num(env: Mapping[str, str], name: str, default: float, kind: type = float) -> float:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError as exc:
        raise ServingConfigError(f"{name} must be a {kind.__name__}, got {raw!r}") from exc
    if value < 0:
        raise ServingConfigError(f"{name} must be >= 0, got {raw!r}")
    return value


def replica_subscriptions(env: Mapping[str, str]) -> tuple[str, dict[str, str], dict[str, resources.Subscription]]:
    """(replica id, settings field -> subscription name, name -> declaration of the subscriptions this
    replica creates itself). An explicit CLIFFHANGER_*_SUBSCRIPTION always wins and is never created."""
    replica_id = env.get("CLIFFHANGER_REPLICA_ID", "")
    if replica_id and not _REPLICA_ID.fullmatch(replica_id):
        raise ServingConfigError(
            f"CLIFFHANGER_REPLICA_ID must be 1-63 letters, digits or -_.~+ starting with a letter or digit "
            f"(it becomes part of Pub/Sub subscription names), got {replica_id!r}"
        )
    names: dict[str, str] = {}
    owned: dict[str, resources.Subscription] = {}
    for field, (var, declared) in FEED_SUBSCRIPTIONS.items():
        if var in env:
            names[field] = env[var]
        elif replica_id:
            names[field] = f"{declared}-{replica_id}"
            owned[names[field]] = dataclasses.replace(resources.subscription(declared), name=names[field])
        else:
            names[field] = declared
    return replica_id, names, owned


def parse_blend(raw: str) -> dict[str, float]:
    """'two_tower=0.8,trending=0.2' -> normalised ratios; unknown sources or bad numbers fail."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, _, value = part.partition("=")
        if name not in DEFAULT_BLEND:
            raise ServingConfigError(f"CLIFFHANGER_BLEND: unknown source {name!r}; known: {', '.join(DEFAULT_BLEND)}")
        try:
            out[name] = float(value)
        except ValueError as exc:
            raise ServingConfigError(f"CLIFFHANGER_BLEND: {name} needs a number, got {value!r}") from exc
        if out[name] < 0:
            raise ServingConfigError(f"CLIFFHANGER_BLEND: {name} must be >= 0")
    total = sum(out.values())
    if total <= 0:
        raise ServingConfigError("CLIFFHANGER_BLEND: ratios must sum to more than 0")
    return {k: v / total for k, v in out.items()}


@dataclasses.dataclass(frozen=True)
class ServingSettings:
    base: Settings = dataclasses.field(default_factory=Settings)
    bundle_root: str = "bundles"
    catalog_path: str = "catalog.json"
    admin_token: str = dataclasses.field(default="", repr=False)
    edge_key_secret: bytes = dataclasses.field(default=b"", repr=False)
    budget_ms: float = 50.0
    feature_timeout_ms: float = 20.0
    retrieval_timeout_ms: float = 20.0
    candidates: int = 500
    max_per_series: int = 2
    default_n: int = 10
    max_n: int = 50
    blend: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_BLEND))
    cache_ttl_s: float = 5.0
    cache_swr_s: float = 30.0
    degraded_ttl_s: float = 1.0  # fallback answers: cached briefly, so recovery shows within a second
    cache_max_entries: int = 50_000
    shared_ttl_s: float = 30.0
    last_known_max_entries: int = 20_000  # ~11 KB a row (its 500-candidate list ~9.5): ~220 MB at most
    bundle_poll_s: float = 5.0
    default_country: str = "US"
    default_device: str = "android"
    executor_threads: int = 8
    table: str = "features"
    catalog_subscription: str = "catalog-serving"
    drop_window_s: float = 600.0
    drop_ttl_s: float = 1.0
    hot_ttl_max_s: float = 30.0
    replica_reconcile_s: float = 60.0
    item_changes_subscription: str = "item-changes-serving"
    replica_id: str = ""
    # name -> declaration (topic, ack deadline): the per-replica subscriptions this process creates if missing
    owned_subscriptions: Mapping[str, resources.Subscription] = dataclasses.field(default_factory=dict)
    playlist_episodes: int = 3
    segment_s: float = 4.0
    playlist_ttl_s: float = 2.0
    playlist_swr_s: float = 10.0
    chunk_dir: str = "var/chunks"

    def owned_subscription(self, subscription: str) -> resources.Subscription | None:
        """How to create `subscription` if it is missing (a per-replica one), else None."""
        return self.owned_subscriptions.get(subscription)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        env = os.environ if environ is None else environ
        secret = env.get("CLIFFHANGER_EDGE_KEY_SECRET", "")
        replica_id, subscriptions, owned = replica_subscriptions(env)
        return cls(
            base=Settings.from_env(env),
            bundle_root=env.get("CLIFFHANGER_BUNDLE_ROOT", cls.bundle_root),
            catalog_path=env.get("CLIFFHANGER_CATALOG", cls.catalog_path),
            admin_token=env.get("CLIFFHANGER_ADMIN_TOKEN", ""),
            edge_key_secret=secret.encode(),
            budget_ms=_num(env, "CLIFFHANGER_BUDGET_MS", cls.budget_ms),
            feature_timeout_ms=_num(env, "CLIFFHANGER_FEATURE_TIMEOUT_MS", cls.feature_timeout_ms),
            retrieval_timeout_ms=_num(env, "CLIFFHANGER_RETRIEVAL_TIMEOUT_MS", cls.retrieval_timeout_ms),
            candidates=int(_num(env, "CLIFFHANGER_CANDIDATES", cls.candidates, int)),
            max_per_series=int(_num(env, "CLIFFHANGER_MAX_PER_SERIES", cls.max_per_series, int)),
            blend=parse_blend(env["CLIFFHANGER_BLEND"]) if env.get("CLIFFHANGER_BLEND") else dict(DEFAULT_BLEND),
            cache_ttl_s=_num(env, "CLIFFHANGER_CACHE_TTL_S", cls.cache_ttl_s),
            cache_swr_s=_num(env, "CLIFFHANGER_CACHE_SWR_S", cls.cache_swr_s),
            cache_max_entries=int(_num(env, "CLIFFHANGER_CACHE_MAX_ENTRIES", cls.cache_max_entries, int)),
            shared_ttl_s=_num(env, "CLIFFHANGER_SHARED_TTL_S", cls.shared_ttl_s),
            bundle_poll_s=_num(env, "CLIFFHANGER_BUNDLE_POLL_S", cls.bundle_poll_s),
            default_country=env.get("CLIFFHANGER_DEFAULT_COUNTRY", cls.default_country),
            default_device=env.get("CLIFFHANGER_DEFAULT_DEVICE", cls.default_device),
            catalog_subscription=subscriptions["catalog_subscription"],
            drop_window_s=_num(env, "CLIFFHANGER_DROP_WINDOW_S", cls.drop_window_s),
            drop_ttl_s=_num(env, "CLIFFHANGER_DROP_TTL_S", cls.drop_ttl_s),
            hot_ttl_max_s=_num(env, "CLIFFHANGER_HOT_TTL_MAX_S", cls.hot_ttl_max_s),
            replica_reconcile_s=_num(env, "CLIFFHANGER_REPLICA_RECONCILE_S", cls.replica_reconcile_s),
            item_changes_subscription=subscriptions["item_changes_subscription"],
            replica_id=replica_id,
            owned_subscriptions=owned,
            playlist_episodes=int(_num(env, "CLIFFHANGER_PLAYLIST_EPISODES", cls.playlist_episodes, int)),
            segment_s=_num(env, "CLIFFHANGER_SEGMENT_S", cls.segment_s),
            chunk_dir=env.get("CLIFFHANGER_CHUNK_DIR", cls.chunk_dir),
        )
