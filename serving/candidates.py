"""Precomputed candidate lists in Bigtable: the format, a writer (for the candidates pipeline and tests),
and the reader-side parser serving uses.

    row u#<salt>#<user>  or  g#<COUNTRY>#<DEVICE>  or  g#global
    family `cand`, column `two_tower`:
        {"bundle_version": str, "generated_ms": int, "items": [[episode_id, retrieval_score], ...]}

Cells are stamped with `generated_ms` (idempotent rewrites of the same list change nothing).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from transforms import rowkeys
from transforms.features import encode

FAMILY = "cand"
COLUMN = "two_tower"
GLOBAL_SEGMENT = "global"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True)
class CandidateList:
    bundle_version: str
    generated_ms: int
    items: tuple[tuple[str, float], ...]


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
    return {
        "bundle_version": bundle_version,
        "generated_ms": int(generated_ms),
        "items": [[str(eid), round(float(score), 6)] for eid, score in items],
    }


def parse(value: Any) -> CandidateList:
    """The decoded cell -> CandidateList; CandidateListError names what is wrong."""
    if not isinstance(value, dict):
        raise CandidateListError(f"candidate list must be an object, got {type(value).__name__}")
    items = value.get("items")
    if not isinstance(items, list):
        raise CandidateListError("candidate list: items must be a list")
    try:
        out = tuple((str(eid), float(score)) for eid, score in items)
    except (TypeError, ValueError) as exc:
        raise CandidateListError(f"candidate list: every item must be [episode_id, score] ({exc})") from None
    return CandidateList(str(value.get("bundle_version", "")), int(value.get("generated_ms", 0)), out)


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
