"""Chunk hit rate at the edge when the synthetic world's real viewing sessions are replayed (goal >= 0.9).

    python -m benchmarks.chunk_replay --out out/chunk_replay.json [--users 2000 --events 15000 --lag-s 10]

Viewer requests. What a player fetches is derived from the world's event log: every play of an episode
fetches its init section and the segments up to the furthest position the viewer reached (progress /
complete / skip events), in the rendition its device's playlist names (`hls.DEFAULT_RENDITION`, as
serving/app.py does). A segment is requested when playback comes within `--player-buffer-s` (hls.js's
default 30 s) of it, from the play_start's event time. Those requests go, in time order, through the
real Varnish with infra/varnish/default.vcl to a local origin serving the sample chunks (serving/chunks.py,
the same files and headers as the serving API's /chunks route). The hit rate is the share of VIEWER
requests Varnish answered from cache (`X-Cache: HIT`); warming GETs are not counted in it.

Modes (each on a fresh Varnish):
  cold           nothing warmed.
  prewarmed      trending, at start: init + first 2 segments of every episode of the top
                 `--prewarm-series` series, ranked by plays in the replayed log itself (hindsight: an
                 upper bound for yesterday's trending list).
  nextup         event-driven, what pipelines/prewarm.py does: each play_start of episode k, once it
                 has reached the job (arrival time + `--lag-s`), makes the same code
                 (serving/nextup_warm.next_up + WarmedSet, serving/prewarm.EdgeWarmer) fetch episode k+1
                 through Varnish before any later viewer request. Assumption: the job lags the event by
                 seconds (publish -> 24 chunks at the edge took 0.2 s on the DirectRunner in
                 tests/pipelines/test_prewarm.py), while a binge viewer reaches k+1 a full episode
                 (1-3 min) later; `lag_sensitivity` shows what a slower job costs.
  nextup_firsts  nextup, plus at start episode 1 of every series in each rendition in use (what a young
                 catalog of a few dozen series would warm: every new viewer enters a series there). The
                 headline `hit_rate` is this mode's.

Cost, per mode: `warm_requests` (origin fetches the warming caused, i.e. warm GETs that MISSed),
`warm_gets` (every warming GET the edge answered, HITs included: re-warms after an hour and episodes
viewers had already pulled in), `warmed_unused_chunks` (warmed chunks no viewer fetched in the replay,
also as a share of `warm_requests`) and `origin_fetches` (viewer misses + warm misses). A set model of
the cache (`simulate`: no eviction, instant fetches) is computed next to every Varnish run as a
cross-check and for the sensitivity tables, which are model-only and say so: the job's lag, how many
segments of the next episode are warmed, and a share of plays running one rendition lower than the
device's (the warm covers only the device's rendition).

Limits: synthetic viewers enter a series at episode 1 or where they left off and never switch
rendition, seek or deep-link, which is what makes next-up so effective here; real traffic has ABR
rendition switches, seeks and evictions. The replay is the first `--events` log messages (about 6 hours
of a day), so episodes warmed near its end count as unused.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.server
import json
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import httpx

from cliffhanger.catalog import Catalog
from cliffhanger.events import EventError, PlaybackEvent, parse_event
from cliffhanger.localstack import Varnish
from serving import chunks, hls
from serving.nextup_warm import ENTRY_RENDITIONS, WarmedSet, WarmJob, first_episodes, next_up, rendition_for
from serving.prewarm import EdgeWarmer

SEGMENT_S = 4.0
PLAYER_BUFFER_S = 30.0
RENDITIONS = ENTRY_RENDITIONS  # what pipelines/prewarm.py warms episode 1 in
LOWER = {"1080p": "720p", "720p": "480p"}
MODES = ("cold", "prewarmed", "nextup", "nextup_firsts")
HEADLINE = "nextup_firsts"


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    time_ms: int
    path: str


@dataclasses.dataclass(frozen=True, slots=True)
class Arrival:
    arrival_ms: int
    event: PlaybackEvent


def parse_log(messages) -> list[Arrival]:
    """(arrival_ms, payload) pairs -> valid events with their arrival, malformed ones left out."""
    out = []
    for arrival_ms, payload in messages:
        try:
            out.append(Arrival(arrival_ms, parse_event(payload)))
        except EventError:
            continue
    return out


def viewer_requests(
    events: list[PlaybackEvent],
    catalog: Catalog,
    segment_s: float = SEGMENT_S,
    buffer_s: float = PLAYER_BUFFER_S,
    downgrade_share: float = 0.0,
) -> list[Request]:
    """Chunk requests in the order players make them: on a play, init + segment 0; as the viewer moves
    through the episode (progress / complete / skip), every segment up to the position reached, each
    requested when playback is within `buffer_s` of it. A `downgrade_share` of plays (chosen by a hash of
    session and episode) run one rendition below the device's, as a player on a slow network would."""
    fetched: dict[tuple[str, str], int] = {}  # (session, episode) -> segments fetched so far
    started: dict[tuple[str, str], tuple[int, int]] = {}  # -> (play_start time, position)
    out: list[Request] = []
    for e in sorted(events, key=lambda e: e.event_time_ms):
        if e.event_type not in ("play_start", "progress", "complete", "skip"):
            continue
        try:
            episode = catalog.episode(e.episode_id)
        except KeyError:
            continue
        rendition, version = rendition_for(e.device), hls.content_version(episode)
        key = (e.session_id, e.episode_id)
        if downgrade_share and zlib.crc32(f"{key}".encode()) < downgrade_share * 2**32:
            rendition = LOWER.get(rendition, rendition)
        n_segments = len(hls.segment_durations(episode.duration_ms, segment_s))
        if e.event_type == "play_start" and key not in fetched:
            out.append(Request(e.event_time_ms, hls.init_path(e.episode_id, rendition, version)))
            resume_at = min(n_segments - 1, int(e.position_ms / 1000 // segment_s))  # a resume starts there
            fetched[key], started[key] = resume_at, (e.event_time_ms, e.position_ms)
        t0, p0 = started.get(key, (e.event_time_ms, e.position_ms))
        reached = min(n_segments, int(e.position_ms / 1000 // segment_s) + 1)
        for index in range(fetched.get(key, 0), reached):
            due = t0 + max(0, int(index * segment_s * 1000) - p0 - int(buffer_s * 1000))
            out.append(Request(min(due, e.event_time_ms), hls.chunk_path(e.episode_id, rendition, version, index)))
        fetched[key] = max(fetched.get(key, 0), reached)
    out.sort(key=lambda r: r.time_ms)  # stable: a session's requests keep their order
    return out


def sessions_from_log(payloads, catalog: Catalog, segment_s: float = SEGMENT_S) -> list[str]:
    """The chunk paths of `viewer_requests`, for payloads without arrival times."""
    events = [a.event for a in parse_log((0, p) for p in payloads)]
    return [r.path for r in viewer_requests(events, catalog, segment_s)]


def nextup_jobs(
    arrivals: list[Arrival], catalog: Catalog, lag_ms: int, segments: int | None = None, segment_s: float = SEGMENT_S
) -> list[tuple[int, WarmJob]]:
    """(time the warm is done, job) for each play_start, deduplicated as the job does, in arrival order."""
    warmed, out = WarmedSet(), []
    for a in sorted(arrivals, key=lambda a: a.arrival_ms):
        job = next_up(catalog, a.event, segment_s, segments)
        if job is not None and warmed.claim(job.key, a.event.event_time_ms):
            out.append((a.arrival_ms + lag_ms, job))
    return out


def trending_paths(events: list[PlaybackEvent], catalog: Catalog, top_series: int) -> list[str]:
    plays: dict[str, int] = {}
    for e in events:
        if e.event_type == "play_start":
            plays[e.series_id] = plays.get(e.series_id, 0) + 1
    top = sorted(plays, key=lambda s: -plays[s])[:top_series]
    return [
        p
        for sid in top
        for ep in catalog.series(sid).episodes
        for r in RENDITIONS
        for p in hls.preload_paths([ep], r, SEGMENT_S, segments=2)
    ]


def simulate(requests: list[Request], start: list[str], jobs: list[tuple[int, WarmJob]]) -> dict:
    """The cache as a set (no eviction, fetches instant): viewer hits and the warming's cost."""
    cache, warmed = set(), set()
    warm_gets, warm_fetches, hits, k = 0, 0, 0, 0

    def warm(paths) -> None:
        nonlocal warm_gets, warm_fetches
        warm_gets += len(paths)
        for p in paths:
            if p not in cache:
                cache.add(p)
                warmed.add(p)
                warm_fetches += 1

    warm(start)
    for r in requests:
        while k < len(jobs) and jobs[k][0] <= r.time_ms:
            warm(jobs[k][1].paths)
            k += 1
        hits += r.path in cache
        cache.add(r.path)
    unused = len(warmed - {r.path for r in requests})
    return {
        "hit_rate": round(hits / len(requests), 4) if requests else None,
        "warm_gets": warm_gets,
        "warm_requests": warm_fetches,
        "warmed_unused_chunks": unused,
        "warmed_unused_share": round(unused / warm_fetches, 4) if warm_fetches else None,
    }


def chunk_origin(catalog: Catalog, root: Path, segment_s: float = SEGMENT_S) -> http.server.ThreadingHTTPServer:
    """A local origin for /chunks/{episode}/{rendition}/v{version}/{name}, as the serving API's route.
    `server.requests` lists every path it served (the origin fetches)."""
    store = chunks.ChunkStore(root, segment_s)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: Varnish reuses its backend connections
        disable_nagle_algorithm = True  # headers and body are two writes: without it each fetch waits ~40 ms

        def do_GET(self):
            parts = self.path.split("?")[0].strip("/").split("/")
            try:
                if len(parts) != 5 or parts[0] != "chunks" or not parts[3].startswith("v"):
                    raise chunks.ChunkNotFound(self.path)
                data = store.locate(catalog, parts[1], parts[2], int(parts[3][1:]), parts[4]).read_bytes()
            except (chunks.ChunkNotFound, ValueError):
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            server.requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", chunks.content_type(parts[4]))
            self.send_header("Cache-Control", chunks.CACHE_CONTROL)
            self.send_header("xkey", f"media-{parts[1]}")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        request_queue_size = 128  # the default 5 refuses a burst of warming fetches (Varnish: 503)

    server = Server(("127.0.0.1", 0), Handler)
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _lru_nuked(varnish: Varnish) -> int | None:
    """Objects Varnish evicted for space (MAIN.n_lru_nuked); None if varnishstat cannot say."""
    try:
        out = subprocess.run(
            ["varnishstat", "-n", str(varnish.workdir / "n"), "-1", "-j", "-f", "MAIN.n_lru_nuked"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        data = json.loads(out)
        return int(data.get("counters", data)["MAIN.n_lru_nuked"]["value"])
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        return None


def replay(edge_url: str, requests: list[Request], start: list[str], jobs: list[tuple[int, WarmJob]]) -> dict:
    """Warm `start`, then each viewer request in time order, each job's warm done before the requests
    that come after its time. -> viewer hits and the warming's edge answers."""
    hits: list[bool] = []
    errors, warm_hit, warm_miss, warm_errors, k = 0, 0, 0, 0, 0
    t0 = time.perf_counter()
    with EdgeWarmer(edge_url) as warmer, httpx.Client(base_url=edge_url, timeout=10) as client:
        report = warmer.warm(start)
        warm_hit, warm_miss, warm_errors = report.hit, report.miss, report.errors
        for r in requests:
            while k < len(jobs) and jobs[k][0] <= r.time_ms:
                report = warmer.warm(jobs[k][1].paths)
                warm_hit, warm_miss, warm_errors = (
                    warm_hit + report.hit,
                    warm_miss + report.miss,
                    warm_errors + report.errors,
                )
                k += 1
            got = client.get(r.path)
            errors += got.status_code != 200
            hits.append(got.status_code == 200 and got.headers.get("x-cache") == "HIT")
    second_half = hits[len(hits) // 2 :]
    return {
        "hit_rate": round(sum(hits) / len(hits), 4) if hits else None,
        "steady_state_hit_rate": round(sum(second_half) / len(second_half), 4) if second_half else None,
        "hits": sum(hits),
        "errors": errors,
        "warm_gets": warm_hit + warm_miss + warm_errors,
        "warm_requests": warm_miss,
        "warm_errors": warm_errors,
        "origin_fetches": len(hits) - sum(hits) + warm_miss,
        "replay_s": round(time.perf_counter() - t0, 1),
    }


def first_paths(arrivals: list[Arrival], catalog: Catalog, segments: int | None = None) -> list[str]:
    """Episode 1 of every series released when the replay starts, in each rendition in use."""
    at_ms = min(a.event.event_time_ms for a in arrivals)
    return [p for job in first_episodes(catalog, RENDITIONS, SEGMENT_S, at_ms, segments) for p in job.paths]


def _plan(mode: str, arrivals: list[Arrival], catalog: Catalog, args) -> tuple[list[str], list[tuple[int, WarmJob]]]:
    start: list[str] = []
    if mode == "prewarmed":
        start = trending_paths([a.event for a in arrivals], catalog, args.prewarm_series)
    if mode == "nextup_firsts":
        start = first_paths(arrivals, catalog)
    jobs = nextup_jobs(arrivals, catalog, int(args.lag_s * 1000)) if mode.startswith("nextup") else []
    return start, jobs


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--series", type=int, default=20, help="a young app's catalog: viewers concentrate")
    parser.add_argument("--events", type=int, default=15_000, help="log messages replayed (arrival order)")
    parser.add_argument("--prewarm-series", type=int, default=10)
    parser.add_argument("--lag-s", type=float, default=10.0, help="play_start arrival -> next-up warmed")
    parser.add_argument("--player-buffer-s", type=float, default=PLAYER_BUFFER_S)
    parser.add_argument("--varnish-storage", default="malloc,256m", help="varnishd -s (an edge PoP holds GBs)")
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if bad := [m for m in modes if m not in MODES]:
        parser.error(f"--modes: unknown {bad}; known: {', '.join(MODES)}")
    from cliffhanger.synth import generate

    g = generate(args.seed, "default", n_users=args.users, n_series=args.series, days=1)
    catalog = g.world.catalog
    arrivals = parse_log((m.arrival_ms, m.payload) for m in g.messages[: args.events])
    requests = viewer_requests([a.event for a in arrivals], catalog, SEGMENT_S, args.player_buffer_s)
    result: dict = {
        "viewing_events": min(args.events, len(g.messages)),
        "chunk_requests": len(requests),
        "distinct_chunks": len({r.path for r in requests}),
        "segment_s": SEGMENT_S,
        "lag_s": args.lag_s,
        "player_buffer_s": args.player_buffer_s,
        "varnish_storage": args.varnish_storage,
        "world": {"users": args.users, "series": args.series, "episodes": sum(len(s.episodes) for s in catalog)},
    }
    for mode in modes:
        start, jobs = _plan(mode, arrivals, catalog, args)
        with tempfile.TemporaryDirectory(prefix="chunks-") as root:
            origin = chunk_origin(catalog, Path(root))
            varnish = Varnish(backend=f"127.0.0.1:{origin.server_address[1]}", storage=args.varnish_storage)
            varnish.start(timeout_s=30)
            try:
                measured = replay(varnish.url, requests, start, jobs)
                measured["lru_nuked"] = _lru_nuked(varnish)
            finally:
                varnish.stop()
                origin.shutdown()
        model = simulate(requests, start, jobs)
        measured["warmed_at_start"] = len(start)
        measured["warmed_unused_chunks"] = model["warmed_unused_chunks"]
        measured["warmed_unused_share"] = model["warmed_unused_share"]
        measured["model_hit_rate"] = model["hit_rate"]
        result[mode] = measured
        print(f"  {mode:14s} hit rate {measured['hit_rate']:.4f} (model {model['hit_rate']:.4f})", flush=True)
    firsts = first_paths(arrivals, catalog)
    by_lag = {
        str(lag_s): simulate(requests, firsts, nextup_jobs(arrivals, catalog, lag_s * 1000))["hit_rate"]
        for lag_s in (0, 10, 30, 60, 90, 120, 300)
    }
    result["lag_sensitivity"] = {"mode": HEADLINE, "model_only": True, "hit_rate_by_lag_s": by_lag}
    by_segments = {
        "all" if n is None else str(n): simulate(
            requests, first_paths(arrivals, catalog, n), nextup_jobs(arrivals, catalog, int(args.lag_s * 1000), n)
        )
        for n in (2, 8, 12, 16, None)
    }
    result["segments_warmed"] = {"mode": HEADLINE, "model_only": True, "by_segments": by_segments}
    jobs = nextup_jobs(arrivals, catalog, int(args.lag_s * 1000))
    by_share = {}
    for share in (0.05, 0.1, 0.2):
        slower = viewer_requests([a.event for a in arrivals], catalog, SEGMENT_S, args.player_buffer_s, share)
        by_share[str(share)] = simulate(slower, firsts, jobs)["hit_rate"]
    result["rendition_downgrades"] = {"mode": HEADLINE, "model_only": True, "hit_rate_by_share_of_plays": by_share}
    if HEADLINE in result:
        result["hit_rate"] = result[HEADLINE]["hit_rate"]
        result["hit_rate_mode"] = HEADLINE
    result["goal_hit_rate"] = 0.9
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    lines = [
        f"chunk hit rate over {len(requests):,} viewer chunk requests from {result['viewing_events']:,} logged events"
        f" of {args.users:,} viewers and {args.series} series (real Varnish, next-up lag {args.lag_s:g} s):"
    ]
    for mode in modes:
        m = result[mode]
        lines.append(
            f"  {mode:14s} {m['hit_rate']:.3f}  (second half {m['steady_state_hit_rate']:.3f}; warm origin fetches "
            f"{m['warm_requests']:,}, unused {m['warmed_unused_share'] or 0:.1%}; "
            f"origin fetches {m['origin_fetches']:,})"
        )
    lines.append(f"  goal >= 0.9 -> {out}")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    run(sys.argv[1:])
