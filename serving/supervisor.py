"""Several serving replicas on one host: `python -m serving --replicas N --port P`.

One serving process is one CPU-bound Python interpreter (~2 ms of CPU per cache miss, ~500 requests/s);
N replicas use N cores. This parent starts N children `python -m serving --port P+i` (i = 0..N-1), each
with CLIFFHANGER_REPLICA_ID=r<i> (or <parent id>-r<i> when the parent has one, so two hosts' replicas
never share a name), and supervises them:

  * each replica pulls its own Pub/Sub subscriptions (`catalog-serving-r<i>`, `item-changes-serving-r<i>`,
    created on start: serving/settings.py, serving/pubsub_pull.py); an explicit CLIFFHANGER_CATALOG_SUBSCRIPTION
    or CLIFFHANGER_ITEM_CHANGES_SUBSCRIPTION would be shared by every replica, so it is refused (set
    it to "" to turn that feed off);
  * the parent stopping (SIGTERM, SIGINT) stops the children; the parent dying (even SIGKILL) sends
    them SIGTERM (Linux parent-death signal through `setpriv`, as the local stack's processes);
  * a child exiting stops the others and the parent exits non-zero: the set is restarted as a unit by
    whatever runs it (systemd, a container runtime), never left half up.

Traffic: put a per-request load balancer in front, e.g. Varnish with every replica as a backend
(`cliffhanger.localstack.varnish`, `LocalStack.start_varnish(backend=[...])`). The invalidation job
must purge every replica (`--origin_url http://h:P,http://h:P+1,...`). Metrics stay per replica: scrape
each port's /metrics, as one would scrape each pod.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping

from cliffhanger.localstack.process import port_in_use
from serving.settings import FEED_SUBSCRIPTIONS, ServingConfigError

REPLICA_ID_ENV = "CLIFFHANGER_REPLICA_ID"


def replica_env(env: Mapping[str, str], index: int) -> dict[str, str]:
    """A child's environment: the parent's plus its replica id (r<i>, or <parent id>-r<i>)."""
    parent = env.get(REPLICA_ID_ENV, "")
    return {**env, REPLICA_ID_ENV: f"{parent}-r{index}" if parent else f"r{index}"}


def check_config(env: Mapping[str, str], replicas: int, host: str, port: int) -> None:
    """ServingConfigError naming the flag or variable that cannot work with `replicas` children."""
    if replicas < 1:
        raise ServingConfigError(f"--replicas must be >= 1, got {replicas}")
    if not 0 < port <= 65535 - replicas + 1:
        raise ServingConfigError(f"--port {port} with --replicas {replicas}: ports {port}..{port + replicas - 1}")
    shared = [var for var, _ in FEED_SUBSCRIPTIONS.values() if env.get(var)]
    if shared:
        raise ServingConfigError(
            f"{', '.join(shared)} set: with --replicas every replica would pull that one subscription and see "
            "only part of its messages. Unset it (each replica creates <declared>-r<i>) or set it to '' (feed off)."
        )
    busy = [p for p in range(port, port + replicas) if port_in_use(p, host if host != "0.0.0.0" else "127.0.0.1")]
    if busy:
        raise ServingConfigError(f"--port {port} --replicas {replicas}: port(s) {busy} already in use")


def _spawn(index: int, host: str, port: int, log_level: str, env: Mapping[str, str]) -> subprocess.Popen:
    argv = [sys.executable, "-m", "serving", "--host", host, "--port", str(port + index), "--log-level", log_level]
    setpriv = shutil.which("setpriv")
    if setpriv:  # SIGTERM to the child when this process dies, however it dies
        argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]
    return subprocess.Popen(argv, env=replica_env(env, index), stdin=subprocess.DEVNULL)


def _stop(children: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + grace_s
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run(replicas: int, host: str, port: int, log_level: str, env: Mapping[str, str] | None = None) -> int:
    """Start and supervise the replicas until a signal or a child's exit; returns the exit code."""
    env = dict(os.environ if env is None else env)
    check_config(env, replicas, host, port)
    stopping: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    children: list[subprocess.Popen] = []
    try:
        children = [_spawn(i, host, port, log_level, env) for i in range(replicas)]
        print(f"serving: {replicas} replicas on {host}:{port}..{port + replicas - 1}", file=sys.stderr, flush=True)
        while not stopping:
            exited = [(i, c.returncode) for i, c in enumerate(children) if c.poll() is not None]
            if exited:
                i, code = exited[0]
                print(f"serving: replica r{i} exited with {code}; stopping the others", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        _stop(children)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
