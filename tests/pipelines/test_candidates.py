"""pipelines/candidates.run(argv) on the DirectRunner against the real emulators, with a tiny real bundle
(serving/devdata.py: untrained query tower + ScaNN over the small world's catalog).

* a notice -> the user's list (N items, all from the bundle, cell time = the notice's event time) and a
  `candidates_refreshed` notice on candidate-changes
* a newer notice after a new bundle is published -> the list is rewritten from the new bundle (hot-swap)
* an older notice processed late -> the newer list stays (the cell timestamp orders them)
* a malformed notice -> candidates-dead-letter with the reason
* an episode drop -> a `new_episode` notice for each viewer waiting for it (and for no one else); a
  malformed catalog payload -> candidates-dead-letter
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from cliffhanger import resources
from cliffhanger.notices import ChangeNotice
from cliffhanger.synth import generate
from models.bundle import load_bundle
from pipelines import candidates
from serving import candidates as cand_mod
from serving import devdata
from serving.feature_store import FeatureStore
from serving.retrieval import QueryEncoder
from tests.factories import event
from tests.pubsub_helpers import drain, publish
from transforms import candidate_lists
from transforms.bigtable_sink import BigtableTarget

pytestmark = pytest.mark.emulators

N = 40
T = 1_795_262_400_000


@pytest.fixture(scope="module")
def world():
    return generate(7, "small")


@pytest.fixture(scope="module")
def artifacts(world, tmp_path_factory) -> devdata.Artifacts:
    users = [u.user_id for u in world.world.users]
    return devdata.build_artifacts(str(tmp_path_factory.mktemp("artifacts")), world.world.catalog, users)


def _empty(project: str) -> None:
    for sub in (
        resources.CANDIDATE_CHANGES_SUBSCRIPTION,
        resources.CANDIDATES_DEAD_LETTER_SUBSCRIPTION,
        resources.FEATURE_CHANGES_CANDIDATES_SUBSCRIPTION,
        resources.CATALOG_CANDIDATES_SUBSCRIPTION,  # drops other tests published
    ):
        drain(project, sub, expect=10**6, timeout_s=1)


def _fresh_start(local_stack, artifacts, tmp_path) -> tuple[str, BigtableTarget]:
    """Empty subscriptions, bundle v1 published; returns (bundle root, the features table)."""
    s = local_stack.settings
    _empty(s.project)
    root = str(tmp_path / "bundles")
    devdata.publish_bundle(root, artifacts, version="v1", seed=1)
    return root, BigtableTarget(s.project, s.bigtable_instance, resources.FEATURES_TABLE)


def _wait_list(store, user_id: str, want_ms: int, timeout_s: float = 90) -> tuple:
    key = cand_mod.user_row(user_id)
    deadline = time.monotonic() + timeout_s
    row = None
    while time.monotonic() < deadline:
        row = store.read([key]).get(key)
        raw = row.get(cand_mod.FAMILY, cand_mod.COLUMN) if row is not None else None
        if raw is not None and cand_mod.parse(raw).generated_ms == want_ms:
            return cand_mod.parse(raw), row.timestamps_ms[cand_mod.FAMILY][cand_mod.COLUMN]
        time.sleep(0.2)
    raise AssertionError(f"list of {user_id} never reached generated_ms {want_ms}; last row {row and row.values}")


def _notice(user: str, version: int, t: int, reason: str = "completed_episode") -> bytes:
    return ChangeNotice("user", user, reason, version, t, "US", "ios").to_json()


def test_notices_become_lists_newer_wins_bad_ones_dead_lettered(
    local_stack, clean_bigtable, world, artifacts, tmp_path
):
    project, s = local_stack.settings.project, local_stack.settings
    root, target = _fresh_start(local_stack, artifacts, tmp_path)
    user = world.world.users[0].user_id
    evs = [event("play_start", t=T - 60_000, user=user), event("complete", t=T, user=user)]
    devdata.seed_features(target, devdata.replay_updates(evs, world.world.catalog))
    store = FeatureStore.open(project, s.bigtable_instance, resources.FEATURES_TABLE)
    user_u = store.read([cand_mod.user_row(user)])[cand_mod.user_row(user)].values["u"]

    result = candidates.run(
        ["--bundle_root", root, "--top_n", str(N), "--reload_check_s", "0.2"]
        + ["--project", project, "--runner", "DirectRunner"]
    )
    try:
        # 1. a notice (plus an older duplicate-ish one for the same user in the same burst) -> the list
        publish(project, resources.FEATURE_CHANGES_TOPIC, [_notice(user, 2, T - 1), _notice(user, 3, T)])
        got, cell_ms = _wait_list(store, user, T)
        bundle = load_bundle(root, load_ranker=False)
        encoder = QueryEncoder(bundle.load_query_tower())
        want = candidate_lists.top_n(
            encoder,
            bundle.index,
            [candidate_lists.query_context(ChangeNotice.from_json(_notice(user, 3, T)), user_u)],
            N,
        )[0]
        assert got.bundle_version == "v1" and cell_ms == T
        assert len(got.items) == N and {e for e, _ in got.items} <= set(bundle.item_ids)
        assert [e for e, _ in got.items] == [e for e, _ in want]
        np.testing.assert_allclose([x for _, x in got.items], [x for _, x in want], atol=1e-5)
        refreshed = [
            ChangeNotice.from_json(m.data) for m in drain(project, resources.CANDIDATE_CHANGES_SUBSCRIPTION, 1)
        ]
        assert [(n.id, n.reason, n.version) for n in refreshed][-1] == (user, "candidates_refreshed", 3)

        # 2. a new bundle, then a newer notice -> rewritten from the new bundle
        devdata.publish_bundle(root, artifacts, version="v2", seed=2)
        time.sleep(0.5)  # past reload_check_s: the next bundle of work looks at CURRENT
        publish(project, resources.FEATURE_CHANGES_TOPIC, [_notice(user, 5, T + 1_000, "new_session")])
        got2, cell2 = _wait_list(store, user, T + 1_000)
        assert got2.bundle_version == "v2" and cell2 == T + 1_000 and len(got2.items) == N

        # 3. an older notice processed late, and a malformed one
        publish(project, resources.FEATURE_CHANGES_TOPIC, [_notice(user, 4, T + 500), b'{"entity": "user"}'])
        dead = drain(project, resources.CANDIDATES_DEAD_LETTER_SUBSCRIPTION, expect=1)
        assert [m.data for m in dead] == [b'{"entity": "user"}']
        assert dead[0].attributes["stage"] == "parse" and dead[0].attributes["field"] == "id"
        assert dead[0].attributes["reason"].startswith("notice: id")
        late = drain(project, resources.CANDIDATE_CHANGES_SUBSCRIPTION, expect=2)  # v5's and the late v4's
        assert {ChangeNotice.from_json(m.data).version for m in late} >= {4}
        still, cell3 = _wait_list(store, user, T + 1_000, timeout_s=5)
        assert cell3 == T + 1_000 and still.bundle_version == "v2"  # the newer list still wins
    finally:
        result.cancel()


def test_a_drop_reaches_the_viewers_waiting_for_it(local_stack, clean_bigtable, world, artifacts, tmp_path):
    from cliffhanger.catalog_events import SERIES_DROP, CatalogEvent
    from serving.live_catalog import drop_payload
    from tests.factories import catalog

    project = local_stack.settings.project
    root, target = _fresh_start(local_stack, artifacts, tmp_path)
    evs = [
        event("complete", t=T, user="u900001", episode=5),  # finished the last of 5 episodes: waiting
        event("complete", t=T, user="u900002", episode=3),  # episode 4 is next for them
        event("play_start", t=T, user="u900003", episode=5),  # resumes episode 5
        event("complete", t=T, user="u900004", series="s0002", episode=5),  # waits for another series
    ]
    devdata.seed_features(target, devdata.replay_updates(evs, catalog()))
    result = candidates.run(["--bundle_root", root, "--project", project, "--runner", "DirectRunner"])
    try:
        dropped = catalog().series("s0001").episodes[-1]
        new = dataclasses.replace(dropped, episode_id="s0001e006", episode_number=6)
        drop = CatalogEvent(SERIES_DROP, "s0001", T + 5_000, 11, episode_id=new.episode_id)
        publish(project, resources.CATALOG_TOPIC, [drop_payload(drop, new), b'{"type": "series:drop"}'])
        got = drain(project, resources.CANDIDATE_CHANGES_SUBSCRIPTION, expect=1, timeout_s=90)
        got += drain(project, resources.CANDIDATE_CHANGES_SUBSCRIPTION, expect=10**6, timeout_s=2)  # no others
        notices = [ChangeNotice.from_json(m.data) for m in got]
        assert [(n.entity, n.id, n.reason, n.version, n.event_time_ms) for n in notices] == [
            ("user", "u900001", "new_episode", 11, T + 5_000)
        ]
        dead = drain(project, resources.CANDIDATES_DEAD_LETTER_SUBSCRIPTION, expect=1)
        assert [m.data for m in dead] == [b'{"type": "series:drop"}']
        assert dead[0].attributes["reason"].startswith("catalog: ") and dead[0].attributes["field"] == "series_id"
    finally:
        result.cancel()
