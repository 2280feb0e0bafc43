"""serving/nextup_warm: what a play_start warms (the next episode, if it can be played) and the dedupe."""

from __future__ import annotations

import pytest

from cliffhanger.catalog import Catalog, Episode, Series
from serving import nextup_warm
from serving.nextup_warm import WarmedSet, first_episodes, next_up
from tests.factories import T0, catalog, event, replace

H = 3_600_000


def _catalog_with_a_drop_and_a_window() -> Catalog:
    # s1: e1, e2 out; e3 released at T0 + 1 h. s2: licensed in US only until T0.
    s1 = tuple(Episode(f"s1e{i:03d}", "s1", i, 10_000, 0 if i < 3 else T0 + H) for i in (1, 2, 3))
    s2 = tuple(Episode(f"s2e{i:03d}", "s2", i, 10_000, 0) for i in (1, 2))
    return Catalog([Series("s1", "t", (), 0.5, s1, {"US": (0, None)}), Series("s2", "t", (), 0.5, s2, {"US": (0, T0)})])


def test_a_play_start_warms_every_chunk_of_the_next_episode_in_the_devices_rendition():
    job = next_up(catalog(), event("play_start", episode=2, device="tv"), 4.0)
    # 90 s in 4 s segments: init + 23 segments, 1080p as a tv's playlist names
    assert job.key == ("s0001e003", "1080p", 1)
    assert job.paths[0] == "/chunks/s0001e003/1080p/v1/init.mp4"
    assert job.paths[1:] == tuple(f"/chunks/s0001e003/1080p/v1/{i}.m4s" for i in range(23))
    assert next_up(catalog(), event("play_start", episode=2, device="ios"), 4.0).rendition == "720p"
    assert next_up(catalog(), event("play_start", episode=2), 4.0, segments=2).paths == (
        "/chunks/s0001e003/720p/v1/init.mp4",
        "/chunks/s0001e003/720p/v1/0.m4s",
        "/chunks/s0001e003/720p/v1/1.m4s",
    )


@pytest.mark.parametrize("event_type", ["impression", "progress", "complete", "skip", "hover"])
def test_only_a_play_start_warms(event_type):
    assert next_up(catalog(), event(event_type, episode=2), 4.0) is None


def test_after_the_last_episode_or_an_unknown_one_there_is_nothing_to_warm():
    assert next_up(catalog(), event("play_start", episode=5), 4.0) is None  # the series has 5
    assert next_up(catalog(), event("play_start", series="s0009"), 4.0) is None


def test_an_unreleased_or_unlicensed_next_episode_is_not_warmed():
    cat = _catalog_with_a_drop_and_a_window()
    e = event("play_start", series="s1", episode=2, episode_id="s1e002", t=T0)
    assert next_up(cat, e, 4.0) is None  # s1e003 comes out in an hour
    assert next_up(cat, replace(e, event_time_ms=T0 + H), 4.0).episode_id == "s1e003"  # now it is out
    assert next_up(cat, replace(e, event_time_ms=T0 + H, country="BR"), 4.0) is None  # never licensed in BR
    s2 = event("play_start", series="s2", episode=1, episode_id="s2e001", t=T0 - 1)
    assert next_up(cat, s2, 4.0).episode_id == "s2e002"
    assert next_up(cat, replace(s2, event_time_ms=T0), 4.0) is None  # the licence window closed at T0


def test_the_warmed_set_dedupes_forgets_the_oldest_and_rewarms_after_max_age():
    warmed = WarmedSet(max_entries=2, max_age_ms=1000)
    assert warmed.claim("a", 0) and not warmed.claim("a", 999)  # warmed once per version
    assert warmed.claim("a", 1000)  # old enough: warm again (a HIT if still cached)
    assert warmed.claim("b", 1001) and warmed.claim("c", 1002)
    assert "a" not in warmed and len(warmed) == 2  # bounded: the least recently warmed went
    warmed.release("b")  # its warm failed: the next event tries again
    assert warmed.claim("b", 1003)
    forever = WarmedSet(max_age_ms=None)
    assert forever.claim("a", 0) and not forever.claim("a", 10**12)
    with pytest.raises(ValueError):
        WarmedSet(max_entries=0)


def test_two_viewers_of_an_episode_warm_its_next_one_once_per_rendition():
    warmed, cat = WarmedSet(), catalog()
    jobs = [
        next_up(cat, event("play_start", episode=2, user=u, device=d), 4.0)
        for u, d in (("u1", "ios"), ("u2", "android"), ("u3", "tv"))
    ]
    assert [warmed.claim(j.key, T0) for j in jobs] == [True, False, True]  # ios and android share 720p


def test_first_episodes_are_the_released_entry_points_per_rendition():
    cat = _catalog_with_a_drop_and_a_window()
    jobs = first_episodes(cat, ("720p", "1080p"), 4.0, at_ms=T0 - 1, segments=1)
    assert [j.key for j in jobs] == [
        ("s1e001", "720p", 1),
        ("s1e001", "1080p", 1),
        ("s2e001", "720p", 1),
        ("s2e001", "1080p", 1),
    ]
    assert [j.episode_id for j in first_episodes(cat, ("720p",), 4.0, at_ms=T0)] == ["s1e001"]  # s2: window over
    assert jobs[0].paths == ("/chunks/s1e001/720p/v1/init.mp4", "/chunks/s1e001/720p/v1/0.m4s")
    assert nextup_warm.rendition_for("fridge") == nextup_warm.FALLBACK_RENDITION
