"""The serving benchmark's load generator: every planned request is issued once on keep-alive
connections, a finite plan ends the phase, checks are tallied; CPU accounting reads /proc."""

from __future__ import annotations

import asyncio
import os

from benchmarks.loadgen import cpu_seconds, cpu_split, run_phase


async def _server(seen: list[str]) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            path = head.split(b" ", 2)[1].decode()
            seen.append(path)
            body = b"ok" if "bad" not in path else b"no"
            status = b"200 OK" if "bad" not in path else b"500 Oops"
            writer.write(b"HTTP/1.1 " + status + b"\r\nX-Cache: HIT\r\nContent-Length: 2\r\n\r\n" + body)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_a_finite_plan_is_issued_once_and_checks_are_tallied() -> None:
    async def main():
        seen: list[str] = []
        server = await _server(seen)
        port = server.sockets[0].getsockname()[1]
        paths = iter([f"/p{i}" for i in range(20)] + ["/bad"])

        def check(status, headers, body):
            return (None if status == 200 else f"status {status}"), headers.get("x-cache", "")

        lat, errors, elapsed, tags = await run_phase(port, paths, 4, 1000, 10, "raw", check)
        server.close()
        return seen, lat, errors, elapsed, tags

    seen, lat, errors, elapsed, tags = asyncio.run(main())
    assert sorted(seen) == sorted([f"/p{i}" for i in range(20)] + ["/bad"])  # each once, then the phase ends
    assert len(lat) == 21 and all(x > 0 for x in lat) and elapsed > 0
    assert errors == {"status 500": 1} and tags == {"HIT": 21}


def test_cpu_accounting_sees_this_process() -> None:
    sum(i * i for i in range(300_000))  # burn a little CPU
    assert cpu_seconds(os.getpid()) > 0
    split = cpu_split({"me": os.getpid()})
    assert set(split) == {"me", "client"} and split["me"] >= split["client"] * 0.5 > 0
