"""cliffhanger.localstack against the real emulators and varnishd: provisioning, failures, restarts, purges."""

from __future__ import annotations

import http.client
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from cliffhanger import resources
from cliffhanger.config import Settings
from cliffhanger.localstack import LocalStack, LocalStackError, Varnish, emulators, free_port
from cliffhanger.localstack.clients import bigtable_admin, open_channel, pubsub_publisher, pubsub_subscriber
from cliffhanger.localstack.provision import gc_rule

REPO = Path(__file__).resolve().parents[2]


def _ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def test_free_ports_are_below_the_ephemeral_range_and_bindable() -> None:
    """A port the kernel could hand to some outgoing connection before our service binds it is not
    free (a replica once lost its port that way): free_port stays below the ephemeral range."""
    import socket

    from cliffhanger.localstack.process import ephemeral_ports

    low, high = ephemeral_ports()
    assert 1024 < low <= high
    for port in _ports(20):
        assert port < low, (port, low)
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def _settings(bt_port: int | None = None, ps_port: int | None = None) -> Settings:
    a, b = _ports(2)
    return Settings(bigtable_port=bt_port or a, pubsub_port=ps_port or b)


def _schema(stack: LocalStack) -> dict[str, dict[str, object]]:
    """table name -> {family name -> GcRule} as the emulator reports it."""
    from google.cloud.bigtable_admin_v2 import types

    s = stack.settings
    parent = f"projects/{s.project}/instances/{s.bigtable_instance}"
    with open_channel(s.bigtable_port) as ch:
        admin = bigtable_admin(ch)
        out = {}
        for t in admin.list_tables(parent=parent, timeout=5):
            full = admin.get_table(request={"name": t.name, "view": types.Table.View.SCHEMA_VIEW}, timeout=5)
            out[t.name.rsplit("/", 1)[1]] = {n: cf.gc_rule for n, cf in full.column_families.items()}
        return out


def _pubsub_state(stack: LocalStack) -> tuple[set[str], dict[str, object]]:
    s = stack.settings
    with open_channel(s.pubsub_port) as ch:
        topics = {t.name.rsplit("/", 1)[1] for t in pubsub_publisher(ch).list_topics(project=f"projects/{s.project}")}
        subs = {
            x.name.rsplit("/", 1)[1]: x
            for x in pubsub_subscriber(ch).list_subscriptions(project=f"projects/{s.project}", timeout=5)
        }
    return topics, subs


def _assert_matches_declaration(stack: LocalStack) -> None:
    p = stack.settings.project
    schema = _schema(stack)
    for table in resources.TABLES:
        assert set(schema[table.name]) == {f.name for f in table.families}
        for fam in table.families:
            assert schema[table.name][fam.name] == gc_rule(fam), (table.name, fam.name)
    topics, subs = _pubsub_state(stack)
    assert topics == {t.name for t in resources.TOPICS}
    # serving replicas create <declared>-<replica id> subscriptions at run time (serving/pubsub_pull.py);
    # other tests on the shared emulator may have left some: they are not the provisioner's
    per_replica = (resources.CATALOG_SERVING_SUBSCRIPTION + "-", resources.ITEM_CHANGES_SERVING_SUBSCRIPTION + "-")
    assert {n for n in subs if not n.startswith(per_replica)} == {s.name for s in resources.SUBSCRIPTIONS}
    for decl in resources.SUBSCRIPTIONS:
        got = subs[decl.name]
        assert got.topic == f"projects/{p}/topics/{decl.topic}"
        assert got.ack_deadline_seconds == decl.ack_deadline_s
        if decl.dead_letter_topic:
            assert got.dead_letter_policy.dead_letter_topic == f"projects/{p}/topics/{decl.dead_letter_topic}"
            assert got.dead_letter_policy.max_delivery_attempts == decl.max_delivery_attempts
        else:
            assert not got.dead_letter_policy.dead_letter_topic


# -- the session stack ------------------------------------------------------------------------------


@pytest.mark.emulators
def test_provision_twice_is_idempotent_and_matches_the_declaration(local_stack: LocalStack) -> None:
    _assert_matches_declaration(local_stack)  # the fixture provisioned once
    local_stack.provision()
    _assert_matches_declaration(local_stack)


