"""pipelines/streaming_features.run(argv) on the DirectRunner against the real emulators."""

from __future__ import annotations

import random
import time

import pytest

from cliffhanger import resources
from cliffhanger.notices import ChangeNotice
from cliffhanger.synth.faults import malformed_payloads
from pipelines import streaming_features
from serving.feature_store import FeatureStore
from tests.factories import catalog, event, write_catalog
from tests.pubsub_helpers import drain, publish
from transforms import rowkeys
from transforms.feature_rows import entity_keys, entity_row_key, entity_update, new_entity_state, user_updates
from transforms.features import UserState, decode

pytestmark = pytest.mark.emulators


def _start(local_stack, tmp_path):
    return streaming_features.run(
        ["--catalog", write_catalog(tmp_path), "--project", local_stack.settings.project, "--runner", "DirectRunner"]
    )


def _wait_for(store, key, family, column, want, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    row = None
    while time.monotonic() < deadline:
        row = store.read([key]).get(key)
        if row is not None and row.get(family, column) == want:
            return row
        time.sleep(0.2)
    raise AssertionError(f"{key!r} {family}:{column} never became {want!r}; last row: {row and row.values}")


def _expected_cells(events):
    """Every (row, family, column) -> value, by the feature definitions applied directly."""
    cat, cells, by_user, entities, changed = catalog(), {}, {}, {}, set()
    for e in events:
        by_user.setdefault(e.user_id, []).append(e)
        for k in entity_keys(e):
            if entities.setdefault(k, new_entity_state(k)).apply(e):
                changed.add(k)  # the job writes a row only for an entity some event changed
    for user_id, evs in by_user.items():
        state = UserState()
        for e in evs:
            state.apply(e, cat.genres(e.series_id))
        for u in user_updates(user_id, state, evs):
            cells.update({(u.row_key, u.family, c): decode(v) for c, v in u.cells})
    for k, state in entities.items():
        if k not in changed:
            continue
        u = entity_update(k, state)
        cells.update({(u.row_key, u.family, c): decode(v) for c, v in u.cells})
    return cells


def test_events_become_exact_features_and_bad_ones_are_dead_lettered(local_stack, clean_bigtable, tmp_path):
    project = local_stack.settings.project
    for sub in (
        resources.EVENTS_SUBSCRIPTION,  # events other tests published (the topic is shared) are not ours
        resources.EVENTS_DEAD_LETTER_SUBSCRIPTION,
        resources.FEATURE_CHANGES_SUBSCRIPTION,
        resources.ITEM_CHANGES_SERVING_SUBSCRIPTION,
    ):
        drain(project, sub, expect=10**6, timeout_s=1)  # empty it
    now = int(time.time() * 1000)
    valid = [
        event("impression", t=now - 95_000, user="u000001"),
        event("play_start", t=now - 94_000, user="u000001"),
        event("progress", t=now - 60_000, user="u000001", position_ms=45_000),
        event("complete", t=now - 4_000, user="u000001"),
        event("play_start", t=now - 3_000, user="u000001", episode=2),
        event("hover", t=now - 2_000, user="u000002", series="s0002", country="BR", device="android"),
        event("play_start", t=now - 1_000, user="u000002", series="s0002", country="BR", device="android"),
    ]
    too_late = event("play_start", t=now - 30 * 60_000, user="u000003")
    payloads = [e.to_json() for e in valid] + [valid[3].to_json()]  # a duplicate of the complete
    payloads += [too_late.to_json(), b"not json", b'{"schema_version": 1}']
    result = _start(local_stack, tmp_path)
    try:
        publish(project, resources.EVENTS_TOPIC, payloads)
        store = FeatureStore.open(project, local_stack.settings.bigtable_instance, resources.FEATURES_TABLE)
        _wait_for(store, rowkeys.user_key("u000001"), "u", "last_active_ms", now - 3_000)
        _wait_for(store, rowkeys.user_key("u000002"), "u", "plays_7d", 1)
        expected = _expected_cells(valid)
        keys = {k[0] for k in expected}
        _wait_for(store, entity_row_key(entity_keys(valid[-1])[2]), "i", "as_of_ms", now - 1_000)
        rows = store.read(keys)
        got = {
            (key, fam, col): val
            for key, row in rows.items()
            for fam, cols in row.values.items()
            for col, val in cols.items()
        }
        assert got == expected
        u1 = rows[rowkeys.user_key("u000001")]
        assert u1.get("u", "completes_7d") == 1  # the duplicate did not count twice
        assert u1.get("cw", "s0001")["episode_number"] == 2
        assert u1.get("done", "s0001e001") == now - 4_000
        assert u1.timestamps_ms["u"]["plays_7d"] == now - 3_000  # cell time = event time, not wall time

        dead = drain(project, resources.EVENTS_DEAD_LETTER_SUBSCRIPTION, expect=3)
        reasons = sorted((m.attributes["stage"], m.attributes["field"]) for m in dead)
        assert reasons == [("parse", ""), ("parse", "event_id"), ("timeliness", "event_time")]
        assert {m.data for m in dead} == {too_late.to_json(), b"not json", b'{"schema_version": 1}'}
        assert all(m.attributes["reason"] for m in dead)

        notices = [
            ChangeNotice.from_json(m.data) for m in drain(project, resources.FEATURE_CHANGES_SUBSCRIPTION, expect=3)
        ]
        by_user = {(n.id, n.reason) for n in notices}
        assert ("u000001", "completed_episode") in by_user
        assert ("u000002", "new_session") in by_user
        assert all(n.entity == "user" and n.version > 0 for n in notices)

        episodes = {e.episode_id for e in valid if e.event_type in ("play_start", "complete")}
        items = [
            ChangeNotice.from_json(m.data)
            for m in drain(project, resources.ITEM_CHANGES_SERVING_SUBSCRIPTION, expect=len(episodes), timeout_s=30)
        ]
        assert {n.id for n in items} == episodes and {n.entity for n in items} == {"episode"}
        for n in items:  # a notice never announces a version the row does not have yet
            assert n.version <= rows[rowkeys.episode_key(n.id)].get("i", "as_of_ms")
    finally:
        result.cancel()


def test_fuzz_thousands_of_malformed_payloads_interleaved_with_valid_events(local_stack, clean_bigtable, tmp_path):
    project = local_stack.settings.project
    for sub in (resources.EVENTS_SUBSCRIPTION, resources.EVENTS_DEAD_LETTER_SUBSCRIPTION):
        drain(project, sub, expect=10**6, timeout_s=1)
    rng = random.Random(11)
    bad = malformed_payloads(rng, 3000)
    now = int(time.time() * 1000)
    valid = [event("play_start", t=now - 5_000 + i, user=f"u{i % 40:06d}", episode=1 + i % 5) for i in range(200)]
    stream = bad + [e.to_json() for e in valid]
    rng.shuffle(stream)
    result = _start(local_stack, tmp_path)
    try:
        publish(project, resources.EVENTS_TOPIC, stream)
        dead = drain(project, resources.EVENTS_DEAD_LETTER_SUBSCRIPTION, expect=len(bad), timeout_s=120)
        assert sorted(m.data for m in dead) == sorted(bad)
        assert all(m.attributes["stage"] == "parse" and m.attributes["reason"] for m in dead)
        store = FeatureStore.open(project, local_stack.settings.bigtable_instance, resources.FEATURES_TABLE)
        series_row = _wait_for(store, rowkeys.series_key("s0001"), "i", "plays_24h", 200)
        assert series_row.get("i", "plays_5m") == 200
        users = store.read([rowkeys.user_key(f"u{i:06d}") for i in range(40)])
        assert sum(r.get("u", "plays_7d") for r in users.values()) == 200
    finally:
        result.cancel()
