"""catalog.json as running jobs see it: cached per process, re-read when the file changes.

    catalog = load_catalog("var/world/catalog.json")     # cheap to call per bundle or per element

The file is looked at (its stamp: modification time and size) at most every `recheck_s`; an episode
drop publishes a new catalog.json and running jobs pick it up without a restart. Per process, because
the Beam DirectRunner deserializes DoFns and calls setup() for every bundle (re-parsing the catalog per
bundle was the top cost of the streaming job), and a Flink Python worker runs many operators.

Beam-free: `stamp` and `read` default to the local filesystem; the Beam jobs pass Beam's FileSystems
(transforms/compute_features.load_catalog) so gs:// paths work too.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable

from cliffhanger.catalog import Catalog

CATALOG_RECHECK_S = 30.0
_catalogs: dict[str, tuple[float, tuple, Catalog]] = {}  # path -> (checked at, file stamp, catalog)
_lock = threading.Lock()


def local_stamp(path: str) -> tuple:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size)


def local_read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def load_catalog(
    path: str,
    recheck_s: float = CATALOG_RECHECK_S,
    clock: Callable[[], float] = time.monotonic,
    stamp: Callable[[str], tuple] = local_stamp,
    read: Callable[[str], bytes] = local_read,
) -> Catalog:
    """The catalog at `path`: the cached object while the file is unchanged (see the module docstring)."""
    now = clock()
    with _lock:
        entry = _catalogs.get(path)
    if entry is not None and now - entry[0] < recheck_s:
        return entry[2]
    current = stamp(path)
    catalog = entry[2] if entry is not None and current == entry[1] else Catalog.from_dict(json.loads(read(path)))
    with _lock:
        _catalogs[path] = (now, current, catalog)
    return catalog
