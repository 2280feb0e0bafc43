"""Feature definitions: the ONE place feature logic lives.

Pure Python, no Beam: the streaming pipeline (stateful DoFns), the batch training pipeline
(point-in-time replay) and the PyFlink job all call these classes, so they compute the same values.

Each aggregate is a small state machine:

    state = UserState()               # or ItemState() / CohortState()
    state.apply(event, genres)        # -> False if the event was already applied (duplicate)
    state.features()                  # -> {column: JSON-ready value}, as of state.as_of_ms

Guarantees the pipelines rely on:
  * Order-independent: any arrival order of the same events gives the same features (buckets are
    commutative sums; "latest" picks use a total order on (event_time, type rank, event_id)).
  * Idempotent: applying an event twice is a no-op (UserState remembers event ids for
    DEDUPE_HORIZON_MS; the features pipeline dedupes there and only forwards accepted events).
  * Evaluated "as of" the latest event time seen for the key (`as_of_ms`), never a wall clock.
    Buckets that can no longer fall inside any window are pruned, so state stays small.

Window definitions (event time, UTC):
  user   genre_mix_30m       play_start counts per genre, minute buckets in (as_of - 30 min, as_of]
  user   *_7d rates          hour buckets in the last 168 hours (the current partial hour included)
  user   binge_depth         distinct episodes completed in the session of the latest event
  user   recent_completed    the HISTORY_LEN most recently completed episodes, newest first (query tower history)
  item   *_5m / *_1h         minute buckets in the last 5 / 60 minutes
  item   *_24h               hour buckets in the last 24 hours
  item   trending            sum over the last 60 minute buckets of (plays + 2 * completes) * 0.5 ** (age_min / 15)
  cohort trending_series     the same trending score per series, top TRENDING_TOP_K
"""

from __future__ import annotations

import json
from typing import Any

from cliffhanger.config import Settings
from cliffhanger.events import PlaybackEvent

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS

GENRE_WINDOW_MIN = 30
RATE_WINDOW_H = 7 * 24
ITEM_MINUTE_WINDOWS = {"5m": 5, "1h": 60}
ITEM_HOUR_WINDOWS = {"24h": 24}
TRENDING_HORIZON_MIN = 60
TRENDING_HALF_LIFE_MIN = 15.0
TRENDING_TOP_K = 20
SESSION_RETENTION_MS = 24 * HOUR_MS
CONTINUE_WATCHING_MAX_SERIES = 50
HISTORY_LEN = 50  # completed episodes kept for the query tower's history input

_defaults = Settings()
# Dedupe must outlive every duplicate the lateness gate can still let through (see events.timeliness_error).
DEDUPE_HORIZON_MS = (_defaults.allowed_lateness_s + _defaults.max_clock_skew_s) * 1000 + 5 * MINUTE_MS

# Counters kept per hour for the user's 7-day rates, in this order.
USER_COUNTERS = ("impression", "play_start", "complete", "skip", "hover", "like", "share")
_USER_INDEX = {name: i for i, name in enumerate(USER_COUNTERS)}
# Total order used to pick the "latest" playback state when two events share a timestamp.
_TYPE_RANK = {
    "impression": 0,
    "hover": 1,
    "play_start": 2,
    "progress": 3,
    "like": 4,
    "share": 5,
    "skip": 6,
    "complete": 7,
}
_PLAYBACK_TYPES = frozenset({"play_start", "progress", "complete", "skip"})


def _rate(num: int, den: int) -> float:
    """num / den rounded to 6 places; 0.0 for an empty window. Capped at 1.0 (a play can start
    before a window opens and complete inside it)."""
    if den <= 0 and num <= 0:
        return 0.0
    return round(min(1.0, num / max(den, num)), 6)


def trending_score(minute_weights: dict[int, float], as_of_min: int) -> float:
    """Exponentially decayed activity: sum of weight * 0.5 ** (age_min / half_life) over the horizon."""
    score = 0.0
    for minute, weight in minute_weights.items():
        age = as_of_min - minute
        if 0 <= age < TRENDING_HORIZON_MIN:
            score += weight * 0.5 ** (age / TRENDING_HALF_LIFE_MIN)
    return round(score, 4)


def _weight(event_type: str) -> int:
    return 1 if event_type == "play_start" else 2 if event_type == "complete" else 0