@pytest.mark.emulators
def test_provision_repairs_drift(local_stack: LocalStack) -> None:
    from google.cloud.bigtable_admin_v2 import types
    from google.pubsub_v1 import types as ps_types

    s = local_stack.settings
    sub = f"projects/{s.project}/subscriptions/{resources.EVENTS_SUBSCRIPTION}"
    table = f"projects/{s.project}/instances/{s.bigtable_instance}/tables/{resources.FEATURES_TABLE}"
    with open_channel(s.pubsub_port) as ps, open_channel(s.bigtable_port) as bt:
        subscriber = pubsub_subscriber(ps)
        subscriber.update_subscription(
            request={
                "subscription": ps_types.Subscription(name=sub, ack_deadline_seconds=11),
                "update_mask": {"paths": ["ack_deadline_seconds"]},
            }
        )
        subscriber.delete_subscription(
            subscription=f"projects/{s.project}/subscriptions/{resources.RETRAIN_SUBSCRIPTION}"
        )
        bigtable_admin(bt).modify_column_families(
            name=table,
            modifications=[
                types.ModifyColumnFamiliesRequest.Modification(id="cw", drop=True),
                types.ModifyColumnFamiliesRequest.Modification(
                    id="u", update={"gc_rule": types.GcRule(max_num_versions=7)}
                ),
            ],
        )
    local_stack.provision()
    _assert_matches_declaration(local_stack)


@pytest.mark.emulators
def test_env_lets_stock_clients_find_the_emulators_and_reset_empties_tables(clean_bigtable: LocalStack) -> None:
    from google.cloud import bigtable, pubsub_v1

    s = clean_bigtable.settings
    assert os.environ["BIGTABLE_EMULATOR_HOST"] == f"127.0.0.1:{s.bigtable_port}"
    assert Settings.from_env().pubsub_port == s.pubsub_port  # code reading Settings sees the session ports
    table = bigtable.Client(project=s.project).instance(s.bigtable_instance).table(resources.FEATURES_TABLE)
    row = table.direct_row(b"u#0000#test")
    row.set_cell("u", b"plays", b"3")
    row.commit()
    assert table.read_row(b"u#0000#test").cells["u"][b"plays"][0].value == b"3"
    publisher = pubsub_v1.PublisherClient()
    assert publisher.publish(publisher.topic_path(s.project, resources.CATALOG_TOPIC), b"x").result(timeout=10)

    clean_bigtable.reset_bigtable()
    assert table.read_row(b"u#0000#test") is None
    assert set(_schema(clean_bigtable)[resources.FEATURES_TABLE]) == {
        f.name for f in resources.table("features").families
    }


@pytest.mark.emulators
def test_emulator_honours_the_dead_letter_policy(local_stack: LocalStack) -> None:
    s = local_stack.settings
    decl = next(x for x in resources.SUBSCRIPTIONS if x.dead_letter_topic)
    inspect = next(x for x in resources.SUBSCRIPTIONS if x.topic == decl.dead_letter_topic)
    marker = uuid.uuid4().hex.encode()
    with open_channel(s.pubsub_port) as ch:
        publisher, subscriber = pubsub_publisher(ch), pubsub_subscriber(ch)
        sub = f"projects/{s.project}/subscriptions/{decl.name}"
        dl_sub = f"projects/{s.project}/subscriptions/{inspect.name}"
        publisher.publish(topic=f"projects/{s.project}/topics/{decl.topic}", messages=[{"data": marker}])
        attempts, dead, deadline = 0, [], time.monotonic() + 20
        while not dead and time.monotonic() < deadline:
            got = subscriber.pull(subscription=sub, max_messages=10, return_immediately=True, timeout=5)
            mine = [m for m in got.received_messages if m.message.data == marker]
            if mine:  # nack: immediate redelivery, counted as a failed attempt
                attempts += 1
                subscriber.modify_ack_deadline(
                    subscription=sub, ack_ids=[m.ack_id for m in mine], ack_deadline_seconds=0
                )
            dl = subscriber.pull(subscription=dl_sub, max_messages=10, return_immediately=True, timeout=5)
            dead = [m for m in dl.received_messages if m.message.data == marker]
            time.sleep(0.05)
    assert dead, "the message never reached the dead-letter subscription"
    assert attempts == decl.max_delivery_attempts
    assert dead[0].message.attributes["CloudPubSubDeadLetterSourceSubscription"] == decl.name


# -- failures are fast and say what to do ------------------------------------------------------------


@pytest.mark.emulators
@pytest.mark.parametrize("service", ["bigtable", "pubsub"])
def test_port_taken_is_reported_fast(service: str) -> None:
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = _settings(**({"bt_port": port} if service == "bigtable" else {"ps_port": port}))
        stack = LocalStack(settings)
        t0 = time.monotonic()
        with pytest.raises(LocalStackError) as err:
            stack.start(timeout_s=30)
        assert time.monotonic() - t0 < 3
    msg = str(err.value)
    assert str(port) in msg and emulators.KINDS[service].port_env in msg
    assert not stack.processes  # nothing was left running


