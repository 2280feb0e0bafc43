"""Shared fixtures: the real emulators and Varnish, started through cliffhanger.localstack.

    @pytest.mark.emulators
    def test_x(local_stack, clean_bigtable): ...    # env vars point at the session's emulators

    def test_edge(varnish):                          # factory: one varnishd per backend port
        cache = varnish(backend_port=8123)
        ... cache.url, cache.purge("series-9")

The emulators run on free ports (never 8085/8086), so a running demo stack does not clash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from cliffhanger.localstack import LocalStack, Varnish, settings_on_free_ports


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    """Both emulators on free ports, provisioned, with os.environ pointing at them for the session."""
    stack = LocalStack(settings_on_free_ports())
    stack.start(timeout_s=60)
    try:
        stack.provision()
        stack.apply_env()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def clean_bigtable(local_stack: LocalStack) -> LocalStack:
    """Empty every declared Bigtable table before the test (schema kept)."""
    local_stack.check_alive()
    local_stack.reset_bigtable()
    return local_stack


@pytest.fixture(scope="session")
def varnish() -> Iterator[Callable[..., Varnish]]:
    """Factory: `varnish(backend_port=N)` starts (once per backend) varnishd with the repo VCL on a free port."""
    started: dict[tuple[str, int], Varnish] = {}

    def start(backend_port: int, backend_host: str = "127.0.0.1") -> Varnish:
        key = (backend_host, backend_port)
        if key not in started:
            cache = Varnish(backend=f"{backend_host}:{backend_port}")
            cache.start(timeout_s=30)
            started[key] = cache
        return started[key]

    try:
        yield start
    finally:
        for cache in started.values():
            cache.stop()


# Interpreter teardown after the whole suite: native libraries with threads of their own (gRPC's
# pollers, TensorFlow, ONNX Runtime, uvloop) can crash while CPython finalizes modules; one clean-clone
# CI run of 538 passed tests ended "Segmentation fault" after the summary (not reproduced in the next
# full run, with faulthandler on). By then every result is reported, so the process leaves with the
# session's own exit status instead of finalizing those libraries.
_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _EXIT_STATUS and config.pluginmanager.has_plugin("terminalreporter"):
        import os
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
