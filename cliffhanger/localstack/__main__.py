"""`python -m cliffhanger.localstack up|down|status`: run the local stack for the demo and development.

up             start both emulators on CLIFFHANGER_BIGTABLE_PORT / CLIFFHANGER_PUBSUB_PORT (8086 / 8085),
               provision cliffhanger.resources, print the env to export, and stay in the foreground
               until Ctrl-C (exits 1 if an emulator dies). Logs: <var-dir>/localstack/*.log
up --detach    same, but return once ready; the processes keep running, `down` stops them
up --varnish-backend 127.0.0.1:8080
               also start Varnish (infra/varnish/default.vcl) on CLIFFHANGER_VARNISH_PORT (6081)
status         what the state file says and whether each service answers (exit 1 if not all do)
down           stop what `up` started (found through <var-dir>/localstack.json)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from cliffhanger.config import Settings
from cliffhanger.localstack import emulators
from cliffhanger.localstack.process import LocalStackError, can_connect, kill_group
from cliffhanger.localstack.stack import LocalStack
from cliffhanger.localstack.varnish import VARNISH_PORT_ENV


def _state_path(var_dir: Path) -> Path:
    return var_dir / "localstack.json"


def _read_state(var_dir: Path) -> dict | None:
    try:
        return json.loads(_state_path(var_dir).read_text())
    except FileNotFoundError:
        return None


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").rstrip("\0").split("\0") if raw else None


def _same_process(entry: dict) -> bool:
    """True if the recorded pid is alive and still runs the recorded command line (not a recycled pid)."""
    return entry.get("pid") is not None and _cmdline(entry["pid"]) == entry.get("cmdline")


def _write_state(stack: LocalStack, var_dir: Path, detached: bool) -> None:
    procs = dict(stack.processes)
    ports = {name: stack.port(name) for name in stack.processes}
    if stack.varnish is not None and stack.varnish.process is not None:
        procs["varnish"] = stack.varnish.process
        ports["varnish"] = stack.varnish.listen_port
    # The command line is read back from /proc: wrapper scripts exec into java, setpriv into the binary.
    services = {name: {"pid": p.pid, "cmdline": _cmdline(p.pid)} for name, p in procs.items() if p.pid}
    state = {
        "detached": detached,
        "supervisor": None if detached else {"pid": os.getpid(), "cmdline": _cmdline(os.getpid())},
        "services": services,
        "ports": ports,
        "env": stack.env(),
        "workdir": str(stack.workdir.resolve()),
    }
    _state_path(var_dir).write_text(json.dumps(state, indent=2) + "\n")


def _print_env(stack: LocalStack) -> None:
    for key, value in stack.env().items():
        print(f"export {key}={value}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_up(args: argparse.Namespace) -> int:
    var_dir = Path(args.var_dir)
    old = _read_state(var_dir)
    if old and any(_same_process(s) for s in old["services"].values()):
        raise LocalStackError(f"the local stack is already running ({_state_path(var_dir)}); run `down` first")
    var_dir.mkdir(parents=True, exist_ok=True)
    stack = LocalStack(Settings.from_env(), workdir=var_dir / "localstack", die_with_parent=not args.detach)
    t0 = time.monotonic()
    stack.start(timeout_s=args.timeout)
    try:
        stack.provision()
        if args.varnish_backend:
            stack.start_varnish(args.varnish_backend, listen_port=args.varnish_port)
    except BaseException:
        stack.stop()
        raise
    _write_state(stack, var_dir, detached=args.detach)
    print(f"# local stack ready in {time.monotonic() - t0:.1f} s; logs in {stack.workdir}", file=sys.stderr)
    _print_env(stack)
    sys.stdout.flush()
    if args.detach:
        stack.detach()
        return 0
    # Foreground: SIGTERM behaves like Ctrl-C so `kill <pid>` also cleans up.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(1)
            stack.check_alive()
    except KeyboardInterrupt:
        print("# stopping", file=sys.stderr)
        return 0
    finally:
        stack.stop()
        _state_path(var_dir).unlink(missing_ok=True)


def cmd_down(args: argparse.Namespace) -> int:
    var_dir = Path(args.var_dir)
    state = _read_state(var_dir)
    if state is None:
        print(f"nothing to stop: no {_state_path(var_dir)}")
        return 0
    if state.get("supervisor") and _same_process(state["supervisor"]):
        os.kill(state["supervisor"]["pid"], signal.SIGTERM)  # the foreground `up` stops its own children
    for name, svc in state["services"].items():
        if _same_process(svc):
            kill_group(svc["pid"])
            print(f"stopped {name} (pid {svc['pid']})")
    _state_path(var_dir).unlink(missing_ok=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    var_dir = Path(args.var_dir)
    state = _read_state(var_dir)
    settings = Settings.from_env()
    ports = state["ports"] if state else {"bigtable": settings.bigtable_port, "pubsub": settings.pubsub_port}
    if state is None:
        print(f"no {_state_path(var_dir)}: probing the configured ports")
    ok = True
    for name, port in ports.items():
        if name == "bigtable":
            up = emulators.bigtable_probe(port, settings.project, settings.bigtable_instance)
        elif name == "pubsub":
            up = emulators.pubsub_probe(port, settings.project)
        else:
            up = can_connect(port)
        svc = (state or {}).get("services", {}).get(name)
        pid = f"pid {svc['pid']}" if svc else "pid unknown"
        print(f"{name:9s} 127.0.0.1:{port:<6d} {pid:12s} {'answering' if up else 'NOT answering'}")
        ok = ok and up
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cliffhanger.localstack", description=__doc__.split("\n")[0])
    parser.add_argument("--var-dir", default="var", help="state file and logs go here (default ./var)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start and provision the emulators")
    up.add_argument("--detach", action="store_true", help="return once ready, leave the services running")
    up.add_argument("--timeout", type=float, default=60, help="seconds to wait for readiness")
    up.add_argument("--varnish-backend", metavar="HOST:PORT", help="also start Varnish in front of this backend")
    up.add_argument("--varnish-port", type=int, default=int(os.environ.get(VARNISH_PORT_ENV, "6081")))
    sub.add_parser("down", help="stop what `up` started")
    sub.add_parser("status", help="is each service answering")
    args = parser.parse_args(argv)
    try:
        return {"up": cmd_up, "down": cmd_down, "status": cmd_status}[args.command](args)
    except LocalStackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
