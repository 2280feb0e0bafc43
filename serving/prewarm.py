"""Pre-warm the edge: fetch the first segments of trending and next-up episodes through Varnish, so the
first viewer of an episode starts from cache instead of the origin.

    python -m serving.prewarm --varnish-url http://127.0.0.1:6081 [--renditions 720p,1080p] [--segments 2]

What is warmed (`plan`):
  * trending: the hot set of serving/replica.py (each cohort's trending series' first episodes and the
    global list's top plays), read from Bigtable;
  * next-up: the episode after each top-played one (its viewers go there next), and every episode
    released within the drop window around now (a drop sends a series' audience to its new episode);
and for each, the init section plus the first `segments` segments (`warm_paths`) of each rendition.
Per viewer, as it happens, the streaming job pipelines/prewarm.py warms the episode after the one each
viewer just started (serving/nextup_warm.py); both fetch through `EdgeWarmer`.
A GET through Varnish on a miss stores the chunk for a year (chunks are immutable), so re-running the
job is cheap: what is already there answers as a HIT and costs the origin nothing.

Output: JSON {"paths", "hit", "miss", "errors", "seconds"} on stdout. Run it after each drop
(the catalog feed) and every few minutes from a scheduler (Cloud Scheduler -> a Cloud Run job).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import json
import sys
import time
from collections.abc import Iterable, Sequence

import httpx

from cliffhanger.catalog import Catalog, Episode
from serving import hls


@dataclasses.dataclass
class WarmReport:
    paths: int = 0
    hit: int = 0
    miss: int = 0
    errors: int = 0
    seconds: float = 0.0


def plan(
    catalog: Catalog,
    hot: Sequence[str],
    *,
    top_plays: Sequence[str] = (),
    now_ms: int | None = None,
    drop_window_ms: int = 600_000,
) -> list[Episode]:
    """Episodes to warm, most important first, each once: hot, then next-ups, then fresh drops."""
    out: dict[str, Episode] = {}

    def add(episode_id: str) -> None:
        try:
            out.setdefault(episode_id, catalog.episode(episode_id))
        except KeyError:
            return  # a list can name an episode the catalog no longer has: nothing to warm

    for e in hot:
        add(e)
    for e in top_plays:
        try:
            nxt = catalog.next_episode(e)
        except KeyError:
            continue
        if nxt is not None:
            add(nxt.episode_id)
    if now_ms is not None:
        for ep in catalog.episodes():
            if now_ms - drop_window_ms <= ep.release_time_ms <= now_ms:
                add(ep.episode_id)
    return list(out.values())


def warm_paths(
    episodes: Iterable[Episode], renditions: Sequence[str], segment_s: float, segments: int = 2
) -> list[str]:
    """Init section + first `segments` segments of each episode, per rendition."""
    return [p for ep in episodes for r in renditions for p in hls.preload_paths([ep], r, segment_s, segments)]


class EdgeWarmer:
    """The warming client: GETs chunk paths through the edge with at most `concurrency` in flight (a thread
    pool over one keep-alive client). Shared by this job, the next-up streaming job and the benchmark."""

    def __init__(self, edge_url: str, concurrency: int = 8, timeout_s: float = 5.0) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._client = httpx.Client(base_url=edge_url, timeout=timeout_s, limits=limits)
        self._pool = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="edge-warm")

    def fetch(self, paths: Sequence[str]) -> list[str | None]:
        """The edge's answer per path, in order: "HIT" (was cached), "MISS" (fetched from the origin, now
        cached) or None (an error or a non-200 answer: nothing was cached)."""
        return list(self._pool.map(self._one, paths))

    def warm(self, paths: Sequence[str]) -> WarmReport:
        start = time.perf_counter()
        report = tally(self.fetch(paths))
        report.seconds = round(time.perf_counter() - start, 3)
        return report

    def _one(self, path: str) -> str | None:
        try:
            r = self._client.get(path)
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            return None
        return "HIT" if r.headers.get("x-cache") == "HIT" else "MISS"

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()

    def __enter__(self) -> EdgeWarmer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tally(answers: Sequence[str | None]) -> WarmReport:
    """EdgeWarmer.fetch answers -> counts (seconds left at 0)."""
    return WarmReport(
        paths=len(answers),
        hit=sum(a == "HIT" for a in answers),
        miss=sum(a == "MISS" for a in answers),
        errors=sum(a is None for a in answers),
    )


async def warm(varnish_url: str, paths: Sequence[str], concurrency: int = 8, timeout_s: float = 5.0) -> WarmReport:
    """GET each path through the edge; counts what was already cached (HIT) and what was fetched."""

    def run() -> WarmReport:
        with EdgeWarmer(varnish_url, concurrency, timeout_s) as warmer:
            return warmer.warm(paths)

    return await asyncio.to_thread(run)


def main(argv: list[str] | None = None) -> int:
    from cliffhanger.events import DEVICES
    from serving import candidates as cand_mod
    from serving.feature_store import FeatureStore
    from serving.replica import hot_episodes
    from serving.settings import ServingSettings
    from transforms import rowkeys

    parser = argparse.ArgumentParser(description="Warm the first segments of trending and next-up episodes")
    parser.add_argument("--varnish-url", required=True)
    parser.add_argument("--renditions", default="720p", help=f"comma-separated: {','.join(hls.RENDITIONS)}")
    parser.add_argument("--segments", type=int, default=2)
    parser.add_argument("--top", type=int, default=50, help="top-played episodes of the global list")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    renditions = [r for r in args.renditions.split(",") if r]
    if bad := [r for r in renditions if r not in hls.RENDITIONS]:
        parser.error(f"--renditions: unknown {bad}; known: {', '.join(hls.RENDITIONS)}")
    s = ServingSettings.from_env()
    catalog = Catalog.load(s.catalog_path)
    store = FeatureStore.open(s.base.project, s.base.bigtable_instance, s.table)
    countries = sorted({c for series in catalog for c in series.licensing})
    cohort_keys = [rowkeys.cohort_key(c, d) for c in countries for d in DEVICES]
    rows = store.read([*cohort_keys, cand_mod.global_row()], timeout_s=10)
    global_row = rows.get(cand_mod.global_row())
    hot = hot_episodes(catalog, [rows.get(k) for k in cohort_keys], global_row, top_plays=args.top)
    top = hot_episodes(catalog, [], global_row, top_plays=args.top)
    episodes = plan(
        catalog, hot, top_plays=top, now_ms=int(time.time() * 1000), drop_window_ms=int(s.drop_window_s * 1000)
    )
    paths = warm_paths(episodes, renditions, s.segment_s, args.segments)
    report = asyncio.run(warm(args.varnish_url, paths, args.concurrency))
    json.dump(dataclasses.asdict(report), sys.stdout)
    sys.stdout.write("\n")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
