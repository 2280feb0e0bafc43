"""Segment and global candidate lists for users without a precomputed list of their own (new users, or
a user the streaming candidates pipeline has not reached yet):

    g#<COUNTRY>#<DEVICE>   top-N of the bundle's query tower for a user with no id, no history and no
                           genre mix in that country x device (the hour of day of the run), over the
                           ScaNN index, keeping episodes of series licensed in that country
    g#global               top-N episodes by plays in the last 24 h (episode rows, family `i`), among
                           episodes licensed somewhere, padded with episode 1 of licensed series

Why the query tower and not cohort popularity for segments: the cohort rows (c#<country>#<device>)
already feed serving's `trending` source for every request, so a popularity segment list would blend
the same signal in twice; the tower's answer for an empty user of that segment is what the model
learned that segment starts with, and it changes with the bundle, which is when this runs. The global
list is the model-free floor (serving's `popularity` rung), so it is popularity.

Run after each bundle publish (the training pipeline can call `write_segment_lists`), and on a schedule
for the global list (plays drift within a bundle's lifetime):
    python -m pipelines.segment_candidates --bundle_root var/bundles --catalog var/world/catalog.json
Cells are stamped with the run's time (`generated_ms`): the newest run wins, a rerun with the same
time rewrites identical cells.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from cliffhanger import resources
from cliffhanger.catalog import Catalog
from cliffhanger.config import Settings
from cliffhanger.events import DEVICES
from models.query_features import QueryContext
from transforms import candidate_lists, rowkeys

_LOG = logging.getLogger(__name__)
READ_BATCH = 1000  # episode rows per Bigtable read


@dataclasses.dataclass(frozen=True)
class SegmentLists:
    bundle_version: str
    generated_ms: int
    segments: dict[tuple[str, str], list[tuple[str, float]]]  # (country, device) -> items
    global_items: list[tuple[str, float]]


def segments_of(catalog: Catalog) -> list[tuple[str, str]]:
    """Every (country, device) with a licensing entry for some series: countries x DEVICES, sorted."""
    countries = sorted({c for s in catalog for c in s.licensing})
    return [(c, d) for c in countries for d in DEVICES]


def segment_items(
    encoder: Any,
    index: Any,
    catalog: Catalog,
    segments: Sequence[tuple[str, str]],
    n: int,
    generated_ms: int,
) -> dict[tuple[str, str], list[tuple[str, float]]]:
    """Top-n per segment: one batched query-tower call and one ScaNN search for all segments; the
    search over-fetches 3n so that n remain after the licensing filter where the catalog allows."""
    hour = int((generated_ms // candidate_lists.HOUR_MS) % 24)
    contexts = [QueryContext("", None, country, device, hour) for country, device in segments]
    raw = candidate_lists.top_n(encoder, index, contexts, 3 * n)
    out = {}
    for (country, device), items in zip(segments, raw, strict=True):
        allowed = candidate_lists.licensed_episodes(catalog, country, generated_ms)
        out[(country, device)] = candidate_lists.filter_items(items, allowed, n)
    return out


def global_items(store: Any, catalog: Catalog, n: int, generated_ms: int) -> list[tuple[str, float]]:
    """Top-n by plays_24h among episodes licensed somewhere (batched reads), padded to n with first episodes."""
    allowed = candidate_lists.licensed_episodes(catalog, None, generated_ms)
    ids = sorted(allowed)
    item_rows: dict[str, Any] = {}
    for start in range(0, len(ids), READ_BATCH):
        chunk = ids[start : start + READ_BATCH]
        rows = store.read([rowkeys.episode_key(e) for e in chunk])
        for eid in chunk:
            row = rows.get(rowkeys.episode_key(eid))
            item_rows[eid] = row.values.get("i") if row is not None else None
    items = candidate_lists.popularity(item_rows, allowed, n)
    return items + candidate_lists.first_episodes(catalog, allowed, [e for e, _ in items], n - len(items))


def build_segment_lists(
    bundle_root: str, catalog: Catalog, store: Any, n: int, generated_ms: int, segments: Sequence | None = None
) -> SegmentLists:
    """Load the CURRENT bundle (query tower + index; no ranker) and compute every list."""
    from models.bundle import load_bundle
    from serving.retrieval import QueryEncoder

    bundle = load_bundle(bundle_root, load_ranker=False)
    encoder = QueryEncoder(bundle.load_query_tower())
    segs = list(segments) if segments is not None else segments_of(catalog)
    per_segment = segment_items(encoder, bundle.index, catalog, segs, n, generated_ms)
    return SegmentLists(bundle.version, generated_ms, per_segment, global_items(store, catalog, n, generated_ms))


def write_segment_lists(table: Any, lists: SegmentLists) -> int:
    """All lists in batched writes, cells stamped with generated_ms; returns rows written."""
    from serving import candidates as cand_mod

    rows = [
        (cand_mod.segment_row(country, device), lists.bundle_version, lists.generated_ms, items)
        for (country, device), items in sorted(lists.segments.items())
    ]
    rows.append((cand_mod.global_row(), lists.bundle_version, lists.generated_ms, lists.global_items))
    return cand_mod.write_candidate_lists(table, rows)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Compute and write the lists once; returns a summary (also logged)."""
    from serving.feature_store import FeatureStore
    from transforms.bigtable_sink import BigtableTarget
    from transforms.compute_features import load_catalog

    defaults = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle_root", "--bundle-root", dest="bundle_root", required=True, help="local or gs://")
    parser.add_argument("--catalog", required=True, help="catalog.json (local path or gs://)")
    parser.add_argument("--top_n", type=int, default=200)
    parser.add_argument("--project", default=defaults.project)
    parser.add_argument("--bigtable_instance", default=defaults.bigtable_instance)
    parser.add_argument("--bigtable_table", default=resources.FEATURES_TABLE)
    parser.add_argument("--generated_ms", type=int, default=None, help="list time (default: now)")
    args = parser.parse_args(argv)
    if args.top_n < 1:
        parser.error("--top_n must be >= 1")
    generated_ms = args.generated_ms if args.generated_ms is not None else int(time.time() * 1000)
    table = BigtableTarget(args.project, args.bigtable_instance, args.bigtable_table).open_table()
    lists = build_segment_lists(
        args.bundle_root, load_catalog(args.catalog), FeatureStore(table), args.top_n, generated_ms
    )
    written = write_segment_lists(table, lists)
    summary = {
        "bundle_version": lists.bundle_version,
        "generated_ms": generated_ms,
        "rows_written": written,
        "segments": {f"{c}#{d}": len(items) for (c, d), items in sorted(lists.segments.items())},
        "global": len(lists.global_items),
    }
    _LOG.info("segment lists: %s", json.dumps(summary))
    return summary


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    print(json.dumps(run(), indent=2))
