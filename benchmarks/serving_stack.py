"""The world, the server and its replicas that benchmarks/serving_latency.py measures.

    world = build_world(workdir, stack, n_users=500, clones=8, list_len=500)   # seeded in the emulator
    port = replica_ports(replicas)                  # port .. port + replicas - 1 free now
    server = start_server(stack, world, port, log_path, replicas)
    wait_ready(port, server, replicas=replicas)     # /readyz 200 on every replica

build_world: a synthetic world (generate(11), 1 day), its events replayed through the pipeline's
feature definitions into user / episode / series / cohort rows, a bundle (serving/devdata.py), and
`list_len`-candidate lists per user, segment and global popularity; every user cloned `clones` times
so that every cache-miss request can be a distinct user.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_world(workdir: str, stack, n_users: int, clones: int, list_len: int) -> dict:
    from cliffhanger.synth import generate
    from models.bundle import load_bundle
    from serving import devdata
    from transforms.bigtable_sink import BigtableTarget

    g = generate(11, "default", n_users=n_users, days=1)
    catalog = g.world.catalog
    catalog_path = os.path.join(workdir, "catalog.json")
    catalog.save(catalog_path)
    users = {u.user_id: u for u in g.world.users}
    artifacts = devdata.build_artifacts(os.path.join(workdir, "artifacts"), catalog, list(users))
    root = os.path.join(workdir, "bundles")
    version = devdata.publish_bundle(root, artifacts, version="bench-v1")
    bundle = load_bundle(root)
    events = [m.event for m in g.events]
    updates = devdata.replay_updates(events, catalog)
    feats = {u.row_key.decode().rsplit("#", 1)[1]: u.decoded() for u in updates if u.family == "u"}
    clone_map = {f"{uid}-c{k}": uid for uid in feats for k in range(clones)}
    s = stack.settings
    target = BigtableTarget(s.project, s.bigtable_instance, "features")
    devdata.seed_features(target, updates, clones=clone_map)
    lists = devdata.user_lists(bundle, feats, {u: (users[u].country, users[u].device) for u in feats}, k=list_len)
    all_lists = {**lists, **{new: lists[src] for new, src in clone_map.items()}}
    from serving import candidates as cand_mod

    rows = [(cand_mod.user_row(u), version, int(time.time() * 1000), items) for u, items in all_lists.items()]
    segs = devdata.popularity_lists(events, k=list_len)
    rows += [
        (cand_mod.global_row() if seg is None else cand_mod.segment_row(*seg), version, int(time.time() * 1000), it)
        for seg, it in segs.items()
    ]
    cand_mod.write_candidate_lists(target.open_table(), rows, batch=100)
    ctx = {u: (users[u.split("-c")[0]].country, users[u.split("-c")[0]].device) for u in all_lists}
    return {"root": root, "catalog": catalog_path, "users": sorted(all_lists), "ctx": ctx, "version": version}


def start_server(stack, world: dict, port: int, log_path: str, replicas: int = 1) -> subprocess.Popen:
    """`python -m serving` on `port`; with replicas > 1 the supervisor and its replicas on port.. (each
    replica a direct child of the returned process, so its CPU counts under it in cpu_seconds)."""
    env = {
        **os.environ,
        **stack.env(),
        "CLIFFHANGER_BUNDLE_ROOT": world["root"],
        "CLIFFHANGER_CATALOG": world["catalog"],
        "CLIFFHANGER_EDGE_KEY_SECRET": os.environ.get("CLIFFHANGER_EDGE_KEY_SECRET", "bench-secret"),
        "CLIFFHANGER_CANDIDATES": "500",
        "PYTHONPATH": str(REPO),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    log = open(log_path, "w")  # noqa: SIM115 - the server outlives this function
    cmd = [sys.executable, "-m", "serving", "--port", str(port), "--log-level", "warning", "--replicas", str(replicas)]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(port: int, proc: subprocess.Popen, timeout_s: float = 300, replicas: int = 1) -> None:
    """Until /readyz answers 200 on port .. port + replicas - 1."""
    import httpx

    deadline = time.monotonic() + timeout_s
    waiting = set(range(port, port + replicas))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        for p in sorted(waiting):
            try:
                if httpx.get(f"http://127.0.0.1:{p}/readyz", timeout=1).status_code == 200:
                    waiting.discard(p)
            except httpx.HTTPError:
                pass  # still starting
        if not waiting:
            return
        time.sleep(0.2)
    raise TimeoutError(f"server(s) on {sorted(waiting)} not ready")


def replica_ports(replicas: int) -> int:
    """A first port such that port .. port + replicas - 1 are all free now."""
    from cliffhanger.localstack.process import free_port, port_in_use

    while True:
        port = free_port()
        if port + replicas <= 65536 and not any(port_in_use(p) for p in range(port + 1, port + replicas)):
            return port
