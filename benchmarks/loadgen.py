"""The load generator and process accounting of benchmarks/serving_latency.py.

RawClient: one keep-alive HTTP/1.1 connection with a minimal parser (request line + Content-Length
body), so the generator takes as little of the shared CPU as possible; HttpxClient for comparison.
run_phase: `concurrency` workers issue up to `max_requests` GETs or run for `max_s`, whichever ends
first. cpu_split: CPU seconds per named process from /proc (a process and its direct children).
"""

from __future__ import annotations

import asyncio
import os
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
