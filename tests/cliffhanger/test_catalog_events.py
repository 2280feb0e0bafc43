"""cliffhanger.catalog_events: the catalog event contract, and validation that names the field."""

from __future__ import annotations

import json

import pytest

from cliffhanger.catalog_events import (
    LICENSING_CHANGE,
    SERIES_DROP,
    SERIES_UPDATE,
    CatalogEvent,
    CatalogEventError,
    parse_catalog_event,
)

T = 1_795_262_400_000


def _payload(**fields) -> bytes:
    base = {"type": SERIES_UPDATE, "series_id": "s0001", "event_time_ms": T, "version": 3}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    "event",
    [
        CatalogEvent(SERIES_DROP, "s0001", T, 4, episode_id="s0001e013"),
        CatalogEvent(SERIES_UPDATE, "s0001", T, 5),
        CatalogEvent(LICENSING_CHANGE, "s0002", T, 6, countries=("BR", "US")),
    ],
)
def test_round_trip(event):
    assert parse_catalog_event(event.to_json()) == event
    assert CatalogEvent.from_json(event.to_json().decode()) == event


def test_countries_are_sorted_and_deduplicated_and_unknown_fields_ignored():
    e = parse_catalog_event(_payload(type=LICENSING_CHANGE, countries=["US", "BR", "US"], note="extra"))
    assert e.countries == ("BR", "US")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"not json", ""),
        (b"[1, 2]", ""),
        (b"x" * 70_000, ""),
        (b"\xff\xfe", ""),
        (_payload(type="series:delete"), "type"),
        (_payload(type=...), "type"),
        (_payload(series_id=""), "series_id"),
        (_payload(series_id="s 1"), "series_id"),
        (_payload(series_id=7), "series_id"),
        (_payload(event_time_ms="1"), "event_time_ms"),
        (_payload(event_time_ms=True), "event_time_ms"),
        (_payload(version=-1), "version"),
        (_payload(version=...), "version"),
        (_payload(type=SERIES_DROP), "episode_id"),
        (_payload(episode_id=""), "episode_id"),
        (_payload(type=LICENSING_CHANGE), "countries"),
        (_payload(type=LICENSING_CHANGE, countries=[]), "countries"),
        (_payload(type=LICENSING_CHANGE, countries=["br"]), "countries"),
        (_payload(type=LICENSING_CHANGE, countries="BR"), "countries"),
    ],
)
def test_bad_events_name_the_field(payload, field):
    with pytest.raises(CatalogEventError) as info:
        parse_catalog_event(payload)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: " if field else "")
