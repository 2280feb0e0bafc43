"""Change notices: "this entity's features or candidates changed", from the streaming pipelines to
the invalidation pipeline (topic `feature-changes`). JSON, one notice per message.

    {"entity": "user", "id": "u000042", "reason": "completed_episode", "version": 17, "event_time_ms": 1795262400000}

`version` increases monotonically per entity (the feature state's applied-event count), so a consumer
can drop a notice older than one it already acted on. Delivery is at-least-once: consumers dedupe.

Optional: a user notice may carry the `country` and `device` of the user's latest accepted event (the
candidates pipeline needs them for the query tower's context). They are left out of the JSON when
empty, and `from_json` accepts notices without them, so older producers and consumers keep working.

The candidates pipeline publishes its own notices (reason `candidates_refreshed`) to the
`candidate-changes` topic, never back to `feature-changes` (that would loop into itself).
"""

from __future__ import annotations

import dataclasses
import json

ENTITIES = ("user", "episode", "series", "cohort")
_OPTIONAL = ("country", "device")


class NoticeError(ValueError):
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class ChangeNotice:
    entity: str
    id: str
    reason: str
    version: int
    event_time_ms: int
    country: str = ""  # optional (user notices): the cohort of the latest accepted event
    device: str = ""

    def to_json(self) -> bytes:
        obj = {k: v for k, v in dataclasses.asdict(self).items() if k not in _OPTIONAL or v}
        return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> ChangeNotice:
        try:
            obj = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            raise NoticeError(f"notice is not JSON: {str(exc)[:80]}") from None
        if not isinstance(obj, dict):
            raise NoticeError("notice must be a JSON object")
        for name, kind in (("entity", str), ("id", str), ("reason", str), ("version", int), ("event_time_ms", int)):
            if not isinstance(obj.get(name), kind) or isinstance(obj.get(name), bool):
                raise NoticeError(f"{name}: required, must be {kind.__name__}")
        if obj["entity"] not in ENTITIES:
            raise NoticeError(f"entity: must be one of {', '.join(ENTITIES)}")
        for name in _OPTIONAL:
            if not isinstance(obj.get(name, ""), str):
                raise NoticeError(f"{name}: optional, must be str")
        return cls(
            obj["entity"],
            obj["id"],
            obj["reason"],
            obj["version"],
            obj["event_time_ms"],
            obj.get("country", ""),
            obj.get("device", ""),
        )
