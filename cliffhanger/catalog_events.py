"""Catalog events: what changed in the catalog, for the invalidation pipeline (topic `catalog`).

JSON, one event per message:

    {"type": "series:drop", "series_id": "s0001", "episode_id": "s0001e013",
     "event_time_ms": 1795262400000, "version": 4}
    {"type": "series:update", "series_id": "s0001", "event_time_ms": 1795262400000, "version": 5}
    {"type": "licensing:change", "series_id": "s0001", "countries": ["BR", "US"],
     "event_time_ms": 1795262400000, "version": 6}

* `series:drop`       a new episode went live: `episode_id` is required.
* `series:update`     title, artwork, genres or episode metadata changed; `episode_id` optional.
* `licensing:change`  the series' licensing windows changed in `countries` (required, ISO 3166-1
                      alpha-2, upper case): answers for those countries must not keep showing it.

`version` increases per series (the catalog's revision of that series); delivery is at-least-once.
Unknown fields are ignored so producers can add some. A bad event raises `CatalogEventError`
whose `field` names the offending field ('' when the payload as a whole is bad).
Standard library only: serving and the PyFlink venv may import it.
"""

from __future__ import annotations

import dataclasses
import json
import re

SERIES_DROP = "series:drop"
SERIES_UPDATE = "series:update"
LICENSING_CHANGE = "licensing:change"
TYPES = (SERIES_DROP, SERIES_UPDATE, LICENSING_CHANGE)

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_ID_LEN = 128
_COUNTRY = re.compile(r"[A-Z]{2}")


class CatalogEventError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


@dataclasses.dataclass(frozen=True, slots=True)
class CatalogEvent:
    type: str
    series_id: str
    event_time_ms: int
    version: int
    episode_id: str | None = None
    countries: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        obj: dict = {
            "type": self.type,
            "series_id": self.series_id,
            "event_time_ms": self.event_time_ms,
            "version": self.version,
        }
        if self.episode_id is not None:
            obj["episode_id"] = self.episode_id
        if self.countries:
            obj["countries"] = list(self.countries)
        return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> CatalogEvent:
        return parse_catalog_event(payload)


def _id(obj: dict, name: str, required: bool) -> str | None:
    value = obj.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LEN or any(c.isspace() for c in value):
        raise CatalogEventError(name, f"required, a non-empty string of at most {MAX_ID_LEN} chars without spaces")
    return value


def _non_negative_int(obj: dict, name: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CatalogEventError(name, "required, a non-negative integer")
    return value


def _countries(obj: dict, required: bool) -> tuple[str, ...]:
    value = obj.get("countries")
    if value is None and not required:
        return ()
    if not isinstance(value, list) or not value:
        raise CatalogEventError("countries", "required for licensing:change, a non-empty list of country codes")
    if not all(isinstance(c, str) and _COUNTRY.fullmatch(c) for c in value):
        raise CatalogEventError("countries", "each must be an ISO 3166-1 alpha-2 code in upper case, e.g. 'BR'")
    return tuple(sorted(set(value)))


def parse_catalog_event(payload: bytes | str) -> CatalogEvent:
    """Validate one JSON payload; CatalogEventError (naming the field) when it cannot be used."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CatalogEventError("", f"payload larger than {MAX_PAYLOAD_BYTES} bytes")
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise CatalogEventError("", f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(obj, dict):
        raise CatalogEventError("", "must be a JSON object")
    kind = obj.get("type")
    if kind not in TYPES:
        raise CatalogEventError("type", f"required, one of {', '.join(TYPES)}")
    return CatalogEvent(
        type=kind,
        series_id=_id(obj, "series_id", required=True),
        event_time_ms=_non_negative_int(obj, "event_time_ms"),
        version=_non_negative_int(obj, "version"),
        episode_id=_id(obj, "episode_id", required=kind == SERIES_DROP),
        countries=_countries(obj, required=kind == LICENSING_CHANGE),
    )
