"""Precomputed candidate lists in Bigtable: the format, a writer (for the candidates pipeline and tests),
and the reader-side parser serving uses.

    row u#<salt>#<user>  or  g#<COUNTRY>#<DEVICE>  or  g#global
    family `cand`, column `two_tower`:
        {"bundle_version": str, "generated_ms": int, "ids": [episode_id, ...], "scores": [retrieval_score, ...]}

Columnar, best first. Why not [[episode_id, score], ...] (the first format, still read): the user row
is read on every cache miss, and decoding 500 two-element lists made 500 more objects per request,
the largest single cost of a miss in a py-spy profile of the serving benchmark, and long-lived
garbage for the collector when the row is kept as a last known copy.

Cells are stamped with `generated_ms` (idempotent rewrites of the same list change nothing).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from transforms import rowkeys
from transforms.features import encode

FAMILY = "cand"
COLUMN = "two_tower"
GLOBAL_SEGMENT = "global"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_is_str = str.__instancecheck__  # isinstance(x, str), as a function map() can call in C


@dataclasses.dataclass(frozen=True)
class CandidateList:
    bundle_version: str
    generated_ms: int
    ids: list[str]
    scores: np.ndarray  # float64 (JSON numbers), aligned with ids

    @property
    def items(self) -> list[tuple[str, float]]:
        """[(episode_id, score), ...], best first (a view for callers that want pairs)."""
        return list(zip(self.ids, self.scores.tolist(), strict=True))

    def __len__(self) -> int:
        return len(self.ids)

    def head(self, k: int) -> CandidateList:
        """The best `k` (a view of the same list when it is not longer)."""
        if len(self.ids) <= k:
            return self
        return CandidateList(self.bundle_version, self.generated_ms, self.ids[:k], self.scores[:k])


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
    pairs = list(items)
    return {
        "bundle_version": bundle_version,
        "generated_ms": int(generated_ms),
        "ids": [str(eid) for eid, _ in pairs],
        "scores": [round(float(score), 6) for _, score in pairs],
    }


def parse(value: Any) -> CandidateList:
    """The decoded cell -> CandidateList; CandidateListError names what is wrong. Reads both formats."""
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
        payload = encode(to_json(version, generated_ms, items))
        row.set_cell(FAMILY, COLUMN.encode(), payload, timestamp=_EPOCH + dt.timedelta(milliseconds=int(generated_ms)))
        rows.append(row)
        if len(rows) >= batch:
            written += flush()
    return written + flush()
