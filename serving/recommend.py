"""The request path and its degradation ladder. Knows nothing of HTTP.

One answer = one user-row read (families u, cw, done, cand in ONE ReadRows with a hard deadline) +
in-process shared rows (item features, cohort trending, segment lists; see serving/shared.py) +
blend + ONNX rerank + series rules. Every dependency has a deadline inside the request budget, and
each failure moves the answer one rung down instead of failing it:

    rung                 served from                                   when
    personalized         the user's precomputed two-tower list         the normal path
    stale_features       the last known user row (its list included)   user-row read timed out / failed
    on_demand_retrieval  query tower + ScaNN from the loaded bundle    no precomputed list
    segment              the country x device list (g#US#ios)          no list and retrieval too slow / failed,
                                                                       or an unknown user
    popularity           the global list (g#global)                    no segment list
    catalog_default      first episodes of licensed series             nothing above is available

Orthogonal to the rung: `ranking` is "onnx", or "retrieval_order" when the ranker fails; `fallbacks`
lists every degradation taken (e.g. feature_read_timeout, retrieval_timeout, ranker_error).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Any

import numpy as np

from cliffhanger.catalog import Catalog
from serving import blend as blend_mod
from serving import candidates as cand_mod
from serving import rerank, rules
from serving.bundle_watch import BundleHolder, ServingBundle
from serving.feature_store import FeatureRow, FeatureStore
from serving.last_known import LastKnown
from serving.metrics import Metrics
from serving.retrieval import retrieve
from serving.settings import ServingSettings
from serving.shared import SharedRows
from transforms import rowkeys

RUNGS = ("personalized", "stale_features", "on_demand_retrieval", "segment", "popularity", "catalog_default")
FALLBACK_RUNGS = frozenset(RUNGS[1:])
CONTEXTS = ("episode_end", "home")
REASONS = {
    blend_mod.TWO_TOWER: "recommended_for_you",
    blend_mod.CONTINUE_WATCHING: "continue_watching",
    blend_mod.TRENDING: "trending_in_your_region",
    "segment": "popular_in_your_region",
    "popularity": "popular",
    "catalog_default": "new_to_you",
}


class NotReady(RuntimeError):
    """No bundle or catalog loaded yet."""


@dataclasses.dataclass(frozen=True)
class RecRequest:
    user_id: str
    context: str
    series_id: str | None
    episode_id: str | None
    n: int
    country: str
    device: str


@dataclasses.dataclass
class Recommendation:
    items: list[rules.Pick]
    rung: str
    ranking: str
    fallbacks: list[str]
    bundle_version: str
    freshness: dict[str, Any]
    cohort: tuple[str, str]

    @property
    def degraded(self) -> bool:
        return self.rung in FALLBACK_RUNGS or self.ranking != "onnx" or bool(self.fallbacks)


class Recommender:
    def __init__(
        self,
        settings: ServingSettings,
        *,
        store: FeatureStore,
        catalog: Catalog,
        bundles: BundleHolder,
        shared: SharedRows,
        executor: Executor,
        metrics: Metrics,
        user_hash: Callable[[str], str],
        wall_ms: Callable[[], int],
        recent_drops: Callable[[int], list[str]] = lambda _now_ms: [],
    ) -> None:
        self.s, self.store, self.catalog, self.bundles = settings, store, catalog, bundles
        self.shared, self.executor, self.metrics = shared, executor, metrics
        self.user_hash, self.wall_ms = user_hash, wall_ms
        self.recent_drops = recent_drops  # now_ms -> series that just dropped an episode (LiveCatalog)
        self.last_known = LastKnown(settings.last_known_max_entries)
        self.episodes = rerank.EpisodeTable.from_catalog(catalog)

    def set_catalog(self, catalog: Catalog) -> None:
        """A newer catalog (an episode dropped): the rules and the ranker's episode table follow it. On
        the event loop, between requests' steps; catalogs only grow or change licensing, so a request
        that straddles the swap mixes two consistent views, never a broken one."""
        self.episodes = rerank.EpisodeTable.from_catalog(catalog)
        self.catalog = catalog

    async def recommend(self, req: RecRequest) -> Recommendation:
        start = time.perf_counter()
        deadline = start + self.s.budget_ms / 1000
        bundle = self.bundles.current  # read ONCE: a hot-swap mid-request does not mix bundles
        if bundle is None:
            raise NotReady("no model bundle loaded yet")
        now_ms = self.wall_ms()
        fallbacks: list[str] = []
        stage = self.metrics.stages

        row, stale = await self._user_row(req.user_id, deadline, fallbacks)
        t = time.perf_counter()
        stage["feature_read"].observe(t - start)
        u = row.values.get("u") if row is not None else None
        cw = row.values.get("cw", {}) if row is not None else {}
        done = row.values.get("done", {}) if row is not None else {}

        rung, retrieval = await self._candidates(req, bundle, row, stale, deadline, fallbacks)
        t2 = time.perf_counter()
        stage["retrieval"].observe(t2 - t)

        cohort_row = self.shared.row(rowkeys.cohort_key(req.country, req.device))
        trending = cohort_row.get("i", "trending_series", []) if cohort_row is not None else []
        trending = blend_mod.with_new_releases(trending, self.recent_drops(now_ms))
        sources = {
            blend_mod.TWO_TOWER: retrieval,
            blend_mod.CONTINUE_WATCHING: blend_mod.continue_watching_items(cw, self.catalog) if cw else [],
            blend_mod.TRENDING: blend_mod.trending_items(trending, cw, self.catalog) if trending else [],
        }
        episodes = self.episodes  # read once: blend's rows are the rows the reranker gathers by
        pool = blend_mod.blend(sources, self.s.blend, self.s.candidates, index=episodes)
        if rung in ("segment", "popularity", "catalog_default"):  # the list stands in for two-tower
            pool = pool.relabel(blend_mod.TWO_TOWER, rung)
        t3 = time.perf_counter()
        stage["blend"].observe(t3 - t2)

        rows, order, values, ranking, item_cover, top = self._rerank(bundle, episodes, pool, u, cw, fallbacks)
        t4 = time.perf_counter()
        stage["rerank"].observe(t4 - t3)

        stats = rules.RuleStats(unknown=pool.unknown)  # blend leaves out ids the catalog does not know
        nxt = None
        if req.context == "episode_end" and req.episode_id:
            nxt = rules.next_episode_to_watch(self.catalog, req.episode_id, done, req.country, now_ms)
        picks = rules.apply_rules_rows(
            rows,
            order,
            values,
            pool.source_codes,
            pool.names,
            table=episodes,
            country=req.country,
            now_ms=now_ms,
            completed=done,
            n=req.n,
            max_per_series=self.s.max_per_series,
            next_episode=nxt,
            next_score=top,
            stats=stats,
            entry_points=cw,
            backfill=self._backfill(req),  # fewer than n survive the rules: top up
        )
        picks = [rules.Pick(*p[:4], REASONS.get(p.reason, p.reason)) for p in picks]
        for name, count in vars(stats).items():
            if count:
                self.metrics.rules_dropped[name].inc(count)
        end = time.perf_counter()
        stage["rules"].observe(end - t4)
        stage["recommend"].observe(end - start)

        feature_ts = row.newest_ms("u") if row is not None else 0
        shared_age = self.shared.age_ms()
        freshness = {
            "feature_age_ms": max(0, now_ms - feature_ts) if feature_ts else None,
            "served_stale": stale or "last_known_features" in fallbacks or item_cover < 1.0,
            "stale_parts": (["user_features"] if stale else []) + (["item_features"] if item_cover < 1.0 else []),
            "item_features_coverage": round(item_cover, 4),
            "shared_rows_age_ms": shared_age,
            "generated_ms": now_ms,
        }
        for reason in fallbacks:
            self.metrics.fallback_reasons[reason].inc()
        self.metrics.answers[rung, ranking].inc()
        return Recommendation(picks, rung, ranking, fallbacks, bundle.version, freshness, (req.country, req.device))

    async def _user_row(self, user_id: str, deadline: float, fallbacks: list[str]) -> tuple[FeatureRow | None, bool]:
        """(row or None, stale). None + not stale = an unknown user."""
        key = rowkeys.user_key(user_id)
        timeout = min(self.s.feature_timeout_ms / 1000, max(0.001, deadline - time.perf_counter()))
        try:  # on the event loop (grpc.aio, hard deadline); the timeout is the backstop if the channel hangs
            async with asyncio.timeout(timeout + 0.005):  # no task per request, unlike wait_for
                rows = await self.store.read_async([key], timeout)
        except Exception as exc:  # any read failure degrades to the last known row; counted per reason
            fallbacks.append("feature_read_timeout" if _is_timeout(exc) else "feature_read_error")
            last = self.last_known.get(self.user_hash(user_id))
            if last is not None:
                fallbacks.append("last_known_features")
            return last, True
        row = rows.get(key)
        if row is not None:
            self.last_known.put(self.user_hash(user_id), row)
        return row, False

    async def _candidates(
        self,
        req: RecRequest,
        bundle: ServingBundle,
        row: FeatureRow | None,
        stale: bool,
        deadline: float,
        fallbacks: list[str],
    ) -> tuple[str, blend_mod.SourceItems]:
        """(rung, best-first candidates: a parsed list's columns, or (episode_id, score) pairs)."""
        k = self.s.candidates
        raw = row.get(cand_mod.FAMILY, cand_mod.COLUMN) if row is not None else None
        if raw is not None:
            try:
                return ("stale_features" if stale else "personalized"), cand_mod.parse(raw).head(k)
            except (cand_mod.CandidateListError, TypeError, ValueError):
                fallbacks.append("candidate_list_corrupt")
        if row is not None and row.values.get("u"):
            items = await self._on_demand(req, bundle, row, deadline, fallbacks)
            if items:
                return "on_demand_retrieval", items
        elif row is None and not stale:
            fallbacks.append("unknown_user")
        for rung, key in (
            ("segment", cand_mod.segment_row(req.country, req.device)),
            ("popularity", cand_mod.global_row()),
        ):
            shared = self.shared.row(key)
            raw = shared.get(cand_mod.FAMILY, cand_mod.COLUMN) if shared is not None else None
            if raw is None:
                continue
            try:
                return rung, cand_mod.parse(raw).head(k)
            except (cand_mod.CandidateListError, TypeError, ValueError):
                fallbacks.append(f"{rung}_list_corrupt")
        fallbacks.append("no_candidate_lists")
        return "catalog_default", self._catalog_default(k)

    async def _on_demand(
        self, req: RecRequest, bundle: ServingBundle, row: FeatureRow, deadline: float, fallbacks: list[str]
    ) -> list[tuple[str, float]] | None:
        timeout = min(self.s.retrieval_timeout_ms / 1000, deadline - time.perf_counter())
        if timeout <= 0:
            fallbacks.append("retrieval_skipped_budget")
            return None
        hour = (self.wall_ms() // 3_600_000) % 24
        call = lambda: retrieve(  # noqa: E731
            bundle.encoder,
            bundle.index,
            user_id=req.user_id,
            user_features=row.values.get("u"),
            country=req.country,
            device=req.device,
            hour=hour,
            k=self.s.candidates,
        )
        try:
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(self.executor, call), timeout)
        except Exception as exc:  # too slow or failed: the segment list takes over
            fallbacks.append("retrieval_timeout" if _is_timeout(exc) else "retrieval_error")
            return None

    def _backfill(self, req: RecRequest) -> Iterable[rules.Ranked]:
        """Lazily, after the ranked candidates: the segment list, then the catalog's first episodes.
        The rules consume it only when the ranked pool could not fill `n` (a narrow list, licensing)."""
        shared = self.shared.row(cand_mod.segment_row(req.country, req.device))
        raw = shared.get(cand_mod.FAMILY, cand_mod.COLUMN) if shared is not None else None
        if raw is not None:
            try:
                segment = cand_mod.parse(raw)
            except (cand_mod.CandidateListError, TypeError, ValueError):
                segment = None
            if segment is not None:
                for episode_id, score in zip(segment.ids, segment.scores.tolist(), strict=True):
                    yield rules.Ranked(episode_id, score, "segment")
        for episode_id, score in self._catalog_default(len(self.catalog)):
            yield rules.Ranked(episode_id, score, "catalog_default")

    def _catalog_default(self, k: int) -> list[tuple[str, float]]:
        out = []
        for series in self.catalog:
            if series.episodes:
                out.append((series.episodes[0].episode_id, 0.0))
            if len(out) >= k:
                break
        return out

    def _rerank(
        self,
        bundle: ServingBundle,
        episodes: rerank.EpisodeTable,
        pool: blend_mod.Pool,
        u: Any,
        cw: dict,
        fallbacks: list[str],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, float, float]:
        """(the pool's rows in `episodes`, their ranking: positions best first, the score of each,
        ranking name, item-feature coverage, top score)."""
        rows = pool.rows_in(episodes)  # blend's own rows: no second pass over ids
        stat_rows, store = self.shared.item_rows_by_table(episodes, rows)
        cover = int(np.count_nonzero(stat_rows)) / len(pool) if len(pool) else 1.0
        try:  # the trainer's mapping (models.ranker_features): ctx_* columns come from cw, as in training
            X = rerank.feature_matrix(
                pool, user_u=u, user_cw=cw, episodes=episodes, item_stats=store, rows=rows, stat_rows=stat_rows
            )
            order, scores = rerank.rank_order(pool, bundle.ranker.score(X))
            return rows, order, scores, "onnx", cover, float(scores[order[0]]) if len(scores) else 1.0
        except Exception:  # ranker failure: serve retrieval order, counted as a fallback
            fallbacks.append("ranker_error")
            return rows, *rerank.retrieval_ranking(pool), "retrieval_order", cover, 1.0


def _is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return True
    code = getattr(exc, "code", None)
    try:
        return callable(code) and code().name == "DEADLINE_EXCEEDED"
    except Exception:  # not a grpc error after all
        return False