@pytest.mark.emulators
@pytest.mark.parametrize("service", ["bigtable", "pubsub"])
def test_bind_failure_after_the_port_check_does_not_hang(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Losing the port race: cbtemulator exits, the Pub/Sub JVM keeps running (its log marker must end the wait)."""
    import socket

    monkeypatch.setattr(emulators, "check_port_free", lambda kind, port: None)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        stack = LocalStack(_settings(**({"bt_port": port} if service == "bigtable" else {"ps_port": port})))
        t0 = time.monotonic()
        with pytest.raises(LocalStackError, match="(failed to start|while starting)") as err:
            stack.start(timeout_s=40)
        assert time.monotonic() - t0 < 20
    msg = str(err.value)
    assert str(port) in msg and "already in use" in msg.lower() and emulators.KINDS[service].port_env in msg
    assert not stack.processes


def test_missing_emulator_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(LocalStackError, match="apt-get install google-cloud-cli-bigtable-emulator"):
        LocalStack(_settings(), sdk_root=tmp_path).start()
    fake = tmp_path / emulators.BIGTABLE.relpath
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    with pytest.raises(LocalStackError, match="apt-get install google-cloud-cli-pubsub-emulator"):
        LocalStack(_settings(), sdk_root=tmp_path).start()


# -- a private stack for kill / restart ------------------------------------------------------------


@pytest.fixture(scope="module")
def own_stack() -> Iterator[LocalStack]:
    stack = LocalStack(_settings())
    stack.start()
    try:
        stack.provision()
        yield stack
    finally:
        stack.stop()


@pytest.mark.emulators
def test_stop_and_start_bigtable_on_the_same_port(own_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    from google.cloud import bigtable

    s = own_stack.settings
    for key, value in own_stack.env().items():
        monkeypatch.setenv(key, value)
    table = bigtable.Client(project=s.project).instance(s.bigtable_instance).table(resources.FEATURES_TABLE)

    def write() -> None:
        row = table.direct_row(b"e#0000#ep1")
        row.set_cell("i", b"views", b"1")
        row.commit()

    write()
    assert table.read_row(b"e#0000#ep1") is not None

    own_stack.stop_service("bigtable")
    assert not emulators.bigtable_probe(s.bigtable_port, s.project, s.bigtable_instance)
    with pytest.raises(LocalStackError, match="not running"):
        own_stack.check_alive()
    own_stack.start_service("bigtable")
    own_stack.check_alive()
    assert own_stack.processes["bigtable"].argv[-1] == str(s.bigtable_port)
    _assert_matches_declaration(own_stack)  # re-provisioned after the restart
    # The emulator keeps data in memory: the row is gone, and the client made before the restart reconnects.
    assert table.read_row(b"e#0000#ep1") is None
    write()
    assert table.read_row(b"e#0000#ep1") is not None


@pytest.mark.emulators
def test_killed_emulator_is_reported_and_can_be_restarted(own_stack: LocalStack) -> None:
    proc = own_stack.processes["pubsub"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.proc.wait(timeout=10)
    with pytest.raises(LocalStackError, match=r"Pub/Sub emulator .* was killed by signal 9 unexpectedly") as err:
        own_stack.check_alive()
    assert "Last lines of" in str(err.value) and "pubsub.log" in str(err.value)
    own_stack.start_service("pubsub")
    own_stack.check_alive()
    assert emulators.pubsub_probe(own_stack.settings.pubsub_port, own_stack.settings.project)


# -- the CLI ----------------------------------------------------------------------------------------


@pytest.mark.emulators
def test_cli_up_detach_status_down(tmp_path: Path) -> None:
    bt, ps = _ports(2)
    env = {
        **os.environ,
        "CLIFFHANGER_BIGTABLE_PORT": str(bt),
        "CLIFFHANGER_PUBSUB_PORT": str(ps),
        "PYTHONPATH": str(REPO),
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "cliffhanger.localstack", "--var-dir", str(tmp_path), *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90)

    up = cli("up", "--detach")
    try:
        assert up.returncode == 0, up.stderr
        assert f"export BIGTABLE_EMULATOR_HOST=127.0.0.1:{bt}" in up.stdout
        status = cli("status")
        assert status.returncode == 0 and status.stdout.count("answering") == 2, status.stdout
        again = cli("up", "--detach")
        assert again.returncode == 2 and "already running" in again.stderr
    finally:
        down = cli("down")
    assert down.returncode == 0 and "stopped bigtable" in down.stdout
    after = cli("status")
    assert after.returncode == 1 and "NOT answering" in after.stdout


# -- Varnish ----------------------------------------------------------------------------------------


class _Backend(http.server.ThreadingHTTPServer):
    """Counts requests per path; /private and /nocc answer without shared-cache permission."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Backend

    def do_GET(self) -> None:
        self.server.hits[self.path] = self.server.hits.get(self.path, 0) + 1
        body = f"{self.path} #{self.server.hits[self.path]}".encode()
        self.send_response(200)
        self.send_header("xkey", "series-9 user-1" if self.path.startswith("/series") else "series-7")
        if self.path == "/private":
            self.send_header("Cache-Control", "private, max-age=60")
        elif self.path != "/nocc":
            self.send_header("Cache-Control", "max-age=60")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def backend() -> Iterator[_Backend]:
    server = _Backend()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def _get(cache: Varnish, path: str, method: str = "GET", headers: dict[str, str] | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", cache.listen_port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_varnish_caches_and_purges_by_xkey(varnish, backend: _Backend) -> None:
    cache = varnish(backend_port=backend.server_address[1])
    _, first, body1 = _get(cache, "/series/9")
    _, second, body2 = _get(cache, "/series/9")
    assert (first["x-cache"], second["x-cache"]) == ("MISS", "HIT")
    assert len(second["x-varnish"].split()) == 2 and body1 == body2  # hit: this request id + the cached one
    assert backend.hits["/series/9"] == 1
    assert "xkey" not in second  # tags stay internal
    _get(cache, "/other")

    assert cache.purge("series-9") == 1
    _, third, body3 = _get(cache, "/series/9")
    assert third["x-cache"] == "MISS" and backend.hits["/series/9"] == 2 and body3 != body1
    assert _get(cache, "/other")[1]["x-cache"] == "HIT"  # a different key survived the purge


def test_varnish_respects_backend_cache_control(varnish, backend: _Backend) -> None:
    cache = varnish(backend_port=backend.server_address[1])
    for path in ("/private", "/nocc"):
        _get(cache, path)
        _, headers, _ = _get(cache, path)
        assert headers["x-cache"] == "MISS" and backend.hits[path] == 2, path
    status, _, _ = _get(cache, "/", method="PURGE")
    assert status == 400  # PURGE without xkey-purge is refused


def test_varnish_bad_vcl_fails_fast_with_the_compiler_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.vcl"
    bad.write_text(
        (REPO / "infra/varnish/default.vcl").read_text().replace("sub vcl_deliver {", "sub vcl_deliver { nonsense;")
    )
    cache = Varnish(backend="127.0.0.1:9", vcl=bad, workdir=tmp_path / "v")
    t0 = time.monotonic()
    with pytest.raises(LocalStackError, match="nonsense"):
        cache.start(timeout_s=30)
    assert time.monotonic() - t0 < 10


def test_varnish_refuses_a_workdir_without_room_for_its_log(tmp_path: Path, monkeypatch) -> None:
    """varnishd keeps an 80 MB shared-memory log in its workdir; on a disk with less room its worker dies
    as it launches with nothing but "Child failed on launch: Success" (a 40 MB tmpfs reproduces it), so
    the start checks first and says what is missing where."""
    import cliffhanger.localstack.varnish as varnish_mod

    monkeypatch.setattr(varnish_mod.shutil, "disk_usage", lambda _path: SimpleNamespace(free=50 * 2**20))
    cache = Varnish(backend="127.0.0.1:9", workdir=tmp_path / "v")
    t0 = time.monotonic()
    with pytest.raises(LocalStackError, match=r"v has 50 MB free; varnishd needs about 96 MB"):
        cache.start(timeout_s=30)
    assert time.monotonic() - t0 < 2 and cache.process is None  # refused before launching anything


def test_a_worker_dying_at_launch_is_reported_with_the_free_space(tmp_path: Path, monkeypatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "varnishd"  # what varnishd's manager prints when its worker dies at launch
    fake.write_text('#!/bin/sh\necho "Debug: Child (1) Started"; echo "Child failed on launch: Success"; exit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    cache = Varnish(backend="127.0.0.1:9", workdir=tmp_path / "v")
    with pytest.raises(LocalStackError, match=r"(?s)Child failed on launch.*MB free; varnishd needs about 96 MB"):
        cache.start(timeout_s=30)
