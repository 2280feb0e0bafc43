"""How to launch the Bigtable and Pub/Sub emulators and tell when they are really serving.

The emulator binaries from the gcloud SDK are run directly, which is faster than the gcloud Python
wrapper and leaves one process per emulator to signal. The equivalent wrapper commands are

    gcloud beta emulators bigtable start --host-port=127.0.0.1:8086
    gcloud beta emulators pubsub start --host-port=127.0.0.1:8085

Both need the same SDK components, so they are no fallback when a binary is missing (the wrapper
would offer to install the component interactively, which is exactly the hang we avoid).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import grpc
from google.api_core.exceptions import GoogleAPIError

from cliffhanger.localstack.clients import bigtable_admin, open_channel, pubsub_publisher
from cliffhanger.localstack.process import LocalStackError, ManagedProcess, can_connect, port_in_use

SDK_ROOT_ENV = "CLIFFHANGER_CLOUD_SDK_ROOT"
DEFAULT_SDK_ROOT = Path("/usr/lib/google-cloud-sdk")
PROBE_TIMEOUT_S = 2.0
_NOT_YET = (GoogleAPIError, grpc.RpcError)  # what a probe may see while an emulator is coming up


@dataclasses.dataclass(frozen=True)
class EmulatorKind:
    name: str  # 'bigtable' | 'pubsub'
    title: str
    relpath: str  # binary, relative to the SDK root
    apt_package: str
    gcloud_component: str
    port_env: str
    # Log lines meaning "will never be ready": the Pub/Sub emulator keeps running after a failed bind.
    fatal_log_markers: tuple[str, ...] = ()
    needs_java: bool = False


BIGTABLE = EmulatorKind(
    name="bigtable",
    title="Bigtable emulator",
    relpath="platform/bigtable-emulator/cbtemulator",
    apt_package="google-cloud-cli-bigtable-emulator",
    gcloud_component="bigtable",
    port_env="CLIFFHANGER_BIGTABLE_PORT",
    fatal_log_markers=("address already in use",),
)
PUBSUB = EmulatorKind(
    name="pubsub",
    title="Pub/Sub emulator",
    relpath="platform/pubsub-emulator/bin/cloud-pubsub-emulator",
    apt_package="google-cloud-cli-pubsub-emulator",
    gcloud_component="pubsub-emulator",
    port_env="CLIFFHANGER_PUBSUB_PORT",
    fatal_log_markers=("BindException", "Address already in use", "Failed to bind"),
    needs_java=True,
)
KINDS = {k.name: k for k in (BIGTABLE, PUBSUB)}


def sdk_root(explicit: Path | None = None) -> Path:
    """The gcloud SDK root: explicit argument, $CLIFFHANGER_CLOUD_SDK_ROOT, gcloud on PATH, or the Debian path."""
    if explicit is not None:
        return Path(explicit)
    if os.environ.get(SDK_ROOT_ENV):
        return Path(os.environ[SDK_ROOT_ENV])
    gcloud = shutil.which("gcloud")
    if gcloud:
        # <root>/bin/gcloud, usually reached through a /usr/bin symlink.
        return Path(gcloud).resolve().parent.parent
    return DEFAULT_SDK_ROOT


def find_binary(kind: EmulatorKind, root: Path) -> Path:
    """The emulator executable, or a LocalStackError saying which package installs it."""
    path = root / kind.relpath
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise LocalStackError(
            f"{kind.title} not found at {path}. Install it with `apt-get install {kind.apt_package}` "
            f"(or `gcloud components install {kind.gcloud_component}` for a non-Debian SDK), "
            f"or point {SDK_ROOT_ENV} at the SDK root that has it."
        )
    if kind.needs_java and not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        raise LocalStackError(
            f"{kind.title} needs a Java runtime (11+), and none is on PATH or in JAVA_HOME. "
            "Install one with `apt-get install openjdk-17-jre-headless`."
        )
    return path


def check_port_free(kind: EmulatorKind, port: int) -> None:
    if port_in_use(port):
        raise LocalStackError(
            f"cannot start the {kind.title}: port 127.0.0.1:{port} is already in use (another emulator or "
            f"a running demo?). Stop that process (`python -m cliffhanger.localstack down`) or pick another "
            f"port with {kind.port_env}=<port>."
        )


def command(kind: EmulatorKind, binary: Path, port: int) -> list[str]:
    if kind is BIGTABLE:
        return [str(binary), "-host", "127.0.0.1", "-port", str(port)]
    return [str(binary), "--host=127.0.0.1", f"--port={port}"]


def bigtable_probe(port: int, project: str, instance: str) -> bool:
    """One real admin call (ListTables) against the Bigtable emulator."""
    if not can_connect(port):
        return False
    with open_channel(port) as channel:
        client = bigtable_admin(channel)
        try:
            client.list_tables(parent=f"projects/{project}/instances/{instance}", timeout=PROBE_TIMEOUT_S, retry=None)
        except _NOT_YET:  # not serving yet: try again
            return False
    return True


def pubsub_probe(port: int, project: str) -> bool:
    """One real call (ListTopics) against the Pub/Sub emulator."""
    if not can_connect(port):
        return False
    with open_channel(port) as channel:
        client = pubsub_publisher(channel)
        try:
            next(iter(client.list_topics(project=f"projects/{project}", timeout=PROBE_TIMEOUT_S, retry=None)), None)
        except _NOT_YET:  # not serving yet: try again
            return False
    return True


def make_emulator(
    kind: EmulatorKind,
    port: int,
    project: str,
    instance: str,
    workdir: Path,
    root: Path,
    die_with_parent: bool = True,
) -> ManagedProcess:
    """A ManagedProcess for one emulator (not started). Raises LocalStackError if the binary is missing."""
    binary = find_binary(kind, root)
    if kind is BIGTABLE:

        def ready() -> bool:
            return bigtable_probe(port, project, instance)

    else:

        def ready() -> bool:
            return pubsub_probe(port, project)

    return ManagedProcess(
        name=f"{kind.title} on 127.0.0.1:{port}",
        argv=command(kind, binary, port),
        log_path=workdir / f"{kind.name}.log",
        ready=ready,
        fatal_log_markers=kind.fatal_log_markers,
        fatal_hint=f"If port {port} is taken, pick another with {kind.port_env}=<port>.",
        die_with_parent=die_with_parent,
    )
