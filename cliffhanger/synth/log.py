"""The event log on disk, and the world directory that holds it.

`events.jsonl` is JSON Lines, one record per message in ARRIVAL order, mirroring a Pub/Sub export
(publish time + data)::

    {"arrival_ms": 1795157123456, "data": "{\\"schema_version\\":1,\\"event_id\\":...}"}
    {"arrival_ms": 1795157123460, "data_b64": "/3sic2NoZW1h..."}

`data` is the exact payload decoded as UTF-8 (so `data.encode("utf-8")` gives back the original
bytes); payloads that are not valid UTF-8 (deliberately malformed ones) are stored base64-encoded
in `data_b64` instead. Duplicates appear as separate records with identical data.

A world directory (`write_world`) holds catalog.json, users.json, truth.json, events.jsonl and
manifest.json (seed, knobs, counts per event type and per fault).
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import json
import os
from collections.abc import Iterable, Iterator
from typing import Protocol

from cliffhanger.synth.faults import FaultKnobs, Message
from cliffhanger.synth.world import World

CATALOG_FILE = "catalog.json"
USERS_FILE = "users.json"
TRUTH_FILE = "truth.json"
EVENTS_FILE = "events.jsonl"
MANIFEST_FILE = "manifest.json"


class LogError(ValueError):
    """A log line that cannot be read; the message names the file and line."""


@dataclasses.dataclass(frozen=True, slots=True)
class LogRecord:
    arrival_ms: int
    payload: bytes


class _HasPayload(Protocol):
    arrival_ms: int
    payload: bytes


def encode_record(arrival_ms: int, payload: bytes) -> str:
    """One log line (without the newline)."""
    try:
        return json.dumps({"arrival_ms": arrival_ms, "data": payload.decode("utf-8")})
    except UnicodeDecodeError:
        return json.dumps({"arrival_ms": arrival_ms, "data_b64": base64.b64encode(payload).decode("ascii")})


def write_log(path: str | os.PathLike, records: Iterable[_HasPayload]) -> int:
    """Write records (LogRecord or faults.Message) in the order given; -> number written."""
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(encode_record(r.arrival_ms, r.payload))
            f.write("\n")
            n += 1
    return n


def read_log(path: str | os.PathLike) -> Iterator[LogRecord]:
    """Records in file order; LogError names the file and line of anything unreadable."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            yield decode_line(line, f"{os.fspath(path)}:{lineno}")


def decode_line(line: str, where: str) -> LogRecord:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LogError(f"{where}: not a JSON line: {exc}") from None
    if not isinstance(obj, dict):
        raise LogError(f"{where}: a record must be a JSON object")
    arrival = obj.get("arrival_ms")
    if isinstance(arrival, bool) or not isinstance(arrival, int):
        raise LogError(f"{where}: arrival_ms must be an integer")
    if isinstance(obj.get("data"), str):
        return LogRecord(arrival, obj["data"].encode("utf-8"))
    if isinstance(obj.get("data_b64"), str):
        try:
            return LogRecord(arrival, base64.b64decode(obj["data_b64"], validate=True))
        except binascii.Error as exc:
            raise LogError(f"{where}: data_b64 is not base64: {exc}") from None
    raise LogError(f"{where}: a record needs a string 'data' or 'data_b64'")


def manifest(world: World, messages: list[Message], *, knobs: FaultKnobs, days: int) -> dict:
    """Counts per event type (of distinct valid events), per fault kind and per malformation."""
    types = collections.Counter(m.event_type for m in messages if m.kind not in ("malformed", "duplicate"))
    faults = collections.Counter(m.kind for m in messages)
    malformed = collections.Counter(m.detail for m in messages if m.kind == "malformed")
    return {
        "manifest_version": 1,
        "seed": world.seed,
        "start_ms": world.start_ms,
        "days": days,
        "countries": list(world.countries),
        "n_users": len(world.users),
        "n_series": len(world.catalog),
        "n_episodes": sum(len(s.episodes) for s in world.catalog),
        "knobs": dataclasses.asdict(knobs),
        "messages": len(messages),
        "valid_events": sum(types.values()),
        "event_types": dict(sorted(types.items())),
        "faults": {k: faults.get(k, 0) for k in ("ok", "duplicate", "out_of_order", "late", "malformed")},
        "malformed_kinds": dict(sorted(malformed.items())),
        "first_arrival_ms": messages[0].arrival_ms if messages else None,
        "last_arrival_ms": messages[-1].arrival_ms if messages else None,
        "files": [CATALOG_FILE, USERS_FILE, TRUTH_FILE, EVENTS_FILE, MANIFEST_FILE],
    }


def write_world(
    out_dir: str | os.PathLike,
    world: World,
    records: list[Message],
    *,
    knobs: FaultKnobs | None = None,
    days: int | None = None,
) -> dict:
    """Write the world directory; -> the manifest. Every file is a pure function of seed and knobs."""
    os.makedirs(out_dir, exist_ok=True)
    world.catalog.save(os.path.join(out_dir, CATALOG_FILE))
    with open(os.path.join(out_dir, USERS_FILE), "w", encoding="utf-8") as f:
        json.dump(world.users_dict(), f, separators=(",", ":"))
        f.write("\n")
    world.truth.save(os.path.join(out_dir, TRUTH_FILE))
    write_log(os.path.join(out_dir, EVENTS_FILE), records)
    man = manifest(world, records, knobs=knobs or FaultKnobs(), days=world.days if days is None else days)
    with open(os.path.join(out_dir, MANIFEST_FILE), "w", encoding="utf-8") as f:
        json.dump(man, f, indent=2)
        f.write("\n")
    return man
