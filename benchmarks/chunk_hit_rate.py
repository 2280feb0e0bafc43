"""Chunk hit rate at the edge for replayed viewing sessions (goal: >= 0.9).

    python -m benchmarks.chunk_hit_rate --varnish-url http://127.0.0.1:6081 --users u000001,u000002,... \
        [--country US --device android] [--segments 8] --out chunk_hit_rate.json

A viewing session is what a player fetches, in order: each user's `next.m3u8` through the edge, then
for every listed episode its init section and its first `--segments` segments (a viewer who swipes
away mid-episode fetches only the start). Sessions are replayed one after another, as viewers arrive;
the hit rate is the share of chunk requests Varnish answered from cache (`X-Cache: HIT`). Playlists
are personal and not counted: the claim is about shared media.

Against a running stack (serving + Varnish with infra/varnish/default.vcl), optionally after
`python -m serving.prewarm`. `replay_session` is the building block other benchmarks use
(benchmarks/invalidation.py).

Output JSON: {"sessions", "chunk_requests", "hits", "hit_rate", "hit_rate_first_session",
"hit_rate_after_first", "errors", "segments_per_episode"}.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import httpx


def session_from_playlist(text: str, segments_per_episode: int | None = None) -> list[str]:
    """Chunk paths a player fetches for this playlist, in order: each episode's init section
    (EXT-X-MAP) and its first `segments_per_episode` segments (all when None)."""
    out: list[str] = []
    taken = 0
    for line in text.splitlines():
        if line.startswith("#EXT-X-MAP:"):
            out.append(line.split('URI="', 1)[1].split('"', 1)[0])
            taken = 0
        elif line and not line.startswith("#"):
            if segments_per_episode is None or taken < segments_per_episode:
                out.append(line)
            taken += 1
    return out


def replay_session(varnish_url: str, session: Sequence[str], client: httpx.Client | None = None) -> float:
    """GET every chunk path of `session` through the edge, in order; the share answered from cache.
    A failed request (non-200) counts as a miss. An empty session has hit rate 1.0 (nothing missed)."""
    if not session:
        return 1.0
    own = client is None
    client = client or httpx.Client(base_url=varnish_url, timeout=5)
    try:
        hits = 0
        for path in session:
            r = client.get(path)
            hits += r.status_code == 200 and r.headers.get("x-cache") == "HIT"
        return hits / len(session)
    finally:
        if own:
            client.close()


def replay_users(
    varnish_url: str, users: Sequence[str], *, country: str, device: str, segments: int | None
) -> dict[str, float | int | None]:
    """Fetch each user's playlist through the edge and replay its session; aggregate stats."""
    rates: list[tuple[float, int]] = []
    errors = 0
    with httpx.Client(base_url=varnish_url, timeout=5) as client:
        for uid in users:
            r = client.get(f"/v1/users/{uid}/next.m3u8", params={"country": country, "device": device})
            if r.status_code != 200:
                errors += 1
                continue
            session = session_from_playlist(r.text, segments)
            rates.append((replay_session(varnish_url, session, client), len(session)))
    total = sum(n for _, n in rates)
    hits = sum(rate * n for rate, n in rates)
    rest = sum(n for _, n in rates[1:])
    return {
        "sessions": len(rates),
        "chunk_requests": total,
        "hits": round(hits),
        "hit_rate": round(hits / total, 4) if total else None,
        "hit_rate_first_session": round(rates[0][0], 4) if rates else None,
        "hit_rate_after_first": round(sum(r * n for r, n in rates[1:]) / rest, 4) if rest else None,
        "errors": errors,
        "segments_per_episode": segments,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--varnish-url", required=True)
    parser.add_argument("--users", required=True, help="comma-separated user ids, replayed in this order")
    parser.add_argument("--country", default="US")
    parser.add_argument("--device", default="android")
    parser.add_argument("--segments", type=int, default=8, help="segments watched per episode (0 = all)")
    parser.add_argument("--out", default="chunk_hit_rate.json")
    args = parser.parse_args(argv)
    users = [u for u in args.users.split(",") if u]
    result = replay_users(
        args.varnish_url, users, country=args.country, device=args.device, segments=args.segments or None
    )
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
