"""`python -m serving --replicas N`: N real serving processes on consecutive ports, each with its own
replica id and Pub/Sub subscriptions and its own /metrics, supervised as a unit (a child's death stops
the set; the parent's death, even by SIGKILL, stops the children). Bad configuration is refused with
the name of the flag or variable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from serving import supervisor
from serving.settings import ServingConfigError
from tests.serving.conftest import serving_env

REPO = Path(__file__).resolve().parents[2]


def test_each_child_gets_its_own_replica_id() -> None:
    assert supervisor.replica_env({"A": "1"}, 2) == {"A": "1", "CLIFFHANGER_REPLICA_ID": "r2"}
    assert supervisor.replica_env({"CLIFFHANGER_REPLICA_ID": "host7"}, 0)["CLIFFHANGER_REPLICA_ID"] == "host7-r0"


@pytest.mark.parametrize(
    ("env", "replicas", "port", "names"),
    [
        ({"CLIFFHANGER_CATALOG_SUBSCRIPTION": "shared"}, 2, 18000, "CLIFFHANGER_CATALOG_SUBSCRIPTION"),
        ({"CLIFFHANGER_ITEM_CHANGES_SUBSCRIPTION": "x"}, 2, 18000, "CLIFFHANGER_ITEM_CHANGES_SUBSCRIPTION"),
        ({}, 0, 18000, "--replicas"),
        ({}, 2, 65535, "--port"),
    ],
)
def test_bad_configuration_names_the_flag_or_variable(env, replicas, port, names) -> None:
    with pytest.raises(ServingConfigError, match=names):
        supervisor.check_config(env, replicas, "127.0.0.1", port)


def test_a_feed_turned_off_is_fine_and_a_busy_port_is_named() -> None:
    from benchmarks.serving_stack import replica_ports  # two free consecutive ports

    supervisor.check_config({"CLIFFHANGER_CATALOG_SUBSCRIPTION": ""}, 2, "127.0.0.1", replica_ports(2))
    import socket

    port = replica_ports(2)  # below the ephemeral range: the port after it stays free (bind(0)'s did not)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        with pytest.raises(ServingConfigError, match=f"port\\(s\\) \\[{port}\\] already in use"):
            supervisor.check_config({}, 2, "127.0.0.1", port)


def _start(env: dict[str, str], replicas: int, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "serving", "--replicas", str(replicas), "--port", str(port), "--log-level", "warning"]
    return subprocess.Popen(cmd, cwd=REPO, env={**env, "PYTHONPATH": str(REPO)})


def _start_pair(env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    """`python -m serving --replicas 2` on two free consecutive ports, once both answer /readyz."""
    from benchmarks.serving_stack import replica_ports, wait_ready

    port = replica_ports(2)
    proc = _start(env, 2, port)
    try:
        wait_ready(port, proc, timeout_s=180, replicas=2)
    except BaseException:
        proc.kill()
        raise
    return proc, port


def _answers(metrics_text: str) -> float:
    """Sum of cliffhanger_recommendations_total over its labels in a /metrics page."""
    lines = [ln for ln in metrics_text.splitlines() if ln.startswith("cliffhanger_recommendations_total{")]
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _gone(pids: list[int], timeout_s: float = 20) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = []
        for p in pids:
            try:
                os.kill(p, 0)
                alive.append(p)
            except ProcessLookupError:
                pass
        if not alive:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.emulators
@pytest.mark.slow
def test_replicas_serve_with_own_subscriptions_and_metrics_and_stop_as_a_set(local_stack, bundle_root, catalog_path):
    from google.cloud import pubsub_v1

    prefix = f"t{time.monotonic_ns() % 10**8}"  # replica ids t..-r0, t..-r1: fresh subscription names
    env = serving_env(local_stack, bundle_root, catalog_path, CLIFFHANGER_REPLICA_ID=prefix)
    proc, port = _start_pair(env)
    try:
        children = _children(proc.pid)
        assert len(children) == 2
        client = pubsub_v1.SubscriberClient()
        project = local_stack.settings.project
        for i in range(2):
            for declared in ("catalog-serving", "item-changes-serving"):
                path = client.subscription_path(project, f"{declared}-{prefix}-r{i}")
                deadline = time.monotonic() + 30
                while True:  # created by the replica's feed thread right after start
                    try:
                        client.get_subscription(subscription=path, timeout=5)
                        break
                    except Exception:
                        assert time.monotonic() < deadline, f"{path} was not created"
                        time.sleep(0.2)
        for p in (port, port + 1):  # each replica answers its own /metrics
            assert "cliffhanger_" in httpx.get(f"http://127.0.0.1:{p}/metrics", timeout=5).text
        for i in range(3):  # three users: three answers computed (a repeat would be a cache hit)
            assert (
                httpx.get(f"http://127.0.0.1:{port}/v1/users/nobody{i}/recommendations", timeout=10).status_code == 200
            )
        answers = [_answers(httpx.get(f"http://127.0.0.1:{p}/metrics", timeout=5).text) for p in (port, port + 1)]
        assert answers == [3, 0]  # counted where they were answered: scrape every replica

        os.kill(children[1], signal.SIGKILL)  # one replica dies: the set stops, non-zero
        assert proc.wait(timeout=30) == 1
        assert _gone(children)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.mark.emulators
@pytest.mark.slow
def test_a_killed_supervisor_takes_its_replicas_along(local_stack, bundle_root, catalog_path):
    env = serving_env(local_stack, bundle_root, catalog_path, CLIFFHANGER_REPLICA_ID=f"k{time.monotonic_ns() % 10**8}")
    proc, port = _start_pair(env)
    try:
        children = _children(proc.pid)
        assert len(children) == 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert _gone(children)
    finally:
        if proc.poll() is None:
            proc.kill()
