"""A tiny static origin for sample media chunks (the local stack has no encoder or object store).

    store = ChunkStore("var/chunks", segment_s=4)
    path = store.locate(catalog, "s0001e013", "720p", 1, "0.m4s")    # Path of the file, or ChunkNotFound

A chunk is generated on its first request, deterministically (the same bytes on every machine and
every run: a hash stream of its URL parts, wrapped in ISO BMFF box headers so it looks like fMP4 to a
sniffer), written atomically under `root/<episode>/<rendition>/v<version>/<name>`, and served from that
file from then on. Sizes are a few KB (480p 2 KB, 720p 4 KB, 1080p 8 KB per segment): enough to see
hit rates and bytes at the edge, not video.

Only URLs the catalog can back exist: a known episode (the live catalog, so a just-dropped episode has
chunks), a known rendition, the episode's current media version, an index below its segment count.
Anything else is ChunkNotFound (404, never cached at the edge).
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from pathlib import Path

from cliffhanger.catalog import Catalog
from serving import hls

SEGMENT_BYTES = {"480p": 2048, "720p": 4096, "1080p": 8192}
CACHE_CONTROL = "public, max-age=31536000, immutable"


class ChunkNotFound(LookupError):
    pass


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def sample_bytes(episode_id: str, rendition: str, version: int, index: int) -> bytes:
    """Deterministic sample content; index -1 is the init section (ftyp + moov)."""
    seed = f"{episode_id}/{rendition}/v{version}/{index}".encode()
    size = 512 if index < 0 else SEGMENT_BYTES[rendition]
    stream = bytearray()
    counter = 0
    while len(stream) < size:
        stream += hashlib.blake2b(seed + counter.to_bytes(4, "big"), digest_size=64).digest()
        counter += 1
    body = bytes(stream[:size])
    if index < 0:
        return _box(b"ftyp", b"iso6\x00\x00\x00\x00iso6cmfc") + _box(b"moov", body)
    return _box(b"styp", b"msdh\x00\x00\x00\x00msdhmsix") + _box(b"moof", seed) + _box(b"mdat", body)


def content_type(name: str) -> str:
    return "video/mp4" if name == hls.INIT else "video/iso.segment"


class ChunkStore:
    def __init__(self, root: str | os.PathLike, segment_s: float) -> None:
        self.root = Path(root)
        self.segment_s = segment_s

    def locate(self, catalog: Catalog, episode_id: str, rendition: str, version: int, name: str) -> Path:
        """The file for this chunk URL (generated on first use); ChunkNotFound if the URL names no chunk."""
        index = hls.parse_chunk_name(name)
        if index is None or rendition not in hls.RENDITIONS:
            raise ChunkNotFound(f"no chunk {name!r} in rendition {rendition!r}")
        try:
            episode = catalog.episode(episode_id)
        except KeyError:
            raise ChunkNotFound(f"unknown episode {episode_id!r}") from None
        if version != hls.content_version(episode):
            raise ChunkNotFound(f"episode {episode_id} has no media version {version}")
        if index >= len(hls.segment_durations(episode.duration_ms, self.segment_s)):
            raise ChunkNotFound(f"episode {episode_id} has no segment {index}")
        path = self.root / episode_id / rendition / f"v{version}" / name
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
            with os.fdopen(fd, "wb") as f:
                f.write(sample_bytes(episode_id, rendition, version, index))
            os.replace(tmp, path)  # atomic: a concurrent reader sees the whole file or none
        return path
