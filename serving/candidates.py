"""Precomputed candidate lists in Bigtable: the format, a writer (for the candidates pipeline and tests),
and the reader-side parser serving uses.

    row u#<salt>#<user>  or  g#<COUNTRY>#<DEVICE>  or  g#global
    family `cand`, column `two_tower`, one binary cell (little-endian), best first:
        MAGIC (b"\\0CHL1")  u32 header length  header JSON {"bundle_version", "generated_ms", "n", "width"}
        zero padding to a multiple of 8  float64[n] retrieval scores  n ids, each `width` bytes of UTF-8,
        NUL-padded (numpy dtype S<width>)

Why binary: the user row is read on every cache miss. As JSON (the second format, still read:
{"bundle_version", "generated_ms", "ids": [...], "scores": [...]}) its 500 ids became 500 new Python
strings per request, each hashed and looked up in the catalog's dict: in a py-spy profile of the
serving benchmark, decoding the list and mapping its ids were ~12% of a loaded server's CPU. As fixed-width
bytes they stay one numpy array from the cell to the catalog rows (serving.rerank.EpisodeTable.rows
maps them with vectorised integer keys), and the cell is ~15% smaller. The first format
([[episode_id, score], ...]) is still read too.

Cells are stamped with `generated_ms` (idempotent rewrites of the same list change nothing).
"""

from __future__ import annotations

import datetime as dt
import functools
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import orjson

from transforms import rowkeys
from transforms.features import BINARY_PREFIX

FAMILY = "cand"
COLUMN = "two_tower"
GLOBAL_SEGMENT = "global"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_is_str = str.__instancecheck__  # isinstance(x, str), as a function map() can call in C


MAGIC = BINARY_PREFIX + b"CHL1"  # transforms.features.decode leaves cells with this prefix as bytes
_HEADER_LEN = struct.Struct("<I")


class CandidateList:
    """A parsed list, best first: `scores` (numpy) and the ids as stored (`id_column`: a numpy array of
    fixed-width UTF-8 bytes from the binary cell, or a list of str from a JSON one); `ids` is always
    a list of str (decoded on first use: the request path maps `id_column` without decoding)."""

    __slots__ = ("bundle_version", "generated_ms", "id_column", "scores", "__dict__")

    def __init__(
        self, bundle_version: str, generated_ms: int, ids: Sequence[str] | np.ndarray, scores: np.ndarray
    ) -> None:
        self.bundle_version, self.generated_ms = bundle_version, generated_ms
        self.id_column, self.scores = ids, scores

    @functools.cached_property
    def ids(self) -> list[str]:
        column = self.id_column
        if isinstance(column, np.ndarray):
            return [b.decode() for b in column.tolist()]
        return list(column)

    @property
    def items(self) -> list[tuple[str, float]]:
        """[(episode_id, score), ...], best first (a view for callers that want pairs)."""
        return list(zip(self.ids, self.scores.tolist(), strict=True))

    def __len__(self) -> int:
        return len(self.id_column)

    def head(self, k: int) -> CandidateList:
        """The best `k` (a view of the same list when it is not longer)."""
        if len(self.id_column) <= k:
            return self
        return CandidateList(self.bundle_version, self.generated_ms, self.id_column[:k], self.scores[:k])


class CandidateListError(ValueError):
    pass


def segment_name(country: str, device: str) -> str:
    return f"{country}#{device}"


def user_row(user_id: str) -> bytes:
    return rowkeys.user_key(user_id)


def segment_row(country: str, device: str) -> bytes:
    return rowkeys.segment_key(segment_name(country, device))


def global_row() -> bytes:
    return rowkeys.segment_key(GLOBAL_SEGMENT)


def to_json(bundle_version: str, generated_ms: int, items: Iterable[tuple[str, float]]) -> dict[str, Any]:
    """The second (JSON) format, still read: tests and tools that want a readable cell."""
    pairs = list(items)
    return {
        "bundle_version": bundle_version,
        "generated_ms": int(generated_ms),
        "ids": [str(eid) for eid, _ in pairs],
        "scores": [round(float(score), 6) for _, score in pairs],
    }


def encode_list(bundle_version: str, generated_ms: int, items: Iterable[tuple[str, float]]) -> bytes:
    """The binary cell (see the module docstring)."""
    pairs = list(items)
    encoded = [str(eid).encode() for eid, _ in pairs]
    if any(b"\0" in e for e in encoded):  # NUL pads the fixed width: an id cannot hold one
        raise CandidateListError("candidate list: an episode id contains a NUL byte")
    ids = np.array(encoded or [b""], dtype=np.bytes_)[: len(pairs)]
    header = orjson.dumps(
        {"bundle_version": bundle_version, "generated_ms": int(generated_ms), "n": len(pairs), "width": ids.itemsize}
    )
    pad = -(len(MAGIC) + _HEADER_LEN.size + len(header)) % 8
    scores = np.asarray([float(score) for _, score in pairs], dtype="<f8")
    return b"".join((MAGIC, _HEADER_LEN.pack(len(header)), header, b"\0" * pad, scores.tobytes(), ids.tobytes()))


