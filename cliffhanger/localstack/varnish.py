"""Run varnishd (the edge cache) locally with the repo's VCL in front of one or several backends.

The VCL (infra/varnish/default.vcl) declares its backend with two marked lines; `render_vcl` puts
the backend host/port into a copy under the work dir, so the committed file stays valid VCL that
`varnishd -C -f` can check on its own. Purging is the VCL's job (PURGE + `xkey-purge` header);
`Varnish.purge` only sends that request.

Several backends (serving replicas, `python -m serving --replicas N`): the `backend default` block is
rendered once per replica (`replica0`, `replica1`, ...; each health-probed on /readyz, so a replica
that is down or still loading gets no requests) and a `directors` vmod director (built into Varnish)
picks one in a `vcl_recv` placed before the VCL's own, which then runs unchanged:
  hash         (default) by the user id segment of /v1/users/<id>/... (any other URL: by URL), so a
               viewer's requests reach the same replica and its in-process caches (answers, last-known
               features); measured against round_robin in README "Running several replicas".
  round_robin  replicas in turn.
With one backend the output is the committed VCL with only its host/port lines changed.

Install: `apt-get install -y varnish varnish-modules` (Varnish 7.1 + the xkey vmod on Debian 12).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cliffhanger.localstack.process import LocalStackError, ManagedProcess, free_port, port_in_use

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VCL = REPO_ROOT / "infra" / "varnish" / "default.vcl"
HEALTH_PATH = "/.varnish-health"  # answered by the VCL itself (synthetic 200), used as readiness probe
VARNISH_PORT_ENV = "CLIFFHANGER_VARNISH_PORT"
WORKDIR_NEEDS_MB = 96  # varnishd's shared-memory log (80 MB by default) and counters are files in its workdir
CHILD_LAUNCH_FAILED = "Child failed on launch"  # varnishd's manager: its worker died before checking in
APT_HINT = "Install it with `apt-get install -y varnish varnish-modules` (xkey is in varnish-modules)."

_HOST_LINE = re.compile(r'(\.host\s*=\s*)"[^"]*"(;\s*#\s*@backend-host)')
_PORT_LINE = re.compile(r'(\.port\s*=\s*)"[^"]*"(;\s*#\s*@backend-port)')
_BACKEND_BLOCK = re.compile(r"^backend default \{\n.*?^\}\n", re.M | re.S)
HASH, ROUND_ROBIN = "hash", "round_robin"
DIRECTORS = (HASH, ROUND_ROBIN)
_PICK = {
    HASH: 'replicas.backend(regsub(req.url, "^/v1/users/([^/?]+).*$", "\\1"))',
    ROUND_ROBIN: "replicas.backend()",
}
_PROBE = """probe replica_ready {
    # A replica answers /readyz 200 once its bundle and catalog are loaded; down or loading = no traffic.
    .url = "/readyz";
    .interval = 1s;
    .timeout = 1s;
    .window = 3;
    .threshold = 2;
    .initial = 2;
}
"""


def _set_backend(text: str, host: str, port: int) -> str:
    out, n_host = _HOST_LINE.subn(lambda m: f'{m[1]}"{host}"{m[2]}', text)
    out, n_port = _PORT_LINE.subn(lambda m: f'{m[1]}"{port}"{m[2]}', out)
    if n_host != 1 or n_port != 1:
        raise LocalStackError(
            'the VCL must declare its backend with exactly one `.host = "..."; # @backend-host` line and one '
            f'`.port = "..."; # @backend-port` line (found {n_host} and {n_port})'
        )
    return out


def render_vcl(text: str, backends: Sequence[tuple[str, int]], director: str = HASH) -> str:
    """The VCL for `backends` [(host, port), ...]: one backend = its marked .host/.port lines set; several
    = one declaration each behind a `director` (see the module doc). LocalStackError if the markers,
    or the `backend default { ... }` block several backends are copied from, are gone."""
    if not backends:
        raise LocalStackError("Varnish needs at least one backend")
    if director not in DIRECTORS:
        raise LocalStackError(f"Varnish director must be one of {', '.join(DIRECTORS)}, got {director!r}")
    one = _set_backend(text, *backends[0])
    if len(backends) == 1:
        return one
    block = _BACKEND_BLOCK.search(text)
    if block is None or "@backend-host" not in block[0]:
        raise LocalStackError(
            "for several backends the VCL must declare `backend default { ... }` with the marked lines"
        )
    declared = [
        _set_backend(block[0], host, port)
        .replace("backend default {", f"backend replica{i} {{", 1)
        .replace("\n}\n", "\n    .probe = replica_ready;\n}\n")
        for i, (host, port) in enumerate(backends)
    ]
    weight = ", 1.0" if director == HASH else ""
    adds = "".join(f"    replicas.add_backend(replica{i}{weight});\n" for i in range(len(backends)))
    generated = (
        f"# {len(backends)} serving replicas behind a {director} director (cliffhanger.localstack.varnish).\n"
        f"import directors;\n\n{_PROBE}\n"
        + "\n".join(declared)
        + f"\nsub vcl_init {{\n    new replicas = directors.{director}();\n{adds}}}\n\n"
        + f"sub vcl_recv {{\n    set req.backend_hint = {_PICK[director]};\n}}\n"
    )
    return text[: block.start()] + generated + text[block.end() :]


def parse_backends(backend: str | Sequence[str]) -> list[tuple[str, int]]:
    """ "h:p", "h:p,h:p" or ["h:p", ...] -> [(host, port), ...]; LocalStackError names a malformed one."""
    items = backend.split(",") if isinstance(backend, str) else list(backend)
    out = []
    for item in (i.strip() for i in items):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise LocalStackError(f"Varnish backend must be host:port, got {item!r}")
        out.append((host, int(port)))
    if not out:
        raise LocalStackError("Varnish needs at least one backend (host:port)")
    return out


def _http(port: int, method: str, path: str, headers: dict[str, str] | None = None, timeout_s: float = 2.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, dict(resp.getheaders()), body
    finally:
        conn.close()


class Varnish:
    """varnishd in the foreground (-F) as a child process group, with a private `-n` work dir."""

    def __init__(
        self,
        backend: str | Sequence[str] = "127.0.0.1:8080",
        listen_port: int | None = None,
        admin_port: int | None = None,
        vcl: Path = DEFAULT_VCL,
        workdir: Path | None = None,
        storage: str = "malloc,64m",
        die_with_parent: bool = True,
        director: str = HASH,
    ) -> None:
        self.backends = parse_backends(backend)
        if director not in DIRECTORS:
            raise LocalStackError(f"Varnish director must be one of {', '.join(DIRECTORS)}, got {director!r}")
        self.director = director
        self.listen_port = listen_port if listen_port is not None else free_port()
        self.admin_port = admin_port if admin_port is not None else free_port()
        self.vcl = Path(vcl)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="cliffhanger-varnish-"))
        self.storage = storage
        self.die_with_parent = die_with_parent
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    def start(self, timeout_s: float = 30) -> None:
        """Start varnishd and wait until the VCL answers its health path; LocalStackError on any failure,
        and at once when the workdir's disk has too little room for varnishd's shared-memory log."""
        varnishd = shutil.which("varnishd") or ("/usr/sbin/varnishd" if os.path.exists("/usr/sbin/varnishd") else None)
        if varnishd is None:
            raise LocalStackError(f"varnishd not found on PATH. {APT_HINT}")
        if not self.vcl.is_file():
            raise LocalStackError(f"VCL file {self.vcl} does not exist")
        for what, port in (("listen", self.listen_port), ("admin", self.admin_port)):
            if port_in_use(port):
                raise LocalStackError(
                    f"cannot start Varnish: its {what} port 127.0.0.1:{port} is already in use. "
                    f"Stop that process or pick another port (listen port: {VARNISH_PORT_ENV})."
                )
        self.workdir.mkdir(parents=True, exist_ok=True)
        if (free_mb := self._free_mb()) < WORKDIR_NEEDS_MB:
            self.stop()
            raise LocalStackError(self._space_message(free_mb))
        rendered = self.workdir / "default.vcl"
        rendered.write_text(render_vcl(self.vcl.read_text(), self.backends, self.director))
        argv = [
            varnishd,
            "-F",  # foreground: our child is the manager process, its group holds the worker
            "-j",
            "none",  # no privilege-dropping jail: it is a local dev cache, and as root the jail needs a varnish user
            "-n",
            str(self.workdir / "n"),
            "-a",
            f"127.0.0.1:{self.listen_port}",
            "-T",
            f"127.0.0.1:{self.admin_port}",
            "-f",
            str(rendered),
            "-s",
            self.storage,
        ]

        def ready() -> bool:
            try:
                return _http(self.listen_port, "GET", HEALTH_PATH, timeout_s=1.0)[0] == 200
            except OSError:
                return False

        self.process = ManagedProcess(
            name=f"Varnish on 127.0.0.1:{self.listen_port}",
            argv=argv,
            log_path=self.workdir / "varnishd.log",
            ready=ready,
            die_with_parent=self.die_with_parent,
        )
        try:
            self.process.start(timeout_s)
        except LocalStackError as exc:
            free_mb = self._free_mb()
            self.stop()  # the message carries the log tail
            if "VMOD" in str(exc) or "xkey" in str(exc):
                raise LocalStackError(f"{exc}\n{APT_HINT}") from exc
            if CHILD_LAUNCH_FAILED in str(exc):  # what a full disk looks like (a 40 MB workdir reproduces it)
                raise LocalStackError(f"{exc}\n{self._space_message(free_mb)}") from exc
            raise

    def _free_mb(self) -> float:
        return shutil.disk_usage(self.workdir).free / 2**20

    def _space_message(self, free_mb: float) -> str:
        return (
            f"Varnish's workdir {self.workdir} has {free_mb:.0f} MB free; varnishd needs about "
            f"{WORKDIR_NEEDS_MB} MB there for its shared-memory log, and without it its worker dies as it "
            f"launches ({CHILD_LAUNCH_FAILED!r}). Free some disk space, or give Varnish a workdir elsewhere."
        )

    def check_alive(self) -> None:
        if self.process is None:
            raise LocalStackError("Varnish is not started")
        self.process.check_alive()

    def purge(self, *keys: str) -> int:
        """PURGE every object tagged with any of `keys` (xkey); returns how many objects went."""
        status, headers, body = _http(self.listen_port, "PURGE", "/", headers={"xkey-purge": " ".join(keys)})
        if status != 200:
            raise LocalStackError(f"Varnish PURGE of {keys} answered {status}: {body[:200]!r}")
        return int(headers.get("X-Purged", "0"))

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Varnish:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
