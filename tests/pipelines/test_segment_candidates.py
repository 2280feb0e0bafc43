"""pipelines/segment_candidates.run(argv) against the Bigtable emulator with a tiny real bundle: segment
lists from the query tower (licensed in the segment's country), the global list by plays_24h."""

from __future__ import annotations

import pytest

from cliffhanger import resources
from cliffhanger.synth import generate
from pipelines import segment_candidates
from serving import candidates as cand_mod
from serving import devdata
from serving.feature_store import FeatureStore
from transforms import candidate_lists, rowkeys
from transforms.bigtable_sink import BigtableTarget

pytestmark = pytest.mark.emulators

N = 25
NOW_MS = 1_795_300_000_000  # after the small world's events, inside its licensing windows


@pytest.fixture(scope="module")
def world():
    return generate(7, "small")


def test_segment_and_global_lists(local_stack, clean_bigtable, world, tmp_path):
    project, s = local_stack.settings.project, local_stack.settings
    cat = world.world.catalog
    artifacts = devdata.build_artifacts(str(tmp_path / "artifacts"), cat, [u.user_id for u in world.world.users])
    root = str(tmp_path / "bundles")
    devdata.publish_bundle(root, artifacts, version="v1")
    catalog_path = tmp_path / "catalog.json"
    cat.save(catalog_path)
    target = BigtableTarget(project, s.bigtable_instance, resources.FEATURES_TABLE)
    devdata.seed_features(target, devdata.replay_updates([m.event for m in world.events], cat))

    argv = ["--bundle_root", root, "--catalog", str(catalog_path), "--top_n", str(N), "--project", project]
    summary = segment_candidates.run([*argv, "--generated_ms", str(NOW_MS)])
    segments = segment_candidates.segments_of(cat)
    assert summary["rows_written"] == len(segments) + 1 and summary["bundle_version"] == "v1"

    store = FeatureStore.open(project, s.bigtable_instance, resources.FEATURES_TABLE)
    keys = [cand_mod.segment_row(c, d) for c, d in segments] + [cand_mod.global_row()]
    rows = store.read(keys)
    for (country, device), key in zip(segments, keys, strict=False):
        lst = cand_mod.parse(rows[key].get(cand_mod.FAMILY, cand_mod.COLUMN))
        allowed = candidate_lists.licensed_episodes(cat, country, NOW_MS)
        assert lst.bundle_version == "v1" and lst.generated_ms == NOW_MS
        assert len(lst.items) == min(N, len(allowed)) and {e for e, _ in lst.items} <= allowed, (country, device)
        scores = [x for _, x in lst.items]
        assert scores == sorted(scores, reverse=True)  # tower order kept
        assert rows[key].timestamps_ms[cand_mod.FAMILY][cand_mod.COLUMN] == NOW_MS

    glob = cand_mod.parse(rows[cand_mod.global_row()].get(cand_mod.FAMILY, cand_mod.COLUMN))
    assert len(glob.items) == N
    ep_rows = store.read([rowkeys.episode_key(e) for e, _ in glob.items])
    plays = [ep_rows[rowkeys.episode_key(e)].get("i", "plays_24h", 0) for e, _ in glob.items if _ > 0]
    assert plays and plays == sorted(plays, reverse=True)
    assert [x for _, x in glob.items if x > 0] == [float(p) for p in plays]  # score = plays_24h
    assert {e for e, _ in glob.items} <= candidate_lists.licensed_episodes(cat, None, NOW_MS)
