"""HLS media playlists stitched from recommended episodes, and the chunk URL scheme. Pure, no I/O.

The playlist is one Media Playlist (RFC 8216 section 4.3.3) in fragmented MP4 (section 3.3):

    #EXTM3U
    #EXT-X-VERSION:7                    EXT-X-MAP in a Media Playlist needs version >= 6 (section 7)
    #EXT-X-TARGETDURATION:4             >= every EXTINF rounded to the nearest integer (4.3.3.1)
    #EXT-X-MEDIA-SEQUENCE:0
    #EXT-X-PLAYLIST-TYPE:VOD            the list does not change once served (4.3.3.5); the next
                                        next.m3u8 is a new resource
    #EXT-X-INDEPENDENT-SEGMENTS         every segment starts with a key frame (4.3.5.1)
    #EXT-X-MAP:URI="/chunks/s0001e013/720p/v1/init.mp4"     init section of the segments below (4.3.2.5)
    #EXTINF:4.000,s0001e013
    /chunks/s0001e013/720p/v1/0.m4s
    ...
    #EXT-X-DISCONTINUITY                next episode: new timestamps and init section (4.3.2.3)
    #EXT-X-MAP:URI="/chunks/s0001e014/720p/v1/init.mp4"
    ...
    #EXT-X-ENDLIST

Chunk URLs name the episode, the rendition, the episode's media version and the segment index, and
nothing else: they are the same for every viewer, so one cached chunk serves everyone. A re-encode
bumps the media version, which changes every URL of the episode; a cached chunk is therefore
immutable and can live for a year at the edge. Only the playlist is personal.

(LL-HLS `#EXT-X-PRELOAD-HINT` is left out: it announces partial segments of a live playlist; these
are whole VOD segments, so the hint travels as an HTTP `Link: <...>; rel=preload` header instead.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from cliffhanger.catalog import Episode

RENDITIONS = ("480p", "720p", "1080p")
DEFAULT_RENDITION = {"tv": "1080p", "web": "720p", "ios": "720p", "android": "720p"}
INIT = "init.mp4"
CONTENT_TYPE = "application/vnd.apple.mpegurl"
_SEGMENT = re.compile(r"^(0|[1-9][0-9]{0,5})\.m4s$")


def content_version(episode: Episode) -> int:
    """The episode's media revision. The catalog carries none yet, so every episode is at 1; when the
    encoder publishes re-encodes, their revision goes here and moves every chunk URL of the episode."""
    return 1


def segment_durations(duration_ms: int, segment_s: float) -> list[float]:
    """Durations (s) of an episode's segments: full segments, then the remainder."""
    total = duration_ms / 1000.0
    n = max(1, math.ceil(total / segment_s - 1e-9))
    return [segment_s] * (n - 1) + [round(total - segment_s * (n - 1), 3)]


def chunk_path(episode_id: str, rendition: str, version: int, index: int) -> str:
    return f"/chunks/{episode_id}/{rendition}/v{version}/{index}.m4s"


def init_path(episode_id: str, rendition: str, version: int) -> str:
    return f"/chunks/{episode_id}/{rendition}/v{version}/{INIT}"


def parse_chunk_name(name: str) -> int | None:
    """'init.mp4' -> -1, '12.m4s' -> 12; None for anything else."""
    if name == INIT:
        return -1
    m = _SEGMENT.match(name)
    return int(m.group(1)) if m else None


def episode_paths(episode: Episode, rendition: str, segment_s: float) -> list[str]:
    """Init section first, then every segment of the episode, in playback order."""
    v = content_version(episode)
    n = len(segment_durations(episode.duration_ms, segment_s))
    return [init_path(episode.episode_id, rendition, v)] + [
        chunk_path(episode.episode_id, rendition, v, i) for i in range(n)
    ]


def media_playlist(episodes: Sequence[Episode], rendition: str, segment_s: float) -> str:
    """One Media Playlist listing every segment of `episodes`, in order (module docstring)."""
    if rendition not in RENDITIONS:
        raise ValueError(f"unknown rendition {rendition!r}; known: {', '.join(RENDITIONS)}")
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        f"#EXT-X-TARGETDURATION:{math.ceil(segment_s)}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    for k, ep in enumerate(episodes):
        v = content_version(ep)
        if k:
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f'#EXT-X-MAP:URI="{init_path(ep.episode_id, rendition, v)}"')
        for i, seconds in enumerate(segment_durations(ep.duration_ms, segment_s)):
            lines.append(f"#EXTINF:{seconds:.3f},{ep.episode_id}")
            lines.append(chunk_path(ep.episode_id, rendition, v, i))
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def preload_paths(episodes: Sequence[Episode], rendition: str, segment_s: float, segments: int = 2) -> list[str]:
    """What the player needs first: the first episode's init section and its first `segments` segments."""
    if not episodes:
        return []
    paths = episode_paths(episodes[0], rendition, segment_s)
    return paths[: 1 + max(0, segments)]


def link_header(paths: Sequence[str]) -> str:
    """HTTP Link preload hints (RFC 8288 + the preload spec): `</chunks/...>; rel=preload; as=video`."""
    return ", ".join(f"<{p}>; rel=preload; as=video" for p in paths)
