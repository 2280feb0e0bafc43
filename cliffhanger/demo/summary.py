"""Readable summaries of what landed in Bigtable, for the demo."""

from __future__ import annotations

import collections
import time

from cliffhanger.events import PlaybackEvent, parse_event


def pick_users_and_series(
    payloads: list[bytes], n_users: int = 3, n_series: int = 3
) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """The busiest users, series and cohorts in what was published."""
    users, series, cohorts = collections.Counter(), collections.Counter(), collections.Counter()
    for p in payloads:
        try:
            e = parse_event(p)
        except ValueError:
            continue
        users[e.user_id] += 1
        series[e.series_id] += e.event_type in ("play_start", "complete")
        cohorts[(e.country, e.device)] += 1
    return (
        [u for u, _ in users.most_common(n_users)],
        [s for s, _ in series.most_common(n_series)],
        [c for c, _ in cohorts.most_common(2)],
    )


def _age(ms: int) -> str:
    return f"{max(0.0, time.time() - ms / 1000):.1f}s ago"


def user_lines(user_id: str, row) -> list[str]:
    if row is None:
        return [f"  {user_id}: (no row)"]
    u = row.values.get("u", {})
    mix = sorted((u.get("genre_mix_30m") or {}).items(), key=lambda kv: -kv[1])[:3]
    cw = row.values.get("cw", {})
    watching = sorted(cw.items(), key=lambda kv: -kv[1]["updated_ms"])[:2]
    cand = row.values.get("cand", {}).get("two_tower")
    lines = [
        f"  {user_id}: plays 7d {u.get('plays_7d', 0)}, completion {u.get('completion_rate_7d', 0):.0%}, "
        f"skip {u.get('skip_rate_7d', 0):.0%}, hover-skip {u.get('hover_skip_rate_7d', 0):.0%}, "
        f"binge depth {u.get('binge_depth', 0)} (session {u.get('session_id', '-')}), last active {_age(u.get('last_active_ms', 0))}",
        "      genre mix 30m: " + (", ".join(f"{g} {share:.0%}" for g, share in mix) or "-"),
    ]
    for series_id, state in watching:
        status = (
            "finished"
            if state["completed"]
            else f"at {state['position_ms'] / 1000:.0f}s of {state['duration_ms'] / 1000:.0f}s"
        )
        lines.append(f"      continue watching {series_id}: episode {state['episode_number']} {status}")
    lines.append(
        f"      completed episodes: {len(row.values.get('done', {}))}; candidate list: {_list_len(cand)} items"
    )
    return lines


def series_lines(series_id: str, row) -> list[str]:
    if row is None:
        return [f"  {series_id}: (no row)"]
    i = row.values.get("i", {})
    return [
        f"  {series_id}: plays 5m/1h/24h {i.get('plays_5m', 0)}/{i.get('plays_1h', 0)}/{i.get('plays_24h', 0)}, "
        f"completion 24h {i.get('completion_rate_24h', 0):.0%}, trending {i.get('trending', 0):.1f}"
    ]


def cohort_lines(cohort: tuple[str, str], row) -> list[str]:
    if row is None:
        return [f"  {cohort[0]} x {cohort[1]}: (no row)"]
    top = row.values.get("i", {}).get("trending_series", [])[:3]
    return [f"  {cohort[0]} x {cohort[1]} trending: " + ", ".join(f"{s} ({score:.1f})" for s, score in top)]


def event_summary(e: PlaybackEvent) -> str:
    return f"{e.user_id} {e.event_type} {e.episode_id}"


def _list_len(cell) -> int:
    """Length of a decoded candidate-list cell (either format serving.candidates reads), 0 when absent."""
    if not cell:
        return 0
    from serving import candidates

    try:
        return len(candidates.parse(cell))
    except candidates.CandidateListError:
        return 0
