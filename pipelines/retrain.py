"""Retraining trigger: requests on the `retrain` Pub/Sub topic start the batch training (pipelines.train).

    python -m pipelines.retrain request --world var/world --bundle-root var/bundles [--preset small] [--epochs 3]
    python -m pipelines.retrain request --events gs://B/export/events-*.jsonl --catalog gs://B/catalog.json \
        --bundle-root gs://B/bundles
    python -m pipelines.retrain listen [--once] [--timeout 600]

A request is one JSON object per message:
    {"world": DIR} or {"events": PATH, "catalog": PATH}, "bundle_root": DIR,
    optional "preset" ("default" | "small"), "epochs" (int > 0), "seed" (int), "min_ann_recall" (0..1]),
    "requested_by" (str, for the log)

What the listener does with each message (one at a time, pulled from the `retrain-trainer` subscription):
  invalid request   (not JSON, unknown or missing fields, wrong types): ACKED and reported with the reason.
                    Redelivering a malformed request can never succeed; nacking it would loop forever,
                    since the subscription has no dead-letter topic.
  valid request     trains while a background thread keeps extending the ack deadline, then:
                    published                      -> ack, report status "published" and the version
                    a gate failed / bad input data -> ack, report "gate_failed" / "bad_input" with the reason
                                                      (deterministic for this data: retrying cannot help;
                                                      a new request after new data will retrain)
                    anything else (a crash)        -> nack (ack deadline 0) so Pub/Sub redelivers it
Each report is printed as one JSON line on stdout; the locally run training uses the DirectRunner.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from cliffhanger import resources
from cliffhanger.config import Settings

_LOG = logging.getLogger(__name__)
LEASE_EXTENSION_S = 60
LEASE_RENEW_EVERY_S = 20
_FIELDS = {
    "world": str,
    "events": str,
    "catalog": str,
    "bundle_root": str,
    "preset": str,
    "epochs": int,
    "seed": int,
    "min_ann_recall": float,
    "requested_by": str,
}


class RetrainRequestError(ValueError):
    """A retrain message that is not a valid request; the message says why."""


@dataclasses.dataclass(frozen=True)
class RetrainRequest:
    bundle_root: str
    world: str | None = None
    events: str | None = None
    catalog: str | None = None
    preset: str | None = None
    epochs: int | None = None
    seed: int | None = None
    min_ann_recall: float | None = None
    requested_by: str | None = None

    def to_json(self) -> bytes:
        return json.dumps({k: v for k, v in dataclasses.asdict(self).items() if v is not None}).encode()

    def train_argv(self) -> list[str]:
        """The pipelines.train command line of this request."""
        argv = ["--bundle-root", self.bundle_root, "--no-progress"]
        for flag, value in (
            ("--world", self.world),
            ("--events", self.events),
            ("--catalog", self.catalog),
            ("--preset", self.preset),
            ("--epochs", self.epochs),
            ("--seed", self.seed),
            ("--min-ann-recall", self.min_ann_recall),
        ):
            if value is not None:
                argv += [flag, str(value)]
        return argv


def parse_request(data: bytes) -> RetrainRequest:
    """Message bytes -> RetrainRequest, or RetrainRequestError naming the problem."""
    from pipelines.train import PRESETS

    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RetrainRequestError(f"not a JSON request: {exc}") from None
    if not isinstance(obj, dict):
        raise RetrainRequestError(f"a request must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(_FIELDS))
    if unknown:
        raise RetrainRequestError(f"unknown field(s) {unknown}; known: {sorted(_FIELDS)}")
    for name, value in obj.items():
        kind = _FIELDS[name]
        ok = isinstance(value, int | float) if kind is float else isinstance(value, kind)
        if not ok or isinstance(value, bool) or (kind is str and not value):
            raise RetrainRequestError(f"{name} must be a non-empty {kind.__name__}, got {value!r}")
    if "bundle_root" not in obj:
        raise RetrainRequestError("bundle_root is required")
    if "world" not in obj and not ("events" in obj and "catalog" in obj):
        raise RetrainRequestError("give world, or both events and catalog")
    if "preset" in obj and obj["preset"] not in PRESETS:
        raise RetrainRequestError(f"preset must be one of {sorted(PRESETS)}, got {obj['preset']!r}")
    if "epochs" in obj and obj["epochs"] <= 0:
        raise RetrainRequestError(f"epochs must be > 0, got {obj['epochs']}")
    if "min_ann_recall" in obj and not 0 < obj["min_ann_recall"] <= 1.5:
        raise RetrainRequestError(f"min_ann_recall must be in (0, 1.5], got {obj['min_ann_recall']}")
    return RetrainRequest(**obj)


def publish_request(request: RetrainRequest, project: str, topic: str = resources.RETRAIN_TOPIC) -> str:
    """Publish one request; returns the Pub/Sub message id."""
    from google.cloud import pubsub_v1

    client = pubsub_v1.PublisherClient()
    return client.publish(client.topic_path(project, topic), request.to_json()).result(timeout=60)


def train_request(request: RetrainRequest) -> dict[str, Any]:
    """Run pipelines.train in-process; -> {"status", "version" | "reason"} (raises only on a crash)."""
    from models.bundle import BundleGateError
    from models.pit_retrieval import TrainingDataError
    from pipelines import train
    from transforms.event_log import InputError

    try:
        result = train.run(request.train_argv())
    except BundleGateError as exc:
        return {"status": "gate_failed", "reason": str(exc)}
    except (InputError, TrainingDataError) as exc:
        return {"status": "bad_input", "reason": str(exc)}
    return {"status": "published", "version": result.version}


class _Lease:
    """Keeps one message's ack deadline extended while it is being worked on."""

    def __init__(self, client: Any, subscription: str, ack_id: str):
        self._client, self._subscription, self._ack_id = client, subscription, ack_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True)

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_RENEW_EVERY_S):
            try:
                self._client.modify_ack_deadline(
                    subscription=self._subscription, ack_ids=[self._ack_id], ack_deadline_seconds=LEASE_EXTENSION_S
                )
            except Exception as exc:  # noqa: BLE001 - a failed renewal only risks a redelivery; keep trying
                _LOG.warning("could not extend the retrain lease: %s", exc)

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def handle(client: Any, subscription: str, received: Any, trainer: Callable[[RetrainRequest], dict]) -> dict:
    """Validate, train, then ack or nack one received message; -> its report."""
    message = received.message
    report: dict[str, Any] = {"message_id": message.message_id}
    try:
        request = parse_request(message.data)
    except RetrainRequestError as exc:
        client.acknowledge(subscription=subscription, ack_ids=[received.ack_id])
        return {**report, "status": "invalid", "reason": str(exc)}
    report["request"] = json.loads(request.to_json())
    try:
        with _Lease(client, subscription, received.ack_id):
            outcome = trainer(request)
    except Exception as exc:
        client.modify_ack_deadline(subscription=subscription, ack_ids=[received.ack_id], ack_deadline_seconds=0)
        _LOG.exception("retrain crashed; message nacked for redelivery")
        return {**report, "status": "error", "reason": f"{type(exc).__name__}: {exc}"}
    client.acknowledge(subscription=subscription, ack_ids=[received.ack_id])
    return {**report, **outcome}


