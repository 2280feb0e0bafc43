"""LocalStack: the Bigtable and Pub/Sub emulators (and optionally Varnish) as one start/stop unit."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cliffhanger.config import Settings
from cliffhanger.localstack import emulators, provision
from cliffhanger.localstack.process import LocalStackError, ManagedProcess, free_port, wait_for_port_release
from cliffhanger.localstack.varnish import DEFAULT_VCL, HASH, Varnish

SERVICES = ("bigtable", "pubsub")


def settings_on_free_ports() -> Settings:
    """Settings from the environment with the two emulators on distinct free ports (tests, benchmarks):
    never the configured ones, so a running demo stack does not clash."""
    ports: set[int] = set()
    while len(ports) < 2:
        ports.add(free_port())
    bt_port, ps_port = sorted(ports)
    return Settings.from_env(
        {**os.environ, "CLIFFHANGER_BIGTABLE_PORT": str(bt_port), "CLIFFHANGER_PUBSUB_PORT": str(ps_port)}
    )


class LocalStack:
    """Starts, provisions and stops the emulators on the ports in `settings`.

    >>> with LocalStack(Settings(bigtable_port=free_port(), pubsub_port=free_port())) as stack:
    ...     stack.provision(); stack.apply_env()   # clients now find the emulators

    Without `workdir`, logs go to a temp dir that `stop()` (or a failed `start()`) removes; errors
    quote the last log lines. `die_with_parent=False` lets the
    emulators outlive this process (`python -m cliffhanger.localstack up --detach`).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        workdir: Path | None = None,
        sdk_root: Path | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="cliffhanger-localstack-"))
        self.sdk_root = emulators.sdk_root(sdk_root)
        self.die_with_parent = die_with_parent
        self.processes: dict[str, ManagedProcess] = {}
        self.varnish: Varnish | None = None
        self._saved_env: dict[str, str | None] | None = None

    # -- ports and environment ----------------------------------------------------------------
    def port(self, service: str) -> int:
        if service == "bigtable":
            return self.settings.bigtable_port
        if service == "pubsub":
            return self.settings.pubsub_port
        raise ValueError(f"unknown service {service!r}; expected one of {SERVICES}")

    def env(self) -> dict[str, str]:
        """What a client process needs: emulator hosts, project, instance, and the ports for Settings.from_env."""
        s = self.settings
        return {
            "BIGTABLE_EMULATOR_HOST": s.bigtable_emulator_host,
            "PUBSUB_EMULATOR_HOST": s.pubsub_emulator_host,
            "GOOGLE_CLOUD_PROJECT": s.project,
            "CLIFFHANGER_PROJECT": s.project,
            "CLIFFHANGER_BT_INSTANCE": s.bigtable_instance,
            "CLIFFHANGER_BIGTABLE_PORT": str(s.bigtable_port),
            "CLIFFHANGER_PUBSUB_PORT": str(s.pubsub_port),
        }

    def apply_env(self) -> None:
        """Put env() into os.environ; stop() restores the previous values."""
        if self._saved_env is None:
            self._saved_env = {k: os.environ.get(k) for k in self.env()}
        os.environ.update(self.env())

    def _restore_env(self) -> None:
        for key, value in (self._saved_env or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = None

    # -- lifecycle ----------------------------------------------------------------------------
    def _make(self, service: str) -> ManagedProcess:
        s = self.settings
        return emulators.make_emulator(
            emulators.KINDS[service],
            self.port(service),
            s.project,
            s.bigtable_instance,
            self.workdir,
            self.sdk_root,
            die_with_parent=self.die_with_parent,
        )

    def start(self, timeout_s: float = 60) -> None:
        """Start both emulators and wait until a real admin call succeeds on each.

        Everything that can be checked before launching (binaries, Java, free ports) is checked
        first, so a misconfiguration starts nothing. On any failure all started processes stop.
        """
        if self.processes:
            raise LocalStackError("LocalStack.start() called twice; call stop() first")
        if self.settings.bigtable_port == self.settings.pubsub_port:
            raise LocalStackError(f"Bigtable and Pub/Sub emulators cannot share port {self.settings.bigtable_port}")
        try:
            procs = {name: self._make(name) for name in SERVICES}  # raises if a binary is missing
            for name in SERVICES:
                emulators.check_port_free(emulators.KINDS[name], self.port(name))
        except LocalStackError:
            self._remove_own_workdir()
            raise
        self.workdir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout_s
        try:
            for name, proc in procs.items():  # launch all, then wait: the JVM and Go start in parallel
                proc.launch()
                self.processes[name] = proc
            for proc in procs.values():
                proc.wait_ready(deadline)
        except BaseException:
            self.stop()  # the error message already carries the log tail
            raise

    def provision(self) -> None:
        """Create the declared topics, subscriptions, tables and families (idempotent)."""
        self._provision("bigtable")
        self._provision("pubsub")

    def _provision(self, service: str) -> None:
        s = self.settings
        self._require(service)
        if service == "bigtable":
            provision.provision_bigtable(s.bigtable_port, s.project, s.bigtable_instance)
        else:
            provision.provision_pubsub(s.pubsub_port, s.project)

    def reset_bigtable(self) -> None:
        """Drop all rows of every declared table, keeping tables and families."""
        self._require("bigtable")
        provision.reset_bigtable(self.settings.bigtable_port, self.settings.project, self.settings.bigtable_instance)

    def check_alive(self) -> None:
        """LocalStackError (with the tail of its log) if any started service has died."""
        for name in SERVICES:
            self._require(name)
        if self.varnish is not None:
            self.varnish.check_alive()

    def _require(self, service: str) -> None:
        proc = self.processes.get(service)
        if proc is None:
            raise LocalStackError(f"the {service} emulator is not running (start() or start_service({service!r}))")
        proc.check_alive()

    def stop_service(self, service: str) -> None:
        """Stop one emulator (fault tests); its port stays reserved for start_service."""
        self.port(service)  # validates the name
        proc = self.processes.pop(service, None)
        if proc is not None:
            proc.stop()

    def start_service(self, service: str, timeout_s: float = 30) -> None:
        """(Re)start one emulator on the same port and re-provision it (emulator state is in memory)."""
        port = self.port(service)
        old = self.processes.get(service)
        if old is not None and old.alive():
            raise LocalStackError(f"the {service} emulator is already running; stop_service({service!r}) first")
        if old is not None:  # it died (e.g. a fault test killed it): reap it and start afresh
            self.stop_service(service)
        if not wait_for_port_release(port):
            emulators.check_port_free(emulators.KINDS[service], port)
        proc = self._make(service)
        proc.launch()
        self.processes[service] = proc
        try:
            proc.wait_ready(time.monotonic() + timeout_s)
        except BaseException:
            self.processes.pop(service, None)
            proc.stop()
            raise
        self._provision(service)

    def start_varnish(
        self,
        backend: str | Sequence[str],
        listen_port: int | None = None,
        admin_port: int | None = None,
        vcl: Path = DEFAULT_VCL,
        director: str = HASH,
    ) -> Varnish:
        """Start Varnish in front of `backend` (host:port, or several: serving replicas behind a
        `director`, see cliffhanger.localstack.varnish), with its work dir under this stack's."""
        if self.varnish is not None:
            raise LocalStackError("Varnish is already running in this stack")
        varnish = Varnish(
            backend,
            listen_port=listen_port,
            admin_port=admin_port,
            vcl=vcl,
            workdir=self.workdir / "varnish",
            die_with_parent=self.die_with_parent,
            director=director,
        )
        varnish.start()
        self.varnish = varnish
        return varnish

    def detach(self) -> dict[str, int]:
        """Forget the processes without stopping them (for `up --detach`); returns name -> pid."""
        pids = {name: p.pid for name, p in self.processes.items() if p.pid is not None}
        if self.varnish is not None and self.varnish.process is not None and self.varnish.process.pid:
            pids["varnish"] = self.varnish.process.pid
        self.processes = {}
        self.varnish = None
        self._own_workdir = False
        atexit.unregister(self.stop)
        return pids

    def stop(self) -> None:
        """Stop everything this stack started, restore os.environ, remove a temp work dir. Idempotent."""
        if self.varnish is not None:
            self.varnish.stop()
            self.varnish = None
        for name in list(self.processes):
            self.processes.pop(name).stop()
        self._restore_env()
        self._remove_own_workdir()
        atexit.unregister(self.stop)

    def _remove_own_workdir(self) -> None:
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
