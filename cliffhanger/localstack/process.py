"""Child-process plumbing shared by the emulators and Varnish: ports, process groups, logs, fast failure.

Every service runs in its own session (process group), so `stop()` signals the whole group and a
wrapper script's children go too. Unless told otherwise, a child also gets SIGKILL when the Python
process that started it dies (Linux parent-death signal via `setpriv`), so a killed test run does not
leave emulators behind on a shared machine. `--detach` turns that off. Linux delivers that signal when
the *thread* that spawned the child exits, so start long-lived services from the main thread (pytest
fixtures and the CLI do).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class LocalStackError(RuntimeError):
    """A local service could not start, died, or is misconfigured; the message says what to do."""


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_PICK = random.SystemRandom()  # not the global generator: tests seed it, and every process would pick alike


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (Linux default 32768-60999)."""
    try:
        low, high = map(int, _EPHEMERAL_RANGE.read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, BELOW the ephemeral range.

    Why not bind(0): the kernel answers with an ephemeral port, and until our service binds it, any
    process's outgoing connection may be given the same port (a serving replica's gRPC connection took
    its sibling's port once: "address already in use"). Ports below the range are never handed out
    that way, so one free now stays free for whoever binds it explicitly."""
    low = ephemeral_ports()[0]
    floor = 10_000 if low > 12_000 else 1_024
    for _ in range(200):
        port = _PICK.randint(floor, low - 1)
        if not port_in_use(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a crowded range: the OS's pick
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if something listens on host:port (connect succeeds or bind fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        if s.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR: a port whose old connections sit in TIME_WAIT is free to listen on again.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def can_connect(port: int, host: str = "127.0.0.1", timeout_s: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        return s.connect_ex((host, port)) == 0


def tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    last = text.rstrip().splitlines()[-lines:]
    return "\n".join(last) if last else f"(log {path} is empty)"


_SETPRIV = shutil.which("setpriv")


class ManagedProcess:
    """One long-running child: started in its own process group, logging to a file, stopped as a group.

    `ready` is called repeatedly during `start` until it returns True; it should make one real,
    short-timeout request and return False (not raise) while the service is still coming up.
    `fatal_log_markers` are log substrings that mean "this will never become ready" (e.g. a bind
    error from a server that does not exit on one); `fatal_hint` is appended to that error.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        ready: Callable[[], bool],
        fatal_log_markers: Sequence[str] = (),
        fatal_hint: str = "",
        env: dict[str, str] | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.ready = ready
        self.fatal_log_markers = tuple(fatal_log_markers)
        self.fatal_hint = fatal_hint
        self.env = env
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def launch(self) -> None:
        """Spawn the process without waiting for readiness."""
        argv = self.argv
        if self.die_with_parent and _SETPRIV:
            argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            log.write(f"--- {time.strftime('%H:%M:%S')} starting: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
            )

    def wait_ready(self, deadline: float) -> None:
        """Block until `ready()` is True; raise LocalStackError if the process exits or time runs out."""
        while True:
            fatal_line = self._fatal_line()  # before check_alive: it names the cause, exit or not
            if fatal_line:
                self.stop()
                raise LocalStackError(
                    f"{self.name} failed to start: {fatal_line.strip()} {self.fatal_hint}\n"
                    f"Last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            self.check_alive(during="start")
            if self.ready():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise LocalStackError(
                    f"{self.name} did not become ready in time (pid {self.pid}); it was stopped. "
                    f"Is the machine overloaded? Last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            time.sleep(0.1)

    def start(self, timeout_s: float) -> None:
        self.launch()
        self.wait_ready(time.monotonic() + timeout_s)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self, during: str = "run") -> None:
        """Raise LocalStackError with the log tail if the process is not running."""
        if self.proc is None:
            raise LocalStackError(f"{self.name} is not started")
        code = self.proc.poll()
        if code is None:
            return
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        when = "while starting" if during == "start" else "unexpectedly"
        raise LocalStackError(
            f"{self.name} (pid {self.proc.pid}) {how} {when}. Last lines of {self.log_path}:\n{tail(self.log_path)}"
        )

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after `grace_s`, and reap the child. Idempotent."""
        if self.proc is None:
            return
        kill_group(self.proc.pid, grace_s, is_alive=lambda: self.proc is not None and self.proc.poll() is None)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=1)
        self.proc = None

    def _fatal_line(self) -> str | None:
        """The first log line of this launch that contains a fatal marker, if any."""
        if not self.fatal_log_markers:
            return None
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)  # only what this launch wrote counts
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return None
        return next((line for line in text.splitlines() if any(m in line for m in self.fatal_log_markers)), None)


def kill_group(pgid: int, grace_s: float = 5.0, is_alive: Callable[[], bool] | None = None) -> None:
    """SIGTERM a process group, then SIGKILL whatever is left after `grace_s`."""

    def group_alive() -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True

    alive = is_alive or group_alive
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    end = time.monotonic() + grace_s
    while alive() and time.monotonic() < end:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def wait_for_port_release(port: int, timeout_s: float = 5.0) -> bool:
    """True once nothing listens on `port` any more (used after a stop, before reusing the port)."""
    end = time.monotonic() + timeout_s
    while port_in_use(port):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True