def listen(
    project: str,
    subscription: str = resources.RETRAIN_SUBSCRIPTION,
    *,
    once: bool = False,
    timeout_s: float | None = None,
    trainer: Callable[[RetrainRequest], dict] = train_request,
) -> list[dict]:
    """Pull and handle requests one at a time; stop after one (once) or after timeout_s. -> reports."""
    from google.cloud import pubsub_v1

    client = pubsub_v1.SubscriberClient()
    path = client.subscription_path(project, subscription)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    reports: list[dict] = []
    while deadline is None or time.monotonic() < deadline:
        response = client.pull(subscription=path, max_messages=1, timeout=10)
        for received in response.received_messages:
            report = handle(client, path, received, trainer)
            print(json.dumps(report), flush=True)
            reports.append(report)
        if once and reports:
            break
        if not response.received_messages:
            time.sleep(1.0)
    return reports


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.retrain", description=__doc__.split("\n")[0])
    p.add_argument("--project", default=None, help="GCP project (default: CLIFFHANGER_PROJECT or local-project)")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("request", help="publish a retrain request")
    r.add_argument("--world")
    r.add_argument("--events")
    r.add_argument("--catalog")
    r.add_argument("--bundle-root", required=True)
    r.add_argument("--preset")
    r.add_argument("--epochs", type=int)
    r.add_argument("--seed", type=int)
    r.add_argument("--min-ann-recall", type=float)
    r.add_argument("--requested-by", default="cli")
    r.add_argument("--topic", default=resources.RETRAIN_TOPIC)
    listen_p = sub.add_parser("listen", help="pull requests and train")
    listen_p.add_argument("--subscription", default=resources.RETRAIN_SUBSCRIPTION)
    listen_p.add_argument("--once", action="store_true", help="handle one request, then exit")
    listen_p.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    project = args.project or Settings.from_env().project
    if args.command == "request":
        fields = {k: getattr(args, k) for k in _FIELDS if getattr(args, k, None) is not None}
        try:  # the same validation the listener applies, before anything is published
            request = parse_request(json.dumps(fields).encode())
        except RetrainRequestError as exc:
            raise SystemExit(f"error: {exc}") from None
        print(json.dumps({"message_id": publish_request(request, project, args.topic), **fields}))
        return 0
    reports = listen(project, args.subscription, once=args.once, timeout_s=args.timeout)
    return 0 if reports and all(r["status"] == "published" for r in reports) else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
