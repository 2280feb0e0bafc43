"""Change notices: "this entity's features or candidates changed", from the streaming pipelines to
their consumers. JSON, one notice per message.

    {"entity": "user", "id": "u000042", "reason": "completed_episode", "version": 17, "event_time_ms": 1795262400000}

`version` increases monotonically per entity, so a consumer can drop a notice older than one it already
acted on. Delivery is at-least-once: consumers dedupe. Who publishes what:

    topic              entity   reason                 version                           consumers
    feature-changes    user     completed_episode,     the user state's applied-event    candidates,
                                new_session            count                             invalidation
    item-changes       episode  item_features          the episode row's as_of_ms        serving's replicas
    candidate-changes  user     candidates_refreshed   the user notice's version         invalidation
                                new_episode            the catalog's series revision

Episode notices have their own topic: invalidation purges the key of every notice it reads, and every
answer is tagged with its episodes' keys, so on `feature-changes` they would purge the hottest answers
continuously (transforms/compute_features.py). `new_episode`: the viewer was waiting for an episode that
just dropped (transforms/candidates_drop.py); its version orders the drops of one series, not the user's
other notices, so a consumer that dedupes by version does it per (id, reason). The invalidation
pipeline does not dedupe by version at all: purging twice is harmless.

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
