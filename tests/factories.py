"""Small builders shared by tests: events and a two-series catalog."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

from cliffhanger.catalog import Catalog
from cliffhanger.events import PlaybackEvent

T0 = 1_795_262_400_000  # 2026-11-21T12:00:00Z, a minute and hour boundary
MIN = 60_000
_ids = itertools.count(1)

CATALOG = {
    "catalog_version": 1,
    "series": [
        {
            "series_id": sid,
            "title": title,
            "genres": genres,
            "cliffhanger_strength": 0.5,
            "licensing": {"US": [0, None], "BR": [0, None]},
            "episodes": [
                {"episode_id": f"{sid}e{n:03d}", "episode_number": n, "duration_ms": 90_000, "release_time_ms": 0}
                for n in range(1, 6)
            ],
        }
        for sid, title, genres in (
            ("s0001", "Billionaire's Secret", ["romance", "ceo"]),
            ("s0002", "Night Hunt", ["thriller"]),
        )
    ],
}


def catalog() -> Catalog:
    return Catalog.from_dict(CATALOG)


def write_catalog(directory: Path) -> str:
    path = directory / "catalog.json"
    path.write_text(json.dumps(CATALOG))
    return str(path)


def event(
    event_type: str = "play_start",
    *,
    t: int = T0,
    user: str = "u000001",
    series: str = "s0001",
    episode: int = 1,
    **overrides,
) -> PlaybackEvent:
    """An event `t` ms since epoch; position follows the type (complete -> full duration)."""
    fields = dict(
        event_id=f"ev{next(_ids):06d}",
        user_id=user,
        series_id=series,
        episode_id=f"{series}e{episode:03d}",
        episode_number=episode,
        event_type=event_type,
        position_ms=90_000 if event_type == "complete" else 0,
        duration_ms=90_000,
        event_time_ms=t,
        device="ios",
        country="US",
        session_id=f"{user}-1",
        app_version="5.2.1",
    )
    fields.update(overrides)
    return PlaybackEvent(**fields)


def replace(e: PlaybackEvent, **changes) -> PlaybackEvent:
    return dataclasses.replace(e, **changes)
