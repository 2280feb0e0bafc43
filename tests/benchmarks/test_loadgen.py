"""The serving benchmark's load generator: every planned request is issued once on keep-alive
connections, a finite plan ends the phase, checks are tallied; CPU accounting reads /proc; it measures
at a lower priority than the processes it started before."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from benchmarks.loadgen import cpu_seconds, cpu_split, lower_priority, run_phase


def _ok_unless_bad(path: str) -> bytes:
    if "bad" in path:
        return b"HTTP/1.1 500 Oops\r\nX-Cache: HIT\r\nContent-Length: 2\r\n\r\nno"
    return b"HTTP/1.1 200 OK\r\nX-Cache: HIT\r\nContent-Length: 2\r\n\r\nok"


async def _server(seen: list[str], respond=_ok_unless_bad) -> asyncio.AbstractServer:
    """A keep-alive HTTP/1.1 server on a free port: records each path, answers `respond(path)`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            path = head.split(b" ", 2)[1].decode()
            seen.append(path)
            writer.write(respond(path))
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


def test_cpu_of_a_supervisor_includes_its_replicas() -> None:
    """`python -m serving --replicas N` runs each replica as a direct child: the benchmark's `server` CPU
    (cpu_seconds of the supervisor's pid) must include what the children burn."""
    import subprocess
    import sys
    import time

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\ntime.sleep(30)"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys, time\nkids = [subprocess.Popen([sys.executable, '-c', {burn!r}]) for _ in range(2)]\ntime.sleep(30)",
        ]
    )
    try:
        deadline = time.monotonic() + 20
        while cpu_seconds(parent.pid) < 0.8 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cpu_seconds(parent.pid) >= 0.8  # 2 x 0.4 s burnt by the children, the parent idles
    finally:
        subprocess.run(["pkill", "-P", str(parent.pid)], check=False)
        parent.kill()
        parent.wait()


def test_stage_means_come_from_the_servers_own_histograms() -> None:
    """The benchmark's server-side breakdown: a real Metrics registry's exposition, observed between two
    scrapes, gives each stage's mean over exactly those requests."""
    from prometheus_client import generate_latest

    from benchmarks.loadgen import gc_pauses, stage_means_ms, stage_totals
    from serving.metrics import Metrics

    m = Metrics()
    m.stages["blend"].observe(0.5)  # before the phase: must not count
    m.gc_pause.labels("2").observe(0.05)
    before = stage_totals(generate_latest(m.registry).decode())
    for seconds in (0.002, 0.004):
        m.stages["feature_read"].observe(seconds)
        m.gc_pause.labels("2").observe(seconds)
    m.stages["blend"].observe(0.0003)
    m.gc_pause.labels("0").observe(0.0001)
    after = stage_totals(generate_latest(m.registry).decode())
    assert before["blend"] == {"sum": 0.5, "count": 1.0} and before["gc_gen2"] == {"sum": 0.05, "count": 1.0}
    assert stage_means_ms(before, after) == {"feature_read": 3.0, "blend": 0.3}  # pauses are not a stage
    assert gc_pauses(before, after) == {"gen2": {"collections": 2, "ms": 6.0}, "gen0": {"collections": 1, "ms": 0.1}}
    assert stage_means_ms(after, after) == {} and gc_pauses(after, after) == {}  # nothing in between


def test_stages_are_summed_over_every_replica() -> None:
    from benchmarks.loadgen import scrape_stages

    bodies = [
        b'cliffhanger_stage_seconds_sum{stage="rules"} 0.25\ncliffhanger_stage_seconds_count{stage="rules"} 100.0\n',
        b'cliffhanger_stage_seconds_sum{stage="rules"} 0.75\ncliffhanger_stage_seconds_count{stage="rules"} 300.0\n',
    ]

    async def main():
        servers = []
        for body in bodies:

            async def handle(reader, writer, body=body):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                writer.close()

            servers.append(await asyncio.start_server(handle, "127.0.0.1", 0))
        try:
            return await scrape_stages([s.sockets[0].getsockname()[1] for s in servers])
        finally:
            for s in servers:
                s.close()

    assert asyncio.run(main()) == {"rules": {"sum": 1.0, "count": 400.0}}


def test_hit_phases_start_from_fresh_entries() -> None:
    """benchmarks.serving_latency.refresh_hits asks each hit-phase path again until the server answers
    it as a fresh in-process hit: a stale answer means a revalidation (a miss) is still running."""
    from benchmarks.serving_latency import refresh_hits

    answers = {"/a": ["stale", "stale", "hit"], "/b": ["hit"], "/c": ["miss", "hit"]}
    asked: list[str] = []

    def respond(path: str) -> bytes:
        state = answers[path].pop(0) if len(answers[path]) > 1 else answers[path][0]
        return b"HTTP/1.1 200 OK\r\nX-Serving-Cache: " + state.encode() + b"\r\nContent-Length: 0\r\n\r\n"

    async def main() -> None:
        server = await _server(asked, respond)
        await refresh_hits(server.sockets[0].getsockname()[1], ["/a", "/b", "/c"], "raw")
        server.close()

    asyncio.run(main())
    assert asked == ["/a", "/a", "/a", "/b", "/c", "/c"]


def test_miss_sizes_are_distinct_answers_apart_from_the_warm_sets() -> None:
    """A soak's passes over the users ask for other n: each (user, n) is an answer not cached yet, never
    the warm-up's n=30 or the hit sets' n=20 (those would be hits)."""
    import pytest

    from benchmarks.serving_latency import miss_sizes

    assert miss_sizes(1) == [10]
    sizes = miss_sizes(39)
    assert sizes[:3] == [10, 11, 12] and len(set(sizes)) == 39 and not {20, 30} & set(sizes)
    assert max(sizes) <= 50  # serving's max_n
    for bad in (0, 40):
        with pytest.raises(ValueError, match="--miss-variants"):
            miss_sizes(bad)


def test_the_cpu_probe_measures_work() -> None:
    """cpu_probe_ms times a fixed loop: eight times the iterations take clearly longer (the machine's
    own 1.6-1.8x swings stay far inside that margin)."""
    from benchmarks.loadgen import cpu_probe_ms

    small, big = cpu_probe_ms(100_000), cpu_probe_ms(800_000)
    assert small > 0 and big > 2.5 * small, (small, big)


def test_the_generator_measures_nicer_than_what_it_started_before() -> None:
    """Inside lower_priority the thread (and a process it starts) runs at +n; a process started before
    keeps its priority; after the block the thread is back where it was (given the privilege to go back,
    which root has)."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with lower_priority(7):
            assert os.getpriority(os.PRIO_PROCESS, 0) == before + 7
            child = subprocess.run(
                [sys.executable, "-c", "import os; print(os.getpriority(os.PRIO_PROCESS, 0))"],
                capture_output=True,
                text=True,
                check=True,
            )
            assert int(child.stdout) == before + 7
            assert os.getpriority(os.PRIO_PROCESS, sleeper.pid) == before  # started before: untouched
        if os.geteuid() == 0:
            assert os.getpriority(os.PRIO_PROCESS, 0) == before
        now = os.getpriority(os.PRIO_PROCESS, 0)
        with lower_priority(0):  # 0: no change
            assert os.getpriority(os.PRIO_PROCESS, 0) == now
    finally:
        sleeper.kill()
        sleeper.wait()
