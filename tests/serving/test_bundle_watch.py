"""Bundle hot-swap: v1 serves, publishing v2 swaps it in under load without a failed request; a
schema-mismatched or corrupt bundle is refused (logged reason + metric) and the old one keeps serving."""

from __future__ import annotations

import asyncio
import os
import shutil
import time

import httpx
import onnx
import pytest

from serving import devdata
from serving.app import create_app
from serving.settings import ServingSettings
from tests.serving.conftest import ADMIN_TOKEN, NOW_MS, seed, serving_env

pytestmark = [pytest.mark.emulators, pytest.mark.slow]


def _version(server) -> str | None:
    return httpx.get(server.url + "/readyz", timeout=2).json()["bundle_version"]


def _wait_for(predicate, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _point(root: str, version: str) -> None:
    tmp = os.path.join(root, ".CURRENT.test")
    with open(tmp, "w") as f:
        f.write(version + "\n")
    os.replace(tmp, os.path.join(root, "CURRENT"))


async def _load(url: str, users: list[str], stop: asyncio.Event) -> list[tuple[int, str]]:
    out = []
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        i = 0
        while not stop.is_set():
            r = await client.get(f"/v1/users/{users[i % len(users)]}/recommendations", params={"n": 1 + i % 40})
            out.append((r.status_code, r.json().get("bundle_version", "")))
            i += 1
    return out


def test_publish_swap_and_refusals(local_stack, world, artifacts, catalog_path, serve, tmp_path, caplog) -> None:
    root = str(tmp_path / "bundles")
    devdata.publish_bundle(root, artifacts, version="v1", seed=1)
    facts = seed(local_stack, world, root)
    settings = ServingSettings.from_env(serving_env(local_stack, root, catalog_path))
    server = serve(create_app(settings, clock=lambda: NOW_MS))
    assert _version(server) == "v1"

    # v2 under load: every request answers 200 from exactly one bundle, and then only from v2
    users = sorted(facts["lists"])

    async def swap_under_load():
        stop = asyncio.Event()
        load = asyncio.create_task(_load(server.url, users, stop))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(devdata.publish_bundle, root, artifacts, "v2", 2)
        ok = await asyncio.to_thread(_wait_for, lambda: _version(server) == "v2")
        await asyncio.sleep(0.3)
        stop.set()
        return ok, await load

    swapped, results = asyncio.run(swap_under_load())
    assert swapped
    assert all(status == 200 for status, _ in results)
    versions = [v for _, v in results]
    assert set(versions) <= {"v1", "v2"} and versions[-1] == "v2"
    assert versions == sorted(versions)  # never back to v1 after the swap (the swap clears cached answers)

    # a bundle for another feature schema: refused, v2 keeps serving
    stripped = str(tmp_path / "ranker-nometa.onnx")
    model = onnx.load(artifacts.onnx_path)
    kept = [p for p in model.metadata_props if p.key != "feature_schema_hash"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, stripped)
    other = devdata.Artifacts(artifacts.tower_dir, stripped, artifacts.item_ids)
    devdata.publish_bundle(root, other, version="v3", seed=3, schema_hash="0" * 16)
    # a corrupt one (bit rot / torn copy): refused too
    side = str(tmp_path / "side")
    devdata.publish_bundle(side, artifacts, version="v4", seed=4)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    reload_v3 = httpx.post(server.url + "/admin/reload", headers=admin, timeout=60).json()
    assert reload_v3["swapped"] is False and reload_v3["refused"] == "v3"
    assert reload_v3["reason"].startswith("schema_mismatch"), reload_v3

    shutil.copytree(os.path.join(side, "versions", "v4"), os.path.join(root, "versions", "v4"))
    npy = os.path.join(root, "versions", "v4", "item_embeddings.npy")
    with open(npy, "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x01\x02\x03")
    _point(root, "v4")
    reload_v4 = httpx.post(server.url + "/admin/reload", headers=admin, timeout=60).json()
    assert reload_v4["refused"] == "v4" and reload_v4["reason"].startswith("corrupt"), reload_v4

    assert _version(server) == "v2"
    r = httpx.get(f"{server.url}/v1/users/{users[0]}/recommendations", params={"n": 3})
    assert r.status_code == 200 and r.json()["bundle_version"] == "v2"
    metrics = httpx.get(server.url + "/metrics").text
    assert 'cliffhanger_bundle_refused_total{reason="schema_mismatch"} 1.0' in metrics
    assert 'cliffhanger_bundle_refused_total{reason="corrupt"} 1.0' in metrics
    assert 'cliffhanger_bundle_info{version="v2"} 1.0' in metrics
    assert any("refusing bundle v4" in rec.getMessage() for rec in caplog.records)
