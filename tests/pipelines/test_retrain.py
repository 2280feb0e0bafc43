"""The retraining trigger: request validation, and request -> listen --once -> a published bundle through
the real Pub/Sub emulator; invalid requests are acked with the reason, crashes are redelivered."""

from __future__ import annotations

import json

import pytest

from cliffhanger import resources
from cliffhanger.synth import generate, write_world
from models.bundle import current_version
from pipelines import retrain
from pipelines.retrain import RetrainRequest, RetrainRequestError, parse_request
from tests.pubsub_helpers import drain, publish


def test_a_valid_request_round_trips_to_train_flags():
    req = parse_request(b'{"world": "w", "bundle_root": "b", "preset": "small", "epochs": 2, "min_ann_recall": 0.9}')
    assert parse_request(req.to_json()) == req
    argv = req.train_argv()
    assert argv[:2] == ["--bundle-root", "b"] and "--world" in argv and argv[argv.index("--epochs") + 1] == "2"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", "not a JSON request"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"world": "w"}', "bundle_root is required"),
        (b'{"bundle_root": "b", "events": "e"}', "give world, or both events and catalog"),
        (b'{"bundle_root": "b", "world": "w", "epochs": "3"}', "epochs must be a non-empty int"),
        (b'{"bundle_root": "b", "world": "w", "epochs": 0}', "epochs must be > 0"),
        (b'{"bundle_root": "b", "world": "w", "preset": "huge"}', "preset must be one of"),
        (b'{"bundle_root": "b", "world": "w", "rm": "-rf"}', "unknown field"),
    ],
)
def test_invalid_requests_say_why(payload, reason):
    with pytest.raises(RetrainRequestError, match=reason):
        parse_request(payload)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    g = generate(9, "small")
    out = tmp_path_factory.mktemp("world")
    write_world(out, g.world, g.messages, knobs=g.knobs, days=g.days)
    return out


@pytest.mark.emulators
def test_request_then_listen_once_publishes_a_bundle(local_stack, world, tmp_path, capsys):
    project = local_stack.settings.project
    root = str(tmp_path / "bundles")
    flags = ["--world", str(world), "--bundle-root", root, "--preset", "small", "--epochs", "1"]
    assert retrain.main(["--project", project, "request", *flags]) == 0
    assert retrain.main(["--project", project, "listen", "--once", "--timeout", "300"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["status"] == "published" and current_version(root) == report["version"]
    assert drain(project, resources.RETRAIN_SUBSCRIPTION, expect=1, timeout_s=3) == []  # acked


@pytest.mark.emulators
def test_invalid_request_is_acked_and_reported(local_stack):
    project = local_stack.settings.project
    publish(project, resources.RETRAIN_TOPIC, [b'{"world": "w"}'])
    reports = retrain.listen(project, once=True, timeout_s=60, trainer=_never)
    assert [r["status"] for r in reports] == ["invalid"] and "bundle_root is required" in reports[0]["reason"]
    assert drain(project, resources.RETRAIN_SUBSCRIPTION, expect=1, timeout_s=3) == []


@pytest.mark.emulators
def test_a_crashed_training_is_redelivered(local_stack):
    project = local_stack.settings.project
    publish(project, resources.RETRAIN_TOPIC, [RetrainRequest("root", world="w").to_json()])
    first = retrain.listen(project, once=True, timeout_s=60, trainer=_crash)
    assert first[0]["status"] == "error" and "RuntimeError: disk full" in first[0]["reason"]
    second = retrain.listen(
        project, once=True, timeout_s=60, trainer=lambda req: {"status": "published", "version": "v"}
    )
    assert second[0]["message_id"] == first[0]["message_id"] and second[0]["status"] == "published"


def _never(request):
    raise AssertionError("an invalid request must not be trained")


def _crash(request):
    raise RuntimeError("disk full")
