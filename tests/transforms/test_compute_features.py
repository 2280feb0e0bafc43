"""ParseEvents + ComputeFeatures on the DirectRunner with TestStream: out-of-order, duplicate,
late-but-allowed and too-late events, and the sliding item windows."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to, equal_to_per_window
from apache_beam.transforms.trigger import AccumulationMode, AfterWatermark
from apache_beam.transforms.window import GlobalWindow, GlobalWindows

from tests.factories import MIN, T0, catalog, event, write_catalog
from transforms import rowkeys
from transforms.compute_features import ACCEPTED, ROWS, ComputeFeatures
from transforms.feature_rows import entity_keys, entity_update, new_entity_state, user_updates
from transforms.features import UserState
from transforms.parse import DEAD_LETTER, EVENTS, ParseEvents, RawEvent, with_event_time

LATENESS_S, SKEW_S = 600, 120


def _options():
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    return options


def _final(rows):
    """Per (row, family, column): the value a Bigtable reader sees once everything is written."""
    return (
        rows
        | "AtEnd"
        >> beam.WindowInto(GlobalWindows(), trigger=AfterWatermark(), accumulation_mode=AccumulationMode.DISCARDING)
        | "CellKeys"
        >> beam.FlatMap(lambda u: [((u.row_key, u.family, c), (u.timestamp_ms, u.seq, v)) for c, v in u.cells])
        | "Newest" >> beam.CombinePerKey(max)
        | "Decode" >> beam.Map(lambda kv: (kv[0], kv[1][2]))
    )


def _expected(events):
    """The same definitions applied directly, once per event, in event-time order."""
    cat = catalog()
    cells = {}
    users = {}
    for e in sorted(events, key=lambda e: e.event_time_ms):
        users.setdefault(e.user_id, []).append(e)
    for user_id, evs in users.items():
        state = UserState()
        for e in evs:
            state.apply(e, cat.genres(e.series_id))
        for u in user_updates(user_id, state, evs):
            for c, v in u.cells:
                cells[(u.row_key, u.family, c)] = v
    entities = {}
    for e in events:
        for k in entity_keys(e):
            entities.setdefault(k, new_entity_state(k)).apply(e)
    for k, state in entities.items():
        u = entity_update(k, state)
        for c, v in u.cells:
            cells[(u.row_key, u.family, c)] = v
    return sorted(cells.items())


def _stream(items):
    """items: RawEvent, [RawEvent, ...] (one batch) or ('watermark', seconds). Arrival = publish time;
    TestStream timestamp = arrival."""
    ts = TestStream()
    for item in items:
        if isinstance(item, tuple):
            ts = ts.advance_watermark_to(item[1])
        elif isinstance(item, list):
            ts = ts.add_elements([beam.window.TimestampedValue(r, r.arrival_ms / 1000) for r in item])
        else:
            ts = ts.add_elements([beam.window.TimestampedValue(item, item.arrival_ms / 1000)])
    return ts.advance_watermark_to_infinity()


def raw(e, arrival_ms=None):
    return RawEvent(e.to_json(), e.event_time_ms + 500 if arrival_ms is None else arrival_ms)


def test_out_of_order_duplicates_and_late_data(tmp_path):
    play = event("play_start", t=T0, episode=1)
    done = event("complete", t=T0 + 90_000, episode=1)
    nxt = event("play_start", t=T0 + 91_000, episode=2)
    late_ok = event("progress", t=T0 + 30_000, episode=1, position_ms=30_000)  # arrives 5 min late: allowed
    too_late = event("play_start", t=T0 - 20 * MIN, series="s0002")  # arrives 20 min late: dead-lettered
    other = event("play_start", t=T0 + 2 * MIN, user="u000002", series="s0002", device="android", country="BR")
    items = [
        raw(done),  # out of order: the complete arrives before its play_start
        raw(play, T0 + 95_000),
        ("watermark", (T0 + 100_000) / 1000),
        raw(nxt),
        raw(done, T0 + 120_000),  # duplicate, byte-identical
        raw(late_ok, T0 + 30_000 + 5 * MIN),
        raw(too_late, T0 + 2 * MIN),
        raw(other),
        RawEvent(b'{"schema_version": 1, "event_id": "x"', T0),  # malformed
    ]
    catalog_path = write_catalog(tmp_path)
    with TestPipeline(options=_options()) as p:
        parsed = p | _stream(items) | ParseEvents(LATENESS_S, SKEW_S)
        out = parsed[EVENTS] | beam.Map(with_event_time) | ComputeFeatures(catalog_path)
        accepted = out[ACCEPTED] | "Ids" >> beam.Map(lambda e: e.event_id)
        assert_that(accepted, equal_to([e.event_id for e in (play, done, nxt, late_ok, other)]), label="DedupedOnce")
        reasons = parsed[DEAD_LETTER] | beam.Map(lambda d: (d.stage, d.field, d.reason.split(":")[0]))
        assert_that(
            reasons,
            equal_to_per_window(
                {GlobalWindow(): [("timeliness", "event_time", "late"), ("parse", "", "payload is not JSON")]}
            ),
            label="DeadLetters",
        )
        final = _final(out[ROWS])
        assert_that(final, equal_to(_expected([play, done, nxt, late_ok, other])), label="FinalFeatures")


def test_final_user_row_values(tmp_path):
    """Spot-check decoded values, not just agreement with the definitions."""
    evs = [event("play_start", t=T0), event("complete", t=T0 + 90_000), event("play_start", t=T0 + 91_000, episode=2)]
    catalog_path = write_catalog(tmp_path)
    key = rowkeys.user_key("u000001")
    with TestPipeline(options=_options()) as p:
        parsed = p | _stream([raw(e) for e in reversed(evs)]) | ParseEvents(LATENESS_S, SKEW_S)
        rows = (parsed[EVENTS] | beam.Map(with_event_time) | ComputeFeatures(catalog_path))[ROWS]
        final = _final(rows) | beam.Filter(
            lambda kv: kv[0][0] == key and kv[0][2] in ("completion_rate_7d", "binge_depth", "s0001")
        )
        assert_that(
            final,
            equal_to(
                [
                    ((key, "u", "binge_depth"), b"1"),
                    ((key, "u", "completion_rate_7d"), b"0.5"),
                    (
                        (key, "cw", "s0001"),
                        b'{"completed":false,"duration_ms":90000,"episode_id":"s0001e002","episode_number":2,"position_ms":0,"updated_ms":%d}'
                        % (T0 + 91_000),
                    ),
                ]
            ),
        )


@pytest.mark.parametrize("minutes_ago,in_5m,in_1h", [(2, 1, 1), (20, 0, 1), (90, 0, 0)])
def test_episode_sliding_windows(tmp_path, minutes_ago, in_5m, in_1h):
    old = event("play_start", t=T0 - minutes_ago * MIN, user="u000009")
    now = event("play_start", t=T0, user="u000008")
    catalog_path = write_catalog(tmp_path)
    key = rowkeys.episode_key("s0001e001")
    with TestPipeline(options=_options()) as p:
        # the old event arrives on time (it happened long ago, and was sent then)
        parsed = p | _stream([raw(old), ("watermark", (T0 - MIN) / 1000), raw(now)]) | ParseEvents(LATENESS_S, SKEW_S)
        rows = (parsed[EVENTS] | beam.Map(with_event_time) | ComputeFeatures(catalog_path))[ROWS]
        final = _final(rows) | beam.Filter(
            lambda kv: kv[0][0] == key and kv[0][2] in ("plays_5m", "plays_1h", "plays_24h")
        )
        assert_that(
            final,
            equal_to(
                [
                    ((key, "i", "plays_5m"), b"%d" % (1 + in_5m)),
                    ((key, "i", "plays_1h"), b"%d" % (1 + in_1h)),
                    ((key, "i", "plays_24h"), b"2"),
                ]
            ),
        )


def test_user_change_carries_the_cohort_of_the_latest_accepted_event():
    from transforms.compute_features import user_change

    state = UserState()
    evs = [
        event("complete", t=T0 + 2_000, country="BR", device="android"),
        event("play_start", t=T0, country="US", device="ios"),
    ]
    for e in evs:
        state.apply(e)
    notice = user_change("u000001", state, evs, session_before="")
    assert (notice.reason, notice.country, notice.device) == ("completed_episode", "BR", "android")
    assert notice.version == 2 and notice.event_time_ms == T0 + 2_000


def test_the_catalog_is_reread_when_the_file_changes(tmp_path):
    """An episode drop publishes a new catalog.json; running jobs see it without a restart."""
    import json
    import os

    from transforms.compute_features import load_catalog

    path = write_catalog(tmp_path)
    first = load_catalog(path, recheck_s=0)
    assert load_catalog(path, recheck_s=0) is first  # unchanged file: the cached object
    with open(path) as f:
        raw = json.loads(f.read())
    raw["series"][0]["episodes"].append(
        {"episode_id": "s0001e006", "episode_number": 6, "duration_ms": 90_000, "release_time_ms": 0}
    )
    with open(path, "w") as f:
        f.write(json.dumps(raw))
    os.utime(path, (1, 2_000_000_000))  # a new modification time even within the same second
    assert load_catalog(path, recheck_s=3600) is first  # not looked at again within recheck_s
    dropped = load_catalog(path, recheck_s=0)
    assert dropped.episode("s0001e006").episode_number == 6


def test_episode_change_is_rate_limited_in_event_time():
    from transforms.compute_features import episode_change
    from transforms.features import CohortState, ItemState

    state = ItemState()
    state.apply(event("play_start", t=T0 + 1_500))
    first = episode_change("e|s0001e001", state, None, interval_ms=1_000)
    assert (first.entity, first.id, first.reason, first.version, first.event_time_ms) == (
        "episode",
        "s0001e001",
        "item_features",
        T0 + 1_500,
        T0 + 1_500,
    )
    assert episode_change("e|s0001e001", state, T0 + 501, interval_ms=1_000) is None  # 999 ms since the last
    assert episode_change("e|s0001e001", state, T0 + 500, interval_ms=1_000).version == T0 + 1_500
    assert episode_change("e|s0001e001", state, T0 + 1_500, interval_ms=0) is None  # never the same version twice
    assert episode_change("s|s0001", state, None) is None and episode_change("c|US|ios", CohortState(), None) is None


def test_episode_notices_at_most_one_per_bundle_and_interval(tmp_path):
    """Bundles (TestStream batches) of events for episode 1; the expected notices, by version:
    T0 (first), not T0+200 (within 1 s), T0+1500, T0+3200 (one for the three events of that bundle),
    not the late T0+100 (as_of does not move). Episode 2's single event gets its own notice."""
    from transforms.compute_features import ITEM_CHANGES

    def ev(t, episode=1, kind="play_start"):
        return raw(event(kind, t=T0 + t, episode=episode, user=f"u{t:06d}"))

    items = [
        ev(0),
        ("watermark", (T0 + 100) / 1000),
        ev(200),
        ("watermark", (T0 + 300) / 1000),
        ev(1_500),
        ("watermark", (T0 + 1_600) / 1000),
        [ev(3_000), ev(3_100, kind="complete"), ev(3_200), ev(3_200, episode=2)],  # one batch
        ("watermark", (T0 + 3_300) / 1000),
        raw(event("play_start", t=T0 + 100, user="u100100"), T0 + 4_000),  # late but allowed
    ]
    catalog_path = write_catalog(tmp_path)
    with TestPipeline(options=_options()) as p:
        parsed = p | _stream(items) | ParseEvents(LATENESS_S, SKEW_S)
        out = parsed[EVENTS] | beam.Map(with_event_time) | ComputeFeatures(catalog_path, notice_interval_ms=1_000)
        got = out[ITEM_CHANGES] | beam.Map(lambda n: (n.entity, n.id, n.reason, n.version))
        want = [("episode", "s0001e001", "item_features", T0 + t) for t in (0, 1_500, 3_200)]
        assert_that(got, equal_to([*want, ("episode", "s0001e002", "item_features", T0 + 3_200)]))
