"""Serving fixtures: a tiny real bundle (built once per session), the small test catalog, settings."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def edge_secret() -> bytes:
    os.environ.setdefault("CLIFFHANGER_EDGE_KEY_SECRET", "test-edge-secret")
    return os.environ["CLIFFHANGER_EDGE_KEY_SECRET"].encode()
