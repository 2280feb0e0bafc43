"""The catalog: series, their ordered episodes, genres, cliffhanger strength and licensing windows.

Shared by the pipelines, serving and training, so it is small, fast (every look-up is a dict read)
and imports nothing beyond the standard library.

File format (`catalog.json`)::

    {"catalog_version": 1,
     "series": [{"series_id": "s0001", "title": "...", "genres": ["romance", "ceo"],
                 "cliffhanger_strength": 0.82,
                 "licensing": {"US": [1795000000000, null], "BR": [1795000000000, 1795300000000]},
                 "episodes": [{"episode_id": "s0001e001", "episode_number": 1,
                               "duration_ms": 94000, "release_time_ms": 1794000000000}, ...]}]}

Licensing windows are half-open `[start_ms, end_ms)`; `end_ms` null means no expiry. A country
absent from `licensing` may not show the series. Episodes are listed in order, numbered 1..n.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping

CATALOG_VERSION = 1

GENRES: tuple[str, ...] = ("romance", "revenge", "ceo", "fantasy", "thriller", "comedy", "family", "werewolf")


class CatalogError(ValueError):
    """A catalog that cannot be used; the message names the file (if any) and the offending field."""


def series_id_for(index: int) -> str:
    """1-based index -> 's0001'."""
    return f"s{index:04d}"


def episode_id_for(series_id: str, episode_number: int) -> str:
    """('s0001', 3) -> 's0001e003'."""
    return f"{series_id}e{episode_number:03d}"


def user_id_for(index: int) -> str:
    """1-based index -> 'u000001'."""
    return f"u{index:06d}"


@dataclasses.dataclass(frozen=True, slots=True)
class Episode:
    episode_id: str
    series_id: str
    episode_number: int  # 1-based position in the series
    duration_ms: int
    release_time_ms: int


@dataclasses.dataclass(frozen=True)
class Series:
    series_id: str
    title: str
    genres: tuple[str, ...]
    cliffhanger_strength: float  # 0..1: how hard an episode ending pulls the viewer into the next
    episodes: tuple[Episode, ...]
    # country -> (start_ms, end_ms or None for no expiry); not hashed, a dict is not hashable
    licensing: Mapping[str, tuple[int, int | None]] = dataclasses.field(default_factory=dict, hash=False)

    def is_licensed(self, country: str, at_ms: int) -> bool:
        window = self.licensing.get(country)
        if window is None:
            return False
        start, end = window
        return start <= at_ms and (end is None or at_ms < end)


class Catalog:
    """An immutable set of series with O(1) look-ups by series id and episode id."""

    def __init__(self, series: list[Series] | tuple[Series, ...]):
        self._series: dict[str, Series] = {}
        self._episodes: dict[str, Episode] = {}
        self._next: dict[str, Episode | None] = {}
        for s in series:
            if s.series_id in self._series:
                raise CatalogError(f"duplicate series_id {s.series_id!r}")
            self._series[s.series_id] = s
            for i, ep in enumerate(s.episodes):
                if ep.episode_id in self._episodes:
                    raise CatalogError(f"duplicate episode_id {ep.episode_id!r}")
                self._episodes[ep.episode_id] = ep
                self._next[ep.episode_id] = s.episodes[i + 1] if i + 1 < len(s.episodes) else None

    def __len__(self) -> int:
        return len(self._series)

    def __iter__(self) -> Iterator[Series]:
        return iter(self._series.values())

    def __contains__(self, series_id: object) -> bool:
        return series_id in self._series

    def series_ids(self) -> tuple[str, ...]:
        return tuple(self._series)

    def series(self, series_id: str) -> Series:
        try:
            return self._series[series_id]
        except KeyError:
            raise KeyError(f"unknown series_id {series_id!r}") from None

    def episode(self, episode_id: str) -> Episode:
        try:
            return self._episodes[episode_id]
        except KeyError:
            raise KeyError(f"unknown episode_id {episode_id!r}") from None

    def episodes(self) -> Iterator[Episode]:
        for s in self._series.values():
            yield from s.episodes

    def genres(self, series_id: str) -> tuple[str, ...]:
        return self.series(series_id).genres

    def next_episode(self, episode_id: str) -> Episode | None:
        """The episode after `episode_id` in its series, or None after the last one."""
        try:
            return self._next[episode_id]
        except KeyError:
            raise KeyError(f"unknown episode_id {episode_id!r}") from None

    def is_licensed(self, series_id: str, country: str, at_ms: int) -> bool:
        s = self._series.get(series_id)
        return s is not None and s.is_licensed(country, at_ms)

    # -- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "catalog_version": CATALOG_VERSION,
            "series": [
                {
                    "series_id": s.series_id,
                    "title": s.title,
                    "genres": list(s.genres),
                    "cliffhanger_strength": s.cliffhanger_strength,
                    "licensing": {c: [w[0], w[1]] for c, w in sorted(s.licensing.items())},
                    "episodes": [
                        {
                            "episode_id": e.episode_id,
                            "episode_number": e.episode_number,
                            "duration_ms": e.duration_ms,
                            "release_time_ms": e.release_time_ms,
                        }
                        for e in s.episodes
                    ],
                }
                for s in self._series.values()
            ],
        }

    @classmethod
    def from_dict(cls, obj: object) -> Catalog:
        """Validate and build; CatalogError names the offending field, e.g. `series[3].episodes[0].duration_ms`."""
        if not isinstance(obj, dict):
            raise CatalogError(f"top level must be a JSON object, got {type(obj).__name__}")
        version = obj.get("catalog_version")
        if version != CATALOG_VERSION:
            raise CatalogError(f"catalog_version: expected {CATALOG_VERSION}, got {version!r}")
        raw_series = obj.get("series")
        if not isinstance(raw_series, list):
            raise CatalogError("series: must be a list")
        return cls([_series_from_dict(raw, f"series[{i}]") for i, raw in enumerate(raw_series)])

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, separators=(",", ":"))
            f.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Catalog:
        try:
            with open(path, encoding="utf-8") as f:
                obj = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CatalogError(f"{os.fspath(path)}: not valid JSON: {exc}") from None
        except OSError as exc:
            raise CatalogError(f"{os.fspath(path)}: cannot read catalog: {exc.strerror}") from None
        try:
            return cls.from_dict(obj)
        except CatalogError as exc:
            raise CatalogError(f"{os.fspath(path)}: {exc}") from None


def _field(obj: dict, name: str, kind: type | tuple[type, ...], where: str):
    value = obj.get(name)
    if value is None:
        raise CatalogError(f"{where}.{name}: is required")
    if isinstance(value, bool) or not isinstance(value, kind):
        raise CatalogError(f"{where}.{name}: must be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


def _series_from_dict(raw: object, where: str) -> Series:
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: must be an object")
    series_id = _field(raw, "series_id", str, where)
    genres = _field(raw, "genres", list, where)
    for j, g in enumerate(genres):
        if g not in GENRES:
            raise CatalogError(f"{where}.genres[{j}]: unknown genre {g!r}; known: {', '.join(GENRES)}")
    strength = float(_field(raw, "cliffhanger_strength", (int, float), where))
    if not 0.0 <= strength <= 1.0:
        raise CatalogError(f"{where}.cliffhanger_strength: must be in [0, 1], got {strength}")
    licensing = {}
    for country, window in _field(raw, "licensing", dict, where).items():
        if not (isinstance(window, list) and len(window) == 2 and isinstance(window[0], int)):
            raise CatalogError(f"{where}.licensing.{country}: must be [start_ms, end_ms or null]")
        if window[1] is not None and (not isinstance(window[1], int) or window[1] < window[0]):
            raise CatalogError(f"{where}.licensing.{country}: end_ms must be null or an integer >= start_ms")
        licensing[country] = (window[0], window[1])
    episodes = []
    for k, e in enumerate(_field(raw, "episodes", list, where)):
        ew = f"{where}.episodes[{k}]"
        if not isinstance(e, dict):
            raise CatalogError(f"{ew}: must be an object")
        number = _field(e, "episode_number", int, ew)
        if number != k + 1:
            raise CatalogError(f"{ew}.episode_number: episodes must be numbered 1..n in order, got {number}")
        duration = _field(e, "duration_ms", int, ew)
        if duration <= 0:
            raise CatalogError(f"{ew}.duration_ms: must be positive, got {duration}")
        episodes.append(
            Episode(
                episode_id=_field(e, "episode_id", str, ew),
                series_id=series_id,
                episode_number=number,
                duration_ms=duration,
                release_time_ms=_field(e, "release_time_ms", int, ew),
            )
        )
    return Series(
        series_id=series_id,
        title=_field(raw, "title", str, where),
        genres=tuple(genres),
        cliffhanger_strength=strength,
        episodes=tuple(episodes),
        licensing=licensing,
    )
