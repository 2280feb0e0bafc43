"""The ASGI app: `create_app(settings, ...)`. Handlers are a few lines; the work is in plain modules.

    GET  /v1/users/{user_id}/recommendations?context=episode_end&series_id=&episode_id=&n=&country=&device=
    GET  /v1/users/{user_id}/next.m3u8?episode_id=&country=&device=&rendition=   HLS playlist (serving/playlists.py)
    GET  /chunks/{episode_id}/{rendition}/v{version}/{init.mp4 | N.m4s}      sample media (serving/chunks.py)
    GET  /healthz            the process is up
    GET  /readyz             503 until the catalog, the feature store client and a bundle are loaded
    GET  /metrics            Prometheus (per-stage latency, cache hit ratio, fallbacks, bundle)
    POST /admin/reload       look at the bundle CURRENT pointer now     (Authorization: Bearer <token>)
    POST /admin/purge        drop in-process answers by surrogate key   {"keys": ["s-s0001", ...]}
    GET  /docs, /openapi.json

Status codes come from ONE place (`_domain_error`): InvalidRequest -> 400 {"error", "field"} (FastAPI's
422 is mapped to the same shape), NotReady -> 503, AdminError -> its status. A slow or dead dependency
is never an error: the recommender degrades and says so in `rung` / `fallbacks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel

from cliffhanger import edge_keys
from cliffhanger.catalog import Catalog
from cliffhanger.events import DEVICES
from serving import candidates as cand_mod
from serving import chunks as chunks_mod
from serving import hls, kernels, replica
from serving.bundle_watch import BundleHolder, BundleWatcher
from serving.cache import TtlCache
from serving.catalog_feed import CatalogFeed
from serving.fast_path import FastPath, RawHeaders
from serving.feature_store import FeatureStore
from serving.live_catalog import CatalogChange, LiveCatalog
from serving.metrics import Metrics
from serving.notice_feed import NoticeFeed
from serving.playlists import PlaylistService
from serving.recommend import NotReady, Recommender
from serving.service import (
    JSON_HEADERS,
    NO_STORE,
    RECOMMENDATION_QUERY,
    InvalidRequest,
    RecommendationService,
    parse_n,
    validate,
)
from serving.settings import ServingSettings
from serving.shared import SharedRows
from transforms import rowkeys

log = logging.getLogger(__name__)


class AdminError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Item(BaseModel):
    episode_id: str
    series_id: str
    episode_number: int
    score: float
    reason: str


class RecommendationsOut(BaseModel):
    """Documentation of the answer (the handler streams pre-rendered bytes, so it is not re-validated)."""

    items: list[Item]
    rung: str
    ranking: str
    fallbacks: list[str]
    bundle_version: str
    freshness: dict[str, Any]
    context: str


@dataclasses.dataclass
class ServingState:
    settings: ServingSettings
    metrics: Metrics
    catalog: Catalog | None = None
    store: FeatureStore | None = None
    holder: BundleHolder | None = None
    watcher: BundleWatcher | None = None
    shared: SharedRows | None = None
    cache: TtlCache | None = None
    service: RecommendationService | None = None
    live: LiveCatalog | None = None
    playlists: PlaylistService | None = None
    replica: replica.EdgeReplica | None = None

    @property
    def ready(self) -> bool:
        return (
            self.service is not None
            and self.holder is not None
            and self.holder.current is not None
            and self.shared is not None
            and self.shared.first_pass_done
        )


def _shared_keys(catalog: Catalog) -> list[bytes]:
    countries = sorted({c for s in catalog for c in s.licensing})
    keys = [cand_mod.global_row()]
    for country in countries:
        for device in DEVICES:
            keys += [cand_mod.segment_row(country, device), rowkeys.cohort_key(country, device)]
    return keys


def _reader(settings: ServingSettings, injected: Catalog | None) -> Callable[[], Catalog] | None:
    """How the live catalog re-reads its source (None when a test injected a catalog object)."""
    return None if injected is not None else lambda: Catalog.load(settings.catalog_path)


def _catalog_changed(state: ServingState, recommender: Recommender, catalog: Catalog, change: CatalogChange) -> None:
    """An applied catalog event: everything derived from the catalog follows it, and answers that named
    the series are dropped in process (the edge copy is purged by the invalidation pipeline)."""
    state.catalog = catalog
    recommender.set_catalog(catalog)
    state.shared.track_episodes(e.episode_id for e in catalog.series(change.event.series_id).episodes)
    state.cache.purge_tags([edge_keys.series_key(change.event.series_id)])


def _hot_set(state: ServingState) -> list[str]:
    countries = sorted({c for s in state.catalog for c in s.licensing})
    cohorts = [state.shared.row(rowkeys.cohort_key(c, d)) for c in countries for d in DEVICES]
    return replica.hot_episodes(state.catalog, cohorts, state.shared.row(cand_mod.global_row()))


def settle_heap() -> None:
    """After a bundle is loaded: collect once, then freeze what survives (TensorFlow, the bundle, the
    catalog: millions of long-lived objects) out of the collector's reach. Without it, a full collection
    walks them all, and one such pause (measured ~0.3-0.4 s) lands in a request's tail latency. The
    previous bundle is unfrozen first so it can be freed."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def create_app(
    settings: ServingSettings,
    *,
    store: FeatureStore | None = None,
    bundle_root: str | None = None,
    catalog: Catalog | None = None,
    clock: Callable[[], int] = lambda: int(time.time() * 1000),
) -> FastAPI:
    """`clock` returns wall time in ms (licensing windows, freshness); injected by tests."""
    if not settings.edge_key_secret:
        raise edge_keys.MissingSecretError(f"{edge_keys.SECRET_ENV} is not set: user hashes need a secret")
    metrics = Metrics()
    state = ServingState(settings, metrics)
    root = bundle_root or settings.bundle_root

    chunk_store = chunks_mod.ChunkStore(settings.chunk_dir, settings.segment_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: C901 - wiring only
        kernels.warm()  # compiled loops (serving/kernels.py): ~0.2 s from numba's cache, before any request
        executor = ThreadPoolExecutor(settings.executor_threads, thread_name_prefix="serving")
        s = settings
        state.catalog = catalog or Catalog.load(s.catalog_path)
        state.store = store or FeatureStore.open(s.base.project, s.base.bigtable_instance, s.table)
        state.holder = BundleHolder()
        state.shared = SharedRows(state.store, executor, metrics, ttl_s=s.shared_ttl_s, wall_ms=clock)
        state.shared.track_episodes(e.episode_id for e in state.catalog.episodes())
        state.shared.track(_shared_keys(state.catalog))
        state.cache = TtlCache(s.cache_ttl_s, s.cache_swr_s, s.cache_max_entries)
        state.watcher = BundleWatcher(
            root,
            state.holder,
            executor,
            metrics,
            poll_s=s.bundle_poll_s,
            pool_size=s.candidates,
            on_swap=lambda _b: (state.cache.clear(), settle_heap()),  # answers name the bundle: drop the old ones
        )
        recommender = Recommender(
            s,
            store=state.store,
            catalog=state.catalog,
            bundles=state.holder,
            shared=state.shared,
            executor=executor,
            metrics=metrics,
            user_hash=lambda uid: edge_keys.user_hash(uid, s.edge_key_secret),
            wall_ms=clock,
            recent_drops=lambda now_ms: state.live.recent_drops(now_ms) if state.live is not None else [],
        )
        state.live = LiveCatalog(state.catalog, window_ms=int(s.drop_window_s * 1000), reload=_reader(s, catalog))
        state.live.on_change(lambda cat, change: _catalog_changed(state, recommender, cat, change))
        dropping = state.live.dropping
        state.service = RecommendationService(s, recommender, metrics, state.cache, dropping=dropping)
        state.playlists = PlaylistService(s, state.service, lambda: state.live.current, dropping=dropping)
        state.replica = replica.EdgeReplica(state.store, metrics, on_update=state.shared.put_item)
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(
                replica.reconcile_forever(
                    state.replica,
                    lambda: _hot_set(state),
                    lambda: state.holder.current.bundle if state.holder.current else None,
                    executor,
                    s.replica_reconcile_s,
                )
            )
        ]
        own = s.owned_subscription  # per-replica subscriptions (CLIFFHANGER_REPLICA_ID): created if missing
        feed = CatalogFeed(
            s.base.project, s.catalog_subscription, state.live.apply, metrics, create=own(s.catalog_subscription)
        )
        if s.catalog_subscription:
            tasks.append(feed.start())
        notices = NoticeFeed(
            s.base.project, s.item_changes_subscription, state.replica, metrics, create=own(s.item_changes_subscription)
        )
        if s.item_changes_subscription:  # episode notices keep the replica fresh between reconciliations
            tasks.append(notices.start())
        state.shared.start()
        first_load = loop.create_task(state.watcher.check_now())  # /readyz 503 meanwhile
        state.watcher.start()
        unwatch_gc = metrics.watch_gc()  # cliffhanger_gc_pause_seconds: a full collection stalls the loop
        try:
            yield
        finally:
            first_load.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # the cancellations we asked for
            await feed.stop()
            await notices.stop()
            await state.watcher.stop()
            await state.shared.stop()
            executor.shutdown(wait=False, cancel_futures=True)
            unwatch_gc()

    app = FastAPI(title="Cliffhanger serving", version="1", lifespan=lifespan)
    app.state.serving = state

    async def _domain_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, RequestValidationError):
            loc = exc.errors()[0].get("loc", ("request",)) if exc.errors() else ("request",)
            field = str(loc[-1])
            exc = InvalidRequest(field, f"{field}: {exc.errors()[0].get('msg', 'invalid value')}")
        if isinstance(exc, InvalidRequest):
            metrics.bad_requests.labels(exc.field).inc()
            body, status = {"error": str(exc), "field": exc.field}, 400
        elif isinstance(exc, NotReady):
            body, status = {"error": str(exc)}, 503
        elif isinstance(exc, AdminError):
            body, status = {"error": str(exc)}, exc.status
        else:
            raise exc
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    for exc_type in (RequestValidationError, InvalidRequest, NotReady, AdminError):
        app.add_exception_handler(exc_type, _domain_error)

    def service() -> RecommendationService:
        if not state.ready:
            raise NotReady("not ready: the model bundle is still loading")
        return state.service

    def require_admin(request: Request) -> None:
        token = settings.admin_token
        if not token:
            raise AdminError(503, "admin endpoints are disabled: set CLIFFHANGER_ADMIN_TOKEN to enable them")
        given = request.headers.get("authorization", "")
        if not given:
            raise AdminError(401, "admin endpoints need 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise AdminError(403, "wrong admin token")

    async def answer(user_id: str, query: Mapping[str, str]) -> tuple[int, RawHeaders, bytes]:
        """THE recommendations answer (serving/fast_path.py serves it; the FastAPI route documents it):
        (status, encoded headers, body); a bad parameter is a 400 naming the field, not ready a 503."""
        try:
            svc = service()
            req = validate(
                settings, state.catalog, user_id=user_id, context=query.get("context") or "home",
                series_id=query.get("series_id"), episode_id=query.get("episode_id"),
                n=parse_n(query.get("n")), country=query.get("country"), device=query.get("device"),
            )  # fmt: skip
            rendered, status = await svc.get(req)
        except InvalidRequest as exc:
            metrics.bad_requests.labels(exc.field).inc()
            return _error_answer(400, {"error": str(exc), "field": exc.field})
        except NotReady as exc:
            return _error_answer(503, {"error": str(exc)})
        return 200, [*rendered.raw_headers, (b"x-serving-cache", status.encode())], rendered.body

    @app.get(
        "/v1/users/{user_id}/recommendations",
        response_model=None,
        responses={200: {"model": RecommendationsOut}},
        openapi_extra={"parameters": RECOMMENDATION_QUERY},
    )
    @app.head("/v1/users/{user_id}/recommendations", include_in_schema=False)
    async def recommendations(user_id: str, request: Request) -> Response:
        # serving/fast_path.py answers a plain GET itself; this route documents the endpoint and answers
        # HEAD (caches and probes) and any GET the fast path passes on. Query parameters are described in
        # RECOMMENDATION_QUERY and checked by service.validate (400 naming the field), not declared as
        # FastAPI parameters.
        status, headers, body = await answer(user_id, request.query_params)
        kept = {k.decode(): v.decode() for k, v in headers if k not in (b"content-length", b"content-type")}
        return Response(body, status_code=status, media_type="application/json", headers=kept)

    @app.get("/v1/users/{user_id}/next.m3u8", response_model=None)
    async def next_playlist(
        user_id: str,
        episode_id: str | None = Query(None, description="the episode just finished: its next one leads"),
        country: str | None = Query(None),
        device: str | None = Query(None),
        rendition: str | None = Query(None, description=" | ".join(hls.RENDITIONS)),
    ) -> Response:
        service()
        req = validate(
            settings, state.catalog, user_id=user_id, context="episode_end" if episode_id else "home",
            series_id=None, episode_id=episode_id, n=settings.playlist_episodes, country=country, device=device,
        )  # fmt: skip
        rendition = rendition or hls.DEFAULT_RENDITION[req.device]
        if rendition not in hls.RENDITIONS:
            raise InvalidRequest("rendition", f"rendition must be one of {', '.join(hls.RENDITIONS)}")
        playlist, status = await state.playlists.get(req, rendition)
        headers = {**playlist.headers, "X-Serving-Cache": status}
        return Response(playlist.body, media_type=hls.CONTENT_TYPE, headers=headers)

    @app.get("/chunks/{episode_id}/{rendition}/v{version}/{name}", response_model=None)
    @app.head("/chunks/{episode_id}/{rendition}/v{version}/{name}", include_in_schema=False)  # one operation id
    async def chunk(episode_id: str, rendition: str, version: str, name: str) -> Response:
        if state.live is None:
            raise NotReady("not started")
        try:
            path = chunk_store.locate(state.live.current, episode_id, rendition, int(version), name)
        except (chunks_mod.ChunkNotFound, ValueError) as exc:
            metrics.chunks.labels("not_found").inc()
            return JSONResponse({"error": str(exc)}, status_code=404, headers={"Cache-Control": "no-store"})
        metrics.chunks.labels("served").inc()
        headers = {"Cache-Control": chunks_mod.CACHE_CONTROL, "xkey": f"media-{episode_id}"}
        return FileResponse(path, media_type=chunks_mod.content_type(name), headers=headers)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        version = state.holder.current.version if state.ready else None
        body = {"ready": state.ready, "bundle_version": version, "catalog_loaded": state.catalog is not None}
        return JSONResponse(body, status_code=200 if state.ready else 503, headers={"Cache-Control": "no-store"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return PlainTextResponse(metrics.render(), headers={"Cache-Control": "no-store"})

    @app.post("/admin/reload")
    async def admin_reload(request: Request) -> Response:
        require_admin(request)
        if state.watcher is None:
            raise NotReady("not started")
        return JSONResponse(await state.watcher.check_now(), headers={"Cache-Control": "no-store"})

    @app.post("/admin/purge")
    async def admin_purge(request: Request, keys: list[str] = Body(..., embed=True)) -> Response:
        require_admin(request)
        if state.cache is None:
            raise NotReady("not started")
        purged = state.cache.clear() if edge_keys.ALL in keys else state.cache.purge_tags(keys)
        return JSONResponse({"purged": purged}, headers={"Cache-Control": "no-store"})

    return FastPath(app, answer)  # type: ignore[return-value] - an ASGI app with the FastAPI app's attributes


def _error_answer(status: int, body: dict[str, Any]) -> tuple[int, RawHeaders, bytes]:
    data = orjson.dumps(body)
    return status, [*JSON_HEADERS, (b"content-length", str(len(data)).encode()), NO_STORE], data
