"""Bundle hot-swap: poll CURRENT, load a new version fully off the request path, swap one reference.

    holder = BundleHolder()
    watcher = BundleWatcher(root, holder, executor, metrics)
    await watcher.check_now()          # first load (lifespan), and /admin/reload
    task = watcher.start()             # polls every poll_s

A request reads `holder.current` ONCE and uses that object to the end, so requests in flight finish on
the bundle they started with while new ones get the new bundle: the swap is one attribute assignment.
Everything that can fail is done before the swap: `models.bundle.load_bundle` verifies checksums,
version stamps and the feature-schema hash (serving builds `models.ranker_features.MICRODRAMA_FEATURES`,
the spec the training pipeline stamps into its bundles), the query tower is
loaded and run once, the ranker scores a full pool once. A refused version is logged with its reason,
counted (`cliffhanger_bundle_refused_total{reason}`), remembered (not retried until CURRENT names
another version) and the old bundle keeps serving.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np

from models.bundle import BundleError, LoadedBundle, current_version, load_bundle
from models.query_features import QueryContext
from serving.background import BackgroundLoop
from serving.metrics import Metrics
from serving.rerank import SERVING_SPEC, RankerSpecError, check_spec
from serving.retrieval import QueryEncoder

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ServingBundle:
    version: str
    bundle: LoadedBundle
    encoder: QueryEncoder

    @property
    def ranker(self) -> Any:
        return self.bundle.ranker

    @property
    def index(self) -> Any:
        return self.bundle.index


class BundleHolder:
    """The one reference requests read; `current` is None until the first bundle loads."""

    def __init__(self) -> None:
        self.current: ServingBundle | None = None


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, RankerSpecError) or "feature schema" in text:
        return "schema_mismatch"
    if "checksum" in text or "sha256" in text:
        return "corrupt"
    if isinstance(exc, BundleError):
        return "invalid"
    return "load_error"


def load_serving_bundle(root: str, version: str, pool_size: int) -> ServingBundle:
    """Load + verify + warm one version. Raises on anything that would break serving."""
    path = root if root.startswith("gs://") else os.path.join(root, "versions", version)
    bundle = load_bundle(path, expected_schema_hash=SERVING_SPEC.schema_hash)
    check_spec(SERVING_SPEC)
    if bundle.ranker is None or bundle.index is None:
        raise BundleError(f"bundle {version}: ranker or index missing")
    if bundle.ranker.n_features != SERVING_SPEC.n_features:
        raise RankerSpecError(
            f"ranker takes {bundle.ranker.n_features} features, serving builds {SERVING_SPEC.n_features}"
        )
    encoder = QueryEncoder(bundle.load_query_tower())
    embedding = encoder.encode(QueryContext("warmup", None, "US", "android", 0))
    if embedding.shape[0] != bundle.index.dim:
        raise BundleError(
            f"bundle {version}: query tower emits {embedding.shape[0]} dims, index has {bundle.index.dim}"
        )
    bundle.index.search_one(embedding, k=min(pool_size, len(bundle.index)))
    scores = bundle.ranker.score(np.zeros((pool_size, SERVING_SPEC.n_features), np.float32))
    if scores.shape != (pool_size,) or not np.isfinite(scores).all():
        raise BundleError(f"bundle {version}: ranker warm-up returned {scores.shape} / non-finite scores")
    return ServingBundle(bundle.version, bundle, encoder)


class BundleWatcher(BackgroundLoop):
    def __init__(
        self,
        root: str,
        holder: BundleHolder,
        executor: Executor,
        metrics: Metrics,
        *,
        poll_s: float = 5.0,
        pool_size: int = 500,
        on_swap: Callable[[ServingBundle], None] | None = None,
    ) -> None:
        self.root, self.holder, self.executor, self.metrics = root, holder, executor, metrics
        self.poll_s, self.pool_size, self.on_swap = poll_s, pool_size, on_swap
        self.refused: dict[str, str] = {}  # version -> reason
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None

    async def check_now(self) -> dict[str, Any]:
        """Look at CURRENT once; load and swap if it names a new, acceptable version."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            try:
                version = await loop.run_in_executor(self.executor, current_version, self.root)
            except Exception as exc:  # an unreadable pointer: keep serving, say why
                log.warning("bundle root %s unreadable: %s", self.root, exc)
                self.metrics.bundle_refused.labels("pointer_unreadable").inc()
                return {"swapped": False, "error": str(exc), "version": self._version()}
            current = self._version()
            if version is None or version == current:
                return {"swapped": False, "version": current}
            if version in self.refused:
                return {"swapped": False, "version": current, "refused": version, "reason": self.refused[version]}
            try:
                loaded = await loop.run_in_executor(
                    self.executor, load_serving_bundle, self.root, version, self.pool_size
                )
            except Exception as exc:  # refused: logged, counted, remembered; the old bundle keeps serving
                reason = _reason(exc)
                self.refused[version] = f"{reason}: {exc}"
                self.metrics.bundle_refused.labels(reason).inc()
                log.error("refusing bundle %s (%s): %s; still serving %s", version, reason, exc, current)
                return {"swapped": False, "version": current, "refused": version, "reason": self.refused[version]}
            self.holder.current = loaded  # the swap: one reference; in-flight requests hold the old object
            self.metrics.bundle_swaps.inc()
            self.metrics.set_bundle(current, loaded.version)
            log.info("serving bundle %s (was %s)", loaded.version, current)
            if self.on_swap is not None:
                self.on_swap(loaded)
            return {"swapped": True, "version": loaded.version, "previous": current}

    def _version(self) -> str | None:
        return self.holder.current.version if self.holder.current is not None else None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            await self.check_now()
