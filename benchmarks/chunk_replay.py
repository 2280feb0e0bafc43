"""Chunk hit rate at the edge when the synthetic world's real viewing sessions are replayed (goal >= 0.9).

    python -m benchmarks.chunk_replay --out out/chunk_replay.json [--users 2000 --events 15000]

What a player fetches is derived from the world's event log, in arrival order: every play of an
episode fetches its init section and the segments up to the furthest position the viewer reached
(progress / complete / skip events), in the rendition of the viewer's device. Those requests go
through the real Varnish with infra/varnish/default.vcl to a local origin serving the sample chunks
(serving/chunks.py, the same files and headers as the serving API's /chunks route). The hit rate is
the share Varnish answered from cache (`X-Cache: HIT`). Viewers of the same episode share its chunks:
personalization never enters a chunk URL, so popular episodes are fetched from the origin once.
Also reported: the rate with pre-warming (the first two segments of every episode of the day's top
series fetched before the replay, as serving.prewarm does for trending and next-up episodes).
"""

from __future__ import annotations

import argparse
import http.server
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from cliffhanger.catalog import Catalog
from cliffhanger.events import EventError, parse_event
from cliffhanger.localstack import Varnish
from serving import chunks, hls

SEGMENT_S = 4.0
RENDITION = {"ios": "720p", "android": "720p", "web": "1080p", "tv": "1080p"}


def sessions_from_log(payloads, catalog: Catalog, segment_s: float = SEGMENT_S) -> list[str]:
    """Chunk paths in the order players fetch them: on a play, init + segment 0; as the viewer moves
    through the episode (progress / complete / skip), every segment up to the position reached."""
    fetched: dict[tuple[str, str], int] = {}  # (session, episode) -> segments fetched so far
    out: list[str] = []
    for payload in payloads:
        try:
            e = parse_event(payload)
        except EventError:
            continue
        if e.event_type not in ("play_start", "progress", "complete", "skip"):
            continue
        try:
            episode = catalog.episode(e.episode_id)
        except KeyError:
            continue
        rendition = RENDITION.get(e.device, "720p")
        version = hls.content_version(episode)
        key = (e.session_id, e.episode_id)
        n_segments = len(hls.segment_durations(episode.duration_ms, segment_s))
        if e.event_type == "play_start" and key not in fetched:
            out.append(hls.init_path(e.episode_id, rendition, version))
            fetched[key] = 0
        reached = min(n_segments, int(e.position_ms / 1000 // segment_s) + 1)
        for index in range(fetched.get(key, 0), reached):
            out.append(hls.chunk_path(e.episode_id, rendition, version, index))
        fetched[key] = max(fetched.get(key, 0), reached)
    return out


def _origin(catalog: Catalog, root: Path) -> http.server.ThreadingHTTPServer:
    store = chunks.ChunkStore(root, SEGMENT_S)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # /chunks/{episode}/{rendition}/v{version}/{name}
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
            self.send_response(200)
            self.send_header("Content-Type", chunks.content_type(parts[4]))
            self.send_header("Cache-Control", chunks.CACHE_CONTROL)
            self.send_header("xkey", f"media-{parts[1]}")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _replay(client: httpx.Client, paths: list[str]) -> tuple[list[bool], int]:
    """GET each path in order; -> (hit per request, errors)."""
    hits, errors = [], 0
    for path in paths:
        r = client.get(path)
        errors += r.status_code != 200
        hits.append(r.status_code == 200 and r.headers.get("x-cache") == "HIT")
    return hits, errors


def _prewarm_paths(payloads, catalog: Catalog, top_series: int) -> list[str]:
    plays: dict[str, int] = {}
    for p in payloads:
        try:
            e = parse_event(p)
        except EventError:
            continue
        if e.event_type == "play_start":
            plays[e.series_id] = plays.get(e.series_id, 0) + 1
    top = sorted(plays, key=lambda s: -plays[s])[:top_series]
    return [
        path
        for sid in top
        for ep in catalog.series(sid).episodes
        for rendition in sorted(set(RENDITION.values()))
        for path in hls.preload_paths([ep], rendition, SEGMENT_S, segments=2)
    ]


def run(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--series", type=int, default=20, help="a young app's catalog: viewers concentrate")
    parser.add_argument("--events", type=int, default=15_000, help="log messages replayed (arrival order)")
    parser.add_argument("--prewarm-series", type=int, default=10)
    args = parser.parse_args(argv)
    from cliffhanger.synth import generate

    g = generate(args.seed, "default", n_users=args.users, n_series=args.series, days=1)
    payloads = [m.payload for m in g.messages[: args.events]]
    catalog = g.world.catalog
    paths = sessions_from_log(payloads, catalog)
    result: dict = {
        "viewing_events": len(payloads),
        "chunk_requests": len(paths),
        "segment_s": SEGMENT_S,
        "world": {"users": args.users, "series": args.series, "episodes": sum(len(s.episodes) for s in catalog)},
    }
    for mode in ("cold", "prewarmed"):
        origin = _origin(catalog, Path(tempfile.mkdtemp(prefix="chunks-")))
        varnish = Varnish(backend=f"127.0.0.1:{origin.server_address[1]}")
        varnish.start(timeout_s=30)
        try:
            with httpx.Client(base_url=varnish.url, timeout=10) as client:
                warm = _prewarm_paths(payloads, catalog, args.prewarm_series) if mode == "prewarmed" else []
                _replay(client, warm)
                t0 = time.perf_counter()
                hits, errors = _replay(client, paths)
                second_half = hits[len(hits) // 2 :]
                result[mode] = {
                    "hit_rate": round(sum(hits) / len(hits), 4) if hits else None,
                    "steady_state_hit_rate": round(sum(second_half) / len(second_half), 4) if second_half else None,
                    "hits": sum(hits),
                    "errors": errors,
                    "prewarmed_chunks": len(warm),
                    "replay_s": round(time.perf_counter() - t0, 1),
                }
        finally:
            varnish.stop()
            origin.shutdown()
    result["hit_rate"] = result["cold"]["hit_rate"]
    result["goal_hit_rate"] = 0.9
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(
        f"chunk hit rate over {len(paths):,} chunk requests from {len(payloads):,} logged events of "
        f"{args.users:,} viewers and {args.series} series (real Varnish):\n"
        f"  cold       {result['cold']['hit_rate']:.3f}  (second half of the replay: {result['cold']['steady_state_hit_rate']:.3f})\n"
        f"  prewarmed  {result['prewarmed']['hit_rate']:.3f}  (second half: {result['prewarmed']['steady_state_hit_rate']:.3f})\n"
        f"  goal >= 0.9 -> {out}"
    )
    return result


if __name__ == "__main__":
    run(sys.argv[1:])