def _parse_binary(raw: bytes) -> CandidateList:
    start = len(MAGIC) + _HEADER_LEN.size
    if len(raw) < start:
        raise CandidateListError("candidate list: binary cell shorter than its header")
    (n_header,) = _HEADER_LEN.unpack_from(raw, len(MAGIC))
    try:
        header = orjson.loads(raw[start : start + n_header])
        version, generated = str(header["bundle_version"]), int(header["generated_ms"])
        n, width = int(header["n"]), int(header["width"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CandidateListError(f"candidate list: bad binary header ({exc})") from None
    offset = start + n_header
    offset += -offset % 8
    if n < 0 or width < 1 or len(raw) != offset + n * (8 + width):
        raise CandidateListError(f"candidate list: binary cell of {len(raw)} bytes does not hold n={n} width={width}")
    scores = np.frombuffer(raw, dtype="<f8", count=n, offset=offset)
    if not np.isfinite(scores).all():
        raise CandidateListError("candidate list: every score must be a finite number")
    ids = np.frombuffer(raw, dtype=f"S{width}", count=n, offset=offset + 8 * n)
    return CandidateList(version, generated, ids, scores)


def parse(value: Any) -> CandidateList:
    """The cell (binary bytes, or a decoded JSON object) -> CandidateList; CandidateListError names what
    is wrong. Reads all three formats."""
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        if not raw.startswith(MAGIC):
            raise CandidateListError("candidate list: binary cell without the CHL1 magic")
        return _parse_binary(raw)
    if not isinstance(value, dict):
        raise CandidateListError(f"candidate list must be an object, got {type(value).__name__}")
    version, generated = str(value.get("bundle_version", "")), int(value.get("generated_ms", 0))
    if "ids" in value:
        ids, scores = value["ids"], value.get("scores")
        if not isinstance(ids, list) or not isinstance(scores, list) or len(ids) != len(scores):
            raise CandidateListError("candidate list: ids and scores must be lists of the same length")
        if not all(map(_is_str, ids)):  # C-speed scans: no per-item Python on the request path
            raise CandidateListError("candidate list: every id must be a string")
        try:
            values = np.asarray(scores, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise CandidateListError(f"candidate list: every score must be a number ({exc})") from None
        return CandidateList(version, generated, ids, values)
    items = value.get("items")  # the first format: [[episode_id, score], ...]
    if not isinstance(items, list):
        raise CandidateListError("candidate list: needs ids + scores (or items)")
    try:
        pairs = [(str(eid), float(score)) for eid, score in items]
    except (TypeError, ValueError) as exc:
        raise CandidateListError(f"candidate list: every item must be [episode_id, score] ({exc})") from None
    return CandidateList(version, generated, [e for e, _ in pairs], np.asarray([x for _, x in pairs], np.float64))


def write_candidate_list(
    table: Any,
    row_key: bytes,
    bundle_version: str,
    generated_ms: int,
    items: Sequence[tuple[str, float]],
) -> None:
    """One list into one row (`user_row(...)`, `segment_row(...)` or `global_row()`)."""
    write_candidate_lists(table, [(row_key, bundle_version, generated_ms, items)])


def write_candidate_lists(
    table: Any, lists: Iterable[tuple[bytes, str, int, Sequence[tuple[str, float]]]], batch: int = 500
) -> int:
    """Many lists in batched `mutate_rows` calls; returns rows written. Raises on any rejected row."""
    rows, written = [], 0

    def flush() -> int:
        if not rows:
            return 0
        statuses = table.mutate_rows(rows)
        failed = [s for s in statuses if s.code != 0]
        if failed:
            raise CandidateListError(f"{len(failed)} of {len(rows)} candidate rows rejected: {failed[0].message}")
        n = len(rows)
        rows.clear()
        return n

    for row_key, version, generated_ms, items in lists:
        row = table.direct_row(row_key)
        payload = encode_list(version, generated_ms, items)
        row.set_cell(FAMILY, COLUMN.encode(), payload, timestamp=_EPOCH + dt.timedelta(milliseconds=int(generated_ms)))
        rows.append(row)
        if len(rows) >= batch:
            written += flush()
    return written + flush()
