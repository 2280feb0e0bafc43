"""serving/hls.py and serving/chunks.py: a valid RFC 8216 media playlist, shared chunk URLs with no user
data, preload hints, deterministic sample chunks and 404s for URLs no chunk backs."""

from __future__ import annotations

import math
import re

import pytest

from cliffhanger.catalog import Catalog, Episode, Series
from serving import chunks, hls


def _catalog() -> Catalog:
    # 10 s and 9.5 s episodes: with 4 s segments, 3 segments each (4, 4, 2) and (4, 4, 1.5)
    eps = (Episode("s1e001", "s1", 1, 10_000, 0), Episode("s1e002", "s1", 2, 9_500, 0))
    return Catalog([Series("s1", "t", ("romance",), 0.5, eps, {"US": (0, None)})])


def test_segment_durations_cover_the_episode() -> None:
    assert hls.segment_durations(10_000, 4.0) == [4.0, 4.0, 2.0]
    assert hls.segment_durations(8_000, 4.0) == [4.0, 4.0]  # exact multiple: no empty tail segment
    assert hls.segment_durations(1, 4.0) == [0.001]
    assert math.isclose(sum(hls.segment_durations(94_321, 4.0)), 94.321)


def test_media_playlist_structure() -> None:
    eps = list(_catalog().episodes())
    text = hls.media_playlist(eps, "720p", 4.0)
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U" and lines[-1] == "#EXT-X-ENDLIST" and text.endswith("\n")
    assert "#EXT-X-VERSION:7" in lines and "#EXT-X-INDEPENDENT-SEGMENTS" in lines
    target = int(next(ln for ln in lines if ln.startswith("#EXT-X-TARGETDURATION:")).split(":")[1])
    extinf = [float(ln.split(":")[1].split(",")[0]) for ln in lines if ln.startswith("#EXTINF:")]
    assert extinf == [4.0, 4.0, 2.0, 4.0, 4.0, 1.5]
    assert all(round(d) <= target for d in extinf)  # RFC 8216 4.3.3.1
    # one init section per episode, a discontinuity between episodes (not before the first)
    maps = [ln for ln in lines if ln.startswith("#EXT-X-MAP:")]
    assert maps == [
        '#EXT-X-MAP:URI="/chunks/s1e001/720p/v1/init.mp4"',
        '#EXT-X-MAP:URI="/chunks/s1e002/720p/v1/init.mp4"',
    ]
    assert lines.count("#EXT-X-DISCONTINUITY") == 1
    assert lines.index("#EXT-X-DISCONTINUITY") == lines.index(maps[1]) - 1
    # every EXTINF is followed by its segment URI, in order
    uris = [lines[i + 1] for i, ln in enumerate(lines) if ln.startswith("#EXTINF:")]
    assert uris[:3] == [f"/chunks/s1e001/720p/v1/{i}.m4s" for i in range(3)]
    assert uris[3] == "/chunks/s1e002/720p/v1/0.m4s"
    assert all(re.fullmatch(r"/chunks/s1e00[12]/720p/v1/\d+\.m4s", u) for u in uris)


def test_empty_playlist_and_bad_rendition() -> None:
    text = hls.media_playlist([], "480p", 4.0)
    assert text.splitlines()[0] == "#EXTM3U" and "#EXTINF" not in text and "#EXT-X-ENDLIST" in text
    with pytest.raises(ValueError, match="rendition"):
        hls.media_playlist([], "4k", 4.0)


def test_preload_hints_name_init_and_first_two_segments() -> None:
    eps = list(_catalog().episodes())
    paths = hls.preload_paths(eps, "1080p", 4.0)
    assert paths == [
        "/chunks/s1e001/1080p/v1/init.mp4",
        "/chunks/s1e001/1080p/v1/0.m4s",
        "/chunks/s1e001/1080p/v1/1.m4s",
    ]
    assert hls.link_header(paths[:2]) == (
        "</chunks/s1e001/1080p/v1/init.mp4>; rel=preload; as=video, </chunks/s1e001/1080p/v1/0.m4s>; rel=preload; as=video"
    )
    assert hls.preload_paths([], "720p", 4.0) == []


def test_parse_chunk_name() -> None:
    assert hls.parse_chunk_name("init.mp4") == -1
    assert hls.parse_chunk_name("0.m4s") == 0 and hls.parse_chunk_name("17.m4s") == 17
    for bad in ("01.m4s", "-1.m4s", "x.m4s", "1.ts", "init.m4s", "../init.mp4", "1234567.m4s"):
        assert hls.parse_chunk_name(bad) is None, bad


def test_chunk_store_deterministic_files_and_not_found(tmp_path) -> None:
    cat = _catalog()
    store = chunks.ChunkStore(tmp_path, 4.0)
    path = store.locate(cat, "s1e001", "720p", 1, "2.m4s")
    data = path.read_bytes()
    assert data == chunks.sample_bytes("s1e001", "720p", 1, 2) and 4096 < len(data) < 4300
    assert data[4:8] == b"styp"
    assert store.locate(cat, "s1e001", "720p", 1, "2.m4s") == path  # served from the file from now on
    init = store.locate(cat, "s1e001", "720p", 1, "init.mp4").read_bytes()
    assert init[4:8] == b"ftyp"
    assert chunks.sample_bytes("s1e001", "720p", 1, 0) != chunks.sample_bytes("s1e001", "480p", 1, 0)
    for args in (
        ("s1e009", "720p", 1, "0.m4s"),  # unknown episode
        ("s1e001", "4k", 1, "0.m4s"),  # unknown rendition
        ("s1e001", "720p", 2, "0.m4s"),  # not the episode's media version
        ("s1e001", "720p", 1, "3.m4s"),  # past the last segment
        ("s1e001", "720p", 1, "..%2Finit.mp4"),
    ):
        with pytest.raises(chunks.ChunkNotFound):
            store.locate(cat, *args)