class UserState:
    """Per-user aggregates. Memory: O(events in the dedupe horizon + 30 + 168 buckets + sessions)."""

    __slots__ = (
        "applied",
        "as_of_ms",
        "seen",
        "genre_minutes",
        "hourly",
        "sessions",
        "latest",
        "playback",
        "completed",
    )

    def __init__(self) -> None:
        self.applied = 0  # events folded in; increases with every accepted event (orders updates)
        self.as_of_ms = 0
        self.seen: dict[str, int] = {}  # event_id -> event_time_ms
        self.genre_minutes: dict[int, dict[str, int]] = {}  # minute -> genre -> play_start count
        self.hourly: dict[int, list[int]] = {}  # hour -> counts in USER_COUNTERS order
        self.sessions: dict[str, tuple[int, frozenset[str]]] = {}  # session -> (last event ms, completed episodes)
        self.latest: tuple[int, int, str, str] = (0, 0, "", "")  # (t, rank, event_id, session_id)
        self.playback: dict[str, tuple] = {}  # series -> (t, rank, event_id, ep_id, ep_no, pos, dur, type)
        self.completed: dict[str, int] = {}  # episode_id -> latest completion time, newest HISTORY_LEN kept

    def apply(self, e: PlaybackEvent, genres: tuple[str, ...] = ()) -> bool:
        """Fold one event in. Returns False (and changes nothing) if it was applied before."""
        if e.event_id in self.seen:
            return False
        t = e.event_time_ms
        self.seen[e.event_id] = t
        self.applied += 1
        if t > self.as_of_ms:
            self.as_of_ms = t
        rank = _TYPE_RANK[e.event_type]
        idx = _USER_INDEX.get(e.event_type)
        if idx is not None:
            self.hourly.setdefault(t // HOUR_MS, [0] * len(USER_COUNTERS))[idx] += 1
        if e.event_type == "play_start":
            bucket = self.genre_minutes.setdefault(t // MINUTE_MS, {})
            for g in genres:
                bucket[g] = bucket.get(g, 0) + 1
        last, done = self.sessions.get(e.session_id, (0, frozenset()))
        if e.event_type == "complete":
            done = done | {e.episode_id}
            if t > self.completed.get(e.episode_id, -1):
                self.completed[e.episode_id] = t
        self.sessions[e.session_id] = (max(last, t), done)
        self.latest = max(self.latest, (t, rank, e.event_id, e.session_id))
        if e.event_type in _PLAYBACK_TYPES:
            cand = (t, rank, e.event_id, e.episode_id, e.episode_number, e.position_ms, e.duration_ms, e.event_type)
            if e.series_id not in self.playback or cand > self.playback[e.series_id]:
                self.playback[e.series_id] = cand
        self._prune()
        return True

    def _prune(self) -> None:
        now = self.as_of_ms
        if len(self.seen) > 64:
            cutoff = now - DEDUPE_HORIZON_MS
            self.seen = {k: v for k, v in self.seen.items() if v >= cutoff}
        min_minute = now // MINUTE_MS - GENRE_WINDOW_MIN + 1
        for m in [m for m in self.genre_minutes if m < min_minute]:
            del self.genre_minutes[m]
        min_hour = now // HOUR_MS - RATE_WINDOW_H + 1
        for h in [h for h in self.hourly if h < min_hour]:
            del self.hourly[h]
        if len(self.sessions) > 4:
            cutoff = now - SESSION_RETENTION_MS
            current = self.latest[3]
            self.sessions = {s: v for s, v in self.sessions.items() if v[0] >= cutoff or s == current}
        if len(self.completed) > HISTORY_LEN:
            newest = sorted(self.completed.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:HISTORY_LEN]
            self.completed = dict(newest)
        if len(self.playback) > CONTINUE_WATCHING_MAX_SERIES:
            keep = sorted(self.playback.items(), key=lambda kv: kv[1], reverse=True)[:CONTINUE_WATCHING_MAX_SERIES]
            self.playback = dict(keep)

    def features(self) -> dict[str, Any]:
        """Family `u` columns, as of as_of_ms."""
        totals = [0] * len(USER_COUNTERS)
        for counts in self.hourly.values():
            for i, c in enumerate(counts):
                totals[i] += c
        n = dict(zip(USER_COUNTERS, totals, strict=True))
        genre_counts: dict[str, int] = {}
        for bucket in self.genre_minutes.values():
            for g, c in bucket.items():
                genre_counts[g] = genre_counts.get(g, 0) + c
        total_plays = sum(genre_counts.values())
        session = self.latest[3]
        return {
            "genre_mix_30m": {g: round(c / total_plays, 6) for g, c in sorted(genre_counts.items())},
            "impressions_7d": n["impression"],
            "plays_7d": n["play_start"],
            "completes_7d": n["complete"],
            "completion_rate_7d": _rate(n["complete"], n["play_start"]),
            "skip_rate_7d": _rate(n["skip"], n["play_start"]),
            "hover_skip_rate_7d": _rate(n["hover"], n["impression"]),
            "likes_7d": n["like"],
            "shares_7d": n["share"],
            "session_id": session,
            "binge_depth": len(self.sessions.get(session, (0, frozenset()))[1]),
            "recent_completed": [
                ep for ep, _ in sorted(self.completed.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
            ],
            "last_active_ms": self.as_of_ms,
        }

    def continue_watching(self, series_id: str) -> dict[str, Any] | None:
        """Family `cw`, column = series_id: where this user is in that series."""
        p = self.playback.get(series_id)
        if p is None:
            return None
        t, _, _, episode_id, episode_number, position_ms, duration_ms, event_type = p
        return {
            "episode_id": episode_id,
            "episode_number": episode_number,
            "position_ms": position_ms,
            "duration_ms": duration_ms,
            "completed": event_type == "complete",
            "updated_ms": t,
        }


class ItemState:
    """Per-episode or per-series counters: plays and completes in minute and hour buckets."""

    __slots__ = ("applied", "as_of_ms", "minutes", "hours")

    def __init__(self) -> None:
        self.applied = 0
        self.as_of_ms = 0
        self.minutes: dict[int, list[int]] = {}  # minute -> [plays, completes]
        self.hours: dict[int, list[int]] = {}  # hour -> [plays, completes]

    def apply(self, e: PlaybackEvent, genres: tuple[str, ...] = ()) -> bool:
        """Fold one ACCEPTED (already deduplicated) event in. True if it changed a counter."""
        if e.event_type not in ("play_start", "complete"):
            return False
        t = e.event_time_ms
        self.applied += 1
        if t > self.as_of_ms:
            self.as_of_ms = t
        slot = 0 if e.event_type == "play_start" else 1
        self.minutes.setdefault(t // MINUTE_MS, [0, 0])[slot] += 1
        self.hours.setdefault(t // HOUR_MS, [0, 0])[slot] += 1
        min_minute = self.as_of_ms // MINUTE_MS - TRENDING_HORIZON_MIN + 1
        for m in [m for m in self.minutes if m < min_minute]:
            del self.minutes[m]
        min_hour = self.as_of_ms // HOUR_MS - max(ITEM_HOUR_WINDOWS.values()) + 1
        for h in [h for h in self.hours if h < min_hour]:
            del self.hours[h]
        return True

    def features(self) -> dict[str, Any]:
        """Family `i` columns, as of as_of_ms."""
        out: dict[str, Any] = {}
        now_min, now_hour = self.as_of_ms // MINUTE_MS, self.as_of_ms // HOUR_MS
        windows = [(name, self.minutes, now_min, size) for name, size in ITEM_MINUTE_WINDOWS.items()]
        windows += [(name, self.hours, now_hour, size) for name, size in ITEM_HOUR_WINDOWS.items()]
        for name, buckets, now, size in windows:
            plays = sum(v[0] for k, v in buckets.items() if k > now - size)
            completes = sum(v[1] for k, v in buckets.items() if k > now - size)
            out[f"plays_{name}"] = plays
            out[f"completes_{name}"] = completes
            out[f"completion_rate_{name}"] = _rate(completes, plays)
        out["trending"] = trending_score({m: v[0] + 2 * v[1] for m, v in self.minutes.items()}, now_min)
        out["as_of_ms"] = self.as_of_ms
        return out


class CohortState:
    """Per (country, device): trending series, by the same decayed score as ItemState.trending."""

    __slots__ = ("applied", "as_of_ms", "series_minutes")

    def __init__(self) -> None:
        self.applied = 0
        self.as_of_ms = 0
        self.series_minutes: dict[str, dict[int, int]] = {}  # series -> minute -> weight

    def apply(self, e: PlaybackEvent, genres: tuple[str, ...] = ()) -> bool:
        w = _weight(e.event_type)
        if not w:
            return False
        t = e.event_time_ms
        self.applied += 1
        if t > self.as_of_ms:
            self.as_of_ms = t
        minutes = self.series_minutes.setdefault(e.series_id, {})
        m = t // MINUTE_MS
        minutes[m] = minutes.get(m, 0) + w
        min_minute = self.as_of_ms // MINUTE_MS - TRENDING_HORIZON_MIN + 1
        for sid in list(self.series_minutes):
            buckets = self.series_minutes[sid]
            for old in [k for k in buckets if k < min_minute]:
                del buckets[old]
            if not buckets:
                del self.series_minutes[sid]
        return True

    def features(self) -> dict[str, Any]:
        now_min = self.as_of_ms // MINUTE_MS
        scored = [(trending_score(b, now_min), sid) for sid, b in self.series_minutes.items()]
        top = sorted(scored, key=lambda s: (-s[0], s[1]))[:TRENDING_TOP_K]
        return {"trending_series": [[sid, score] for score, sid in top if score > 0], "as_of_ms": self.as_of_ms}


def encode(value: Any) -> bytes:
    """The Bigtable cell encoding of a feature value: compact, key-sorted JSON."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")


# A cell starting with NUL is not JSON (JSON never starts with NUL): a binary value its owner parses,
# e.g. serving/candidates.py's candidate lists. decode() hands those over as bytes.
BINARY_PREFIX = b"\0"


def decode(raw: bytes) -> Any:
    if raw[:1] == BINARY_PREFIX:
        return bytes(raw)
    return json.loads(raw)
