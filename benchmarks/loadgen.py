"""The load generator and process accounting of benchmarks/serving_latency.py.

RawClient: one keep-alive HTTP/1.1 connection with a minimal parser (request line + Content-Length
body), so the generator takes as little of the shared CPU as possible; HttpxClient for comparison.
run_phase: `concurrency` workers issue up to `max_requests` GETs or run for `max_s`, whichever ends
first. cpu_split: CPU seconds per named process from /proc (a process and its direct children). cpu_probe_ms:
the machine's speed right now (a fixed loop's CPU ms). lower_priority: the generator's niceness while it
measures.
scrape_stages / stage_means_ms: the server's own per-stage latency (its Prometheus
`cliffhanger_stage_seconds`) over a phase, to tell waiting for a read from computing; gc_pauses: its
garbage collector's pauses over the phase (`cliffhanger_gc_pause_seconds`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections import Counter
from pathlib import Path


class RawClient:
    """One keep-alive HTTP/1.1 connection; GET -> (status, headers lower-cased, body)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class HttpxClient:
    def __init__(self, port: int) -> None:
        import httpx

        self.client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)

    async def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        r = await self.client.get(path)
        return r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content

    async def close(self) -> None:
        await self.client.aclose()


async def run_phase(port: int, paths, concurrency: int, max_requests: int, max_s: float, client_kind: str, check):
    """`paths` is an iterator of request paths; returns (latencies_ms, errors, elapsed_s, tags)."""
    latencies: list[float] = []
    errors: Counter = Counter()
    tags: Counter = Counter()
    issued = 0
    deadline = time.perf_counter() + max_s
    cls = RawClient if client_kind == "raw" else HttpxClient

    async def worker() -> None:
        nonlocal issued
        client = cls(port)
        try:
            while issued < max_requests and time.perf_counter() < deadline:
                issued += 1
                path = next(paths, None)
                if path is None:  # a finite plan ran out (a small --users world)
                    break
                start = time.perf_counter()
                status, headers, body = await client.get(path)
                latencies.append((time.perf_counter() - start) * 1000)
                problem, tag = check(status, headers, body)
                tags[tag] += 1
                if problem:
                    errors[problem] += 1
        finally:
            await client.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - start, tags


@contextlib.contextmanager
def lower_priority(niceness: int):
    """Run the block `niceness` steps nicer (this thread, and processes started inside it), then back.

    Why: the generator stands in for clients on other machines, but here it shares the server's two
    cores. The server's event loop keeps one core busy; on the other, the generator (~0.1 ms of CPU a
    request) competed with everything a read passes through: the emulator, gRPC's I/O threads and its
    poller thread, which hands completions to the loop. perf sched over 5 s of c8 misses: the loop
    waited 10 ms in all for a core, the poller 536 ms and each I/O thread ~140 ms (up to 10 ms at
    once), and the loop sat idle 22% of the time. At a lower priority the generator runs when they
    do not need the core, as an off-host client would not be there at all; its own delays still count
    in every latency it measures. Going back needs the privilege to raise priority (root here); without
    it the thread stays nicer."""
    if niceness <= 0:
        yield
        return
    before = os.getpriority(os.PRIO_PROCESS, 0)  # Linux: the calling thread
    os.setpriority(os.PRIO_PROCESS, 0, before + niceness)
    try:
        yield
    finally:
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, 0, before)


def cpu_probe_ms(iterations: int = 1_000_000, repeats: int = 3) -> float:
    """CPU ms of a fixed pure-Python loop (the fastest of `repeats`): how fast this machine's cores run
    right now. On this VM the same loop takes 1.6-1.8x longer in some minutes than in others, and
    every process's CPU per request moves with it; a phase's probe says which kind of minute it ran in."""
    best = float("inf")
    for _ in range(repeats):
        start, total = time.process_time(), 0
        for i in range(iterations):
            total += i & 7
        best = min(best, time.process_time() - start)
    return round(best * 1000, 2)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its direct children (varnishd's worker is a child), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")

    def one(stat_path: str) -> tuple[int, float]:
        fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / tick  # ppid, utime + stime

    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid, cpu = one(str(stat))
        except (OSError, IndexError, ValueError):
            continue  # a process that ended meanwhile
        if stat.parent.name == str(pid) or ppid == pid:
            total += cpu
    return total


def cpu_split(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far per named process, and this process (the load generator) as `client`."""
    t = os.times()
    return {**{name: cpu_seconds(pid) for name, pid in pids.items()}, "client": t.user + t.system}


_STAGE_LINE = re.compile(r'^cliffhanger_stage_seconds_(sum|count)\{stage="([a-z_]+)"\} (\S+)$', re.M)
_GC_LINE = re.compile(r'^cliffhanger_gc_pause_seconds_(sum|count)\{generation="(\d)"\} (\S+)$', re.M)
GC = "gc_gen"  # stage_totals' keys for the collector's pauses: gc_gen0 .. gc_gen2


def stage_totals(metrics_text: str) -> dict[str, dict[str, float]]:
    """{stage: {"sum": seconds, "count": n}} from the server's Prometheus text (`cliffhanger_stage_seconds`),
    and the garbage collector's pauses (`cliffhanger_gc_pause_seconds`) as stages gc_gen0 .. gc_gen2."""
    out: dict[str, dict[str, float]] = {}
    for kind, stage, value in _STAGE_LINE.findall(metrics_text):
        out.setdefault(stage, {})[kind] = float(value)
    for kind, generation, value in _GC_LINE.findall(metrics_text):
        out.setdefault(GC + generation, {})[kind] = float(value)
    return out


def _deltas(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]):
    for stage, now in after.items():
        then = before.get(stage, {})
        n = now.get("count", 0.0) - then.get("count", 0.0)
        if n > 0:
            yield stage, n, 1000 * (now.get("sum", 0.0) - then.get("sum", 0.0))


def stage_means_ms(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean ms per request stage over the requests between two `stage_totals` (stages no request went
    through are left out; the collector's pauses are `gc_pauses`)."""
    return {stage: round(ms / n, 3) for stage, n, ms in _deltas(before, after) if not stage.startswith(GC)}


def gc_pauses(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """{"gen2": {"collections": n, "ms": their pauses summed}, ...} between two `stage_totals`
    (generations that did not collect are left out)."""
    return {
        "gen" + stage[len(GC) :]: {"collections": int(n), "ms": round(ms, 3)}
        for stage, n, ms in _deltas(before, after)
        if stage.startswith(GC)
    }


async def scrape_stages(ports: list[int]) -> dict[str, dict[str, float]]:
    """`stage_totals` summed over every replica's /metrics."""
    total: dict[str, dict[str, float]] = {}
    for port in ports:
        client = RawClient(port)
        try:
            status, _, body = await client.get("/metrics")
        finally:
            await client.close()
        if status != 200:
            raise RuntimeError(f"/metrics on port {port} answered {status}")
        for stage, parts in stage_totals(body.decode()).items():
            into = total.setdefault(stage, {})
            for kind, value in parts.items():
                into[kind] = into.get(kind, 0.0) + value
    return total
