"""transforms/candidates_drop.py: which viewers wait for a dropped episode (pure rule, then a real scan
of the Bigtable emulator), and how catalog payloads are routed."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from cliffhanger.catalog import Episode
from cliffhanger.catalog_events import LICENSING_CHANGE, SERIES_DROP, SERIES_UPDATE, CatalogEvent
from serving.live_catalog import drop_payload
from tests.factories import T0, catalog, event
from transforms.candidates_drop import (
    DROPS,
    NEW_EPISODE,
    Drop,
    ParseDrops,
    new_episode_notice,
    waiting,
    waiting_viewers,
)
from transforms.parse import DEAD_LETTER, RawEvent


def _cw(number: int, completed: bool) -> dict:
    return {"episode_id": f"s0001e{number:03d}", "episode_number": number, "completed": completed}


@pytest.mark.parametrize(
    "state,number,want",
    [
        (_cw(5, True), 6, True),  # finished the last episode: waiting for episode 6
        (_cw(6, True), 6, True),  # already further (a redelivered drop): purging again is harmless
        (_cw(4, True), 6, False),  # episode 5 is next for them: nothing changed
        (_cw(5, False), 6, False),  # in the middle of episode 5: resumes there
        (_cw(3, True), None, True),  # the drop did not say which episode: every finisher (a superset)
        (_cw(3, False), None, False),
        ({"completed": True}, 6, False),  # no episode number in the cell: cannot tell, not waiting
    ],
)
def test_waiting(state, number, want):
    assert waiting(state, number) is want


def test_parse_drops_reads_the_episode_number_and_dead_letters_bad_payloads():
    ep6 = Episode("s0001e006", "s0001", 6, 90_000, T0)
    with_number = drop_payload(CatalogEvent(SERIES_DROP, "s0001", T0, 7, episode_id="s0001e006"), ep6)
    without = CatalogEvent(SERIES_DROP, "s0002", T0 + 1, 3, episode_id="s0002e006").to_json()
    update = CatalogEvent(SERIES_UPDATE, "s0001", T0, 8).to_json()
    licensing = CatalogEvent(LICENSING_CHANGE, "s0001", T0, 9, countries=("BR",)).to_json()
    no_episode = b'{"type": "series:drop", "series_id": "s0001", "event_time_ms": 1, "version": 1}'
    raws = [RawEvent(p, T0) for p in (with_number, without, update, licensing, no_episode, b"not json")]
    with TestPipeline() as p:
        out = p | beam.Create(raws) | ParseDrops()
        assert_that(
            out[DROPS],
            equal_to([Drop("s0001", "s0001e006", 6, 7, T0), Drop("s0002", "s0002e006", None, 3, T0 + 1)]),
            label="Drops",
        )
        dead = out[DEAD_LETTER] | beam.Map(lambda d: (d.payload, d.stage, d.field, d.reason.split(":")[0]))
        assert_that(
            dead,
            equal_to([(no_episode, "parse", "episode_id", "catalog"), (b"not json", "parse", "", "catalog")]),
            label="DeadLetters",
        )


def test_new_episode_notice():
    n = new_episode_notice("u000001", Drop("s0001", "s0001e006", 6, 7, T0))
    assert (n.entity, n.id, n.reason, n.version, n.event_time_ms) == ("user", "u000001", NEW_EPISODE, 7, T0)


@pytest.mark.emulators
def test_waiting_viewers_from_one_filtered_scan(clean_bigtable):
    from serving import devdata
    from transforms.bigtable_sink import BigtableTarget

    s = clean_bigtable.settings
    target = BigtableTarget(s.project, s.bigtable_instance, "features")
    evs = [
        event("complete", t=T0, user="u000001", episode=5),  # finished the last of 5: waiting
        event("complete", t=T0, user="u000002", episode=3),  # episode 4 is next
        event("play_start", t=T0, user="u000003", episode=5),  # watching the last one
        event("complete", t=T0, user="u000004", series="s0002", episode=5),  # another series
        event("complete", t=T0, user="u000005", episode=4),
        event("complete", t=T0 + 1_000, user="u000005", episode=5),  # waiting too
        event("play_start", t=T0, user="u000006", series="s0002"),
    ]
    devdata.seed_features(target, devdata.replay_updates(evs, catalog()))
    table = target.open_table()
    assert sorted(waiting_viewers(table, Drop("s0001", "s0001e006", 6, 1, T0))) == ["u000001", "u000005"]
    assert sorted(waiting_viewers(table, Drop("s0001", "s0001e006", None, 1, T0))) == [
        "u000001",
        "u000002",
        "u000005",
    ]
    assert list(waiting_viewers(table, Drop("s0009", "s0009e002", 2, 1, T0))) == []
