"""pipelines/train.run(argv) end to end on a small world: a published, loadable bundle; a failed gate
publishes nothing; bad input is named."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cliffhanger.synth import FaultKnobs, generate, write_world
from models.bundle import BundleGateError, current_version, load_bundle
from models.query_features import QueryContext
from models.ranker_features import MICRODRAMA_FEATURES, Candidate, ranker_matrix
from pipelines import train
from transforms.event_log import InputError

FAST = ["--preset", "small", "--epochs", "1", "--ranker-epochs", "2", "--no-progress"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    g = generate(5, "small", knobs=FaultKnobs(duplicate_rate=0.02, late_rate=0.01, malformed_rate=0.01))
    out = tmp_path_factory.mktemp("world")
    write_world(out, g.world, g.messages, knobs=g.knobs, days=g.days)
    return out


@pytest.fixture(scope="module")
def published(world, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bundles"))
    return root, train.run(["--world", str(world), "--bundle-root", root, *FAST])


def test_train_publishes_a_bundle_that_loads_and_serves(published):
    root, result = published
    assert result.published and current_version(root) == result.version
    bundle = load_bundle(root, expected_schema_hash=MICRODRAMA_FEATURES.schema_hash)
    assert bundle.version == result.version
    assert bundle.manifest["item_count"] == len(bundle.item_ids) == result.metrics["item_count"]
    assert {"training_curve.png", "ranker.onnx", "metrics.json"} <= set(bundle.manifest["files"])
    assert all(g["passed"] for g in bundle.manifest["gates"].values())
    for key in ("ranker_test_auc", "prior_test_auc", "two_tower_test_recall@20", "popularity_test_recall@20"):
        assert key in bundle.metrics
    # serving's own code path: query tower fed by query_inputs, ScaNN, ONNX ranker on ranker_matrix columns
    from serving.retrieval import QueryEncoder

    encoder = QueryEncoder(bundle.load_query_tower())
    new_user = encoder.encode(QueryContext("u-brand-new", None, "US", "ios", 21))
    assert new_user.shape == (bundle.index.dim,) and np.isfinite(new_user).all()
    ids, scores = bundle.index.search_one(new_user, k=5)
    assert len(ids) == 5
    X = ranker_matrix(None, None, [Candidate(str(ids[0]), "s0001", 1, ("romance",), float(scores[0]), None)])
    assert np.isfinite(bundle.ranker.score(X)).all()


def test_a_failed_gate_publishes_nothing(published, world, tmp_path):
    root, first = published
    versions = sorted(os.listdir(os.path.join(root, "versions")))
    argv = ["--world", str(world), "--bundle-root", root, "--examples", first.metrics["training_data"]["prefix"]]
    with pytest.raises(SystemExit, match=r"gate failed: .*ann_recall_at_10"):
        train.main([*argv, *FAST, "--min-ann-recall", "1.01"])  # recall can never exceed 1
    assert current_version(root) == first.version
    assert sorted(os.listdir(os.path.join(root, "versions"))) == versions
    with pytest.raises(BundleGateError):
        train.run([*argv, *FAST, "--min-ann-recall", "1.01"])
    assert load_bundle(root).version == first.version


@pytest.mark.parametrize("which", ["events", "catalog"])
def test_missing_input_is_named(world, tmp_path, which):
    paths = {"events": str(world / "events.jsonl"), "catalog": str(world / "catalog.json")}
    paths[which] = str(tmp_path / f"absent-{which}")
    argv = ["--events", paths["events"], "--catalog", paths["catalog"], "--bundle-root", str(tmp_path / "b")]
    with pytest.raises(InputError, match=f"absent-{which}"):
        train.run(argv)
    with pytest.raises(SystemExit, match=f"error: .*absent-{which}"):
        train.main(argv)
    assert current_version(str(tmp_path / "b")) is None


def test_wrong_catalog_for_the_events_is_refused(world, tmp_path):
    from models.pit_retrieval import TrainingDataError
    from tests.factories import write_catalog

    other = write_catalog(tmp_path)  # a two-series catalog none of the world's episodes belong to
    argv = ["--events", str(world / "events.jsonl"), "--catalog", other, "--bundle-root", str(tmp_path / "b")]
    with pytest.raises(TrainingDataError, match=f"{other}: only .* examples are on episodes of this catalog"):
        train.run([*argv, *FAST])
