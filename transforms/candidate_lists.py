"""Precomputed candidate lists: the pure parts (no Beam), shared by the streaming candidates pipeline
(pipelines/candidates.py) and the segment / global lists job (pipelines/segment_candidates.py).

    latest = coalesce(notices)                       # one notice per user: the newest version wins
    contexts = [query_context(n, row_u) for n in latest]
    lists = top_n(bundle_index, encoder, contexts, n)   # [[(episode_id, score), ...], ...]

Ordering across bundles is left to Bigtable: a list is written with the cell timestamp of the notice's
`event_time_ms` and the family keeps one version, so an older notice processed late writes a cell
that readers never see (the newest timestamp wins), and a retried bundle rewrites identical cells.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cliffhanger.catalog import Catalog
from cliffhanger.notices import ChangeNotice
from models.query_features import QueryContext

REFRESHED = "candidates_refreshed"
HOUR_MS = 3_600_000


def _newness(n: ChangeNotice) -> tuple[int, int, str]:
    """Total order on a user's notices: version first (monotonic per user), then event time, then reason."""
    return (n.version, n.event_time_ms, n.reason)


def coalesce(notices: Iterable[ChangeNotice]) -> list[ChangeNotice]:
    """The newest notice per user id, in first-seen order of the users (deterministic for tests)."""
    latest: dict[str, ChangeNotice] = {}
    for n in notices:
        old = latest.get(n.id)
        if old is None or _newness(n) > _newness(old):
            latest[n.id] = n
    return list(latest.values())


def query_context(notice: ChangeNotice, user_u: Mapping[str, Any] | None) -> QueryContext:
    """The query tower's context for a precomputed list: the user's row, the cohort of their latest
    event (from the notice; '' when an older producer did not send it: the tower's OOV bucket) and the
    hour of day of the notice's event time (precomputed lists are as of that moment, not of a request)."""
    hour = int((notice.event_time_ms // HOUR_MS) % 24)
    return QueryContext(notice.id, user_u, notice.country, notice.device, hour)


def refreshed_notice(notice: ChangeNotice) -> ChangeNotice:
    """What the candidates pipeline announces (topic candidate-changes) once the user's list is rewritten."""
    return ChangeNotice(
        "user", notice.id, REFRESHED, notice.version, notice.event_time_ms, notice.country, notice.device
    )


def top_n(
    encoder: Any, index: Any, contexts: Sequence[QueryContext], n: int, chunk: int = 512
) -> list[list[tuple[str, float]]]:
    """Top-n (episode_id, dot-product score) per context, best first: batched query-tower calls of up to
    `chunk` queries and one batched ScaNN search per call (`encoder`: serving.retrieval.QueryEncoder,
    `index`: models.ann_index.ScannIndex)."""
    out: list[list[tuple[str, float]]] = []
    k = min(int(n), len(index))
    for start in range(0, len(contexts), chunk):
        part = list(contexts[start : start + chunk])
        embeddings = encoder.encode_batch(part)  # [len(part), d]
        ids, scores = index.search(embeddings, k=k)  # [len(part), k] each
        for row_ids, row_scores in zip(ids.tolist(), scores.tolist(), strict=True):
            out.append([(str(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True)])
    return out


def licensed_episodes(catalog: Catalog, country: str | None, at_ms: int) -> frozenset[str]:
    """Episodes a list may hold: in a series licensed in `country` now or later (a window not ended by
    `at_ms`), or, with country None, licensed in at least one country. Serving still checks licensing at
    request time; this only keeps lists from filling up with episodes nobody can be shown."""
    out = set()
    for series in catalog:
        windows = series.licensing.values() if country is None else [series.licensing.get(country)]
        if any(w is not None and (w[1] is None or w[1] > at_ms) for w in windows):
            out.update(e.episode_id for e in series.episodes)
    return frozenset(out)


def filter_items(items: Iterable[tuple[str, float]], allowed: frozenset[str], n: int) -> list[tuple[str, float]]:
    """The first n items whose episode is in `allowed`, order kept."""
    out = []
    for eid, score in items:
        if eid in allowed:
            out.append((eid, score))
            if len(out) >= n:
                break
    return out


def popularity(
    item_rows: Mapping[str, Mapping[str, Any] | None], allowed: frozenset[str], n: int
) -> list[tuple[str, float]]:
    """Top-n episodes by plays in the last 24 h (ties: trending, then episode id), from family `i` of the
    episode rows. Score = plays_24h. Episodes without plays are left out."""
    scored = []
    for eid, row in item_rows.items():
        if eid not in allowed or not row:
            continue
        plays = float(row.get("plays_24h") or 0.0)
        if plays > 0:
            scored.append((-plays, -float(row.get("trending") or 0.0), eid))
    scored.sort()
    return [(eid, -neg_plays) for neg_plays, _, eid in scored[:n]]


def first_episodes(
    catalog: Catalog, allowed: frozenset[str], exclude: Iterable[str], n: int
) -> list[tuple[str, float]]:
    """Padding for a short list: episode 1 of each allowed series (catalog order), score 0."""
    seen = set(exclude)
    out = []
    for series in catalog:
        if len(out) >= n:
            break
        if series.episodes and series.episodes[0].episode_id in allowed and series.episodes[0].episode_id not in seen:
            out.append((series.episodes[0].episode_id, 0.0))
    return out
