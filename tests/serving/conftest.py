"""Serving fixtures: a small synthetic world, a tiny REAL bundle (built once per session), Bigtable seeded
from replayed events, and a uvicorn server in a thread."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from cliffhanger.localstack import free_port
from cliffhanger.synth import generate
from serving import devdata

SECRET = "test-edge-secret"
ADMIN_TOKEN = "test-admin-token"
NOW_MS = 1_795_300_000_000  # after the small world's events, inside the licensing windows


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def world():
    return generate(7, "small")


@pytest.fixture(scope="session")
def artifacts(world, tmp_path_factory) -> devdata.Artifacts:
    users = [u.user_id for u in world.world.users]
    return devdata.build_artifacts(str(tmp_path_factory.mktemp("artifacts")), world.world.catalog, users)


@pytest.fixture(scope="session")
def bundle_root(artifacts, tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("bundles"))
    devdata.publish_bundle(root, artifacts, version="v1")
    return root


@pytest.fixture(scope="session")
def catalog_path(world, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("catalog") / "catalog.json"
    world.world.catalog.save(path)
    return str(path)


def seed(local_stack, world, bundle_root: str, with_lists: bool = True) -> dict:
    """Reset Bigtable; write the world's feature rows and (optionally) candidate lists. Returns facts for tests."""
    from models.bundle import load_bundle
    from transforms.bigtable_sink import BigtableTarget

    local_stack.check_alive()
    local_stack.reset_bigtable()
    s = local_stack.settings
    target = BigtableTarget(s.project, s.bigtable_instance, "features")
    events = [m.event for m in world.events]
    updates = devdata.replay_updates(events, world.world.catalog)
    devdata.seed_features(target, updates)
    users = {u.user_id: u for u in world.world.users}
    user_feats = {u.row_key.decode().rsplit("#", 1)[1]: u.decoded() for u in updates if u.family == "u"}
    lists = {}
    if with_lists:
        bundle = load_bundle(bundle_root)
        ctx = {uid: (users[uid].country, users[uid].device) for uid in user_feats}
        lists = devdata.user_lists(bundle, user_feats, ctx, k=200)
        segments = devdata.popularity_lists(events, k=200)
        devdata.write_lists(target.open_table(), bundle.version, NOW_MS - 60_000, lists, segments)
    return {"users": users, "user_features": user_feats, "lists": lists, "events": events}


def serving_env(local_stack, bundle_root: str, catalog_path: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        **local_stack.env(),
        "CLIFFHANGER_EDGE_KEY_SECRET": SECRET,
        "CLIFFHANGER_ADMIN_TOKEN": ADMIN_TOKEN,
        "CLIFFHANGER_BUNDLE_ROOT": bundle_root,
        "CLIFFHANGER_CATALOG": catalog_path,
        "CLIFFHANGER_SHARED_TTL_S": "2",
        "CLIFFHANGER_BUNDLE_POLL_S": "0.2",
    }
    env.update(extra)
    return env


class ThreadServer:
    """uvicorn in a background thread on a free port (same process: tests can reach app.state)."""

    def __init__(self, app) -> None:
        import uvicorn

        self.app = app
        self.port = free_port()
        # log_config=None: uvicorn must not reconfigure logging (it would close the stream pytest captures into)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False, log_config=None
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout_s: float = 60) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"server not ready within {ready_timeout_s} s")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def serve() -> Iterator[Callable[..., ThreadServer]]:
    """Factory: serve(app) starts it and waits for /readyz 200; stopped after the test."""
    started: list[ThreadServer] = []

    def start(app, ready_timeout_s: float = 60) -> ThreadServer:
        server = ThreadServer(app).start(ready_timeout_s)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def start_edge_stack(local_stack, world, bundle_root: str, catalog_path: str, varnish, chunk_dir: str, **extra: str):
    """Seeded Bigtable + the app (uvicorn thread, clock at NOW_MS) + Varnish with the repo VCL in front.
    Returns (facts, server, edge); the caller stops the server with `stop_edge_stack`."""
    from serving.app import create_app
    from serving.settings import ServingSettings

    facts = seed(local_stack, world, bundle_root)
    env = serving_env(local_stack, bundle_root, catalog_path, CLIFFHANGER_CHUNK_DIR=chunk_dir, **extra)
    server = ThreadServer(create_app(ServingSettings.from_env(env), clock=lambda: NOW_MS)).start()
    return facts, server, varnish(backend_port=server.port)


def stop_edge_stack(server: ThreadServer) -> None:
    """Stop the app and collect its garbage now: a stopped app (bundle, TF objects) freed by a later
    full GC pass would pause the event loop of whichever test runs then (latency-asserting ones)."""
    import gc

    server.stop()
    gc.collect()
