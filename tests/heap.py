"""Measuring what held objects cost the heap."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any


def traced_bytes_each(make: Callable[[], Any], n: int = 200) -> tuple[float, list]:
    """Heap bytes (tracemalloc) each object `make()` returns takes while it is kept, over n of them, and
    the kept objects."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [make() for _ in range(n)]
        return (tracemalloc.get_traced_memory()[0] - before) / n, kept
    finally:
        tracemalloc.stop()
