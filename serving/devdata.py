"""A small but REAL serving world for tests, the benchmark and the demo: a bundle (an untrained query
tower from models.two_tower, random item embeddings, a ScaNN index, an ONNX ranker on the
MICRODRAMA_FEATURES columns, fit to synthetic labels and exported through the parity gate) and Bigtable rows from replayed synthetic events (the same feature definitions and row
updates the streaming pipeline writes), plus precomputed candidate lists.

    artifacts = build_artifacts(workdir, catalog, user_ids)          # slow part (TF, tf2onnx): once
    version = publish_bundle(root, artifacts, version="v1")          # fast: BundleWriter + publish
    seed_features(table, events, catalog)                            # u / cw / done / e / s / c rows
    write_lists(table, bundle, users, segments)                      # cand rows (users, segments, global)

Not a training pipeline: the models are untrained, so scores are arbitrary but shapes, formats and
costs are the real ones.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from cliffhanger.catalog import GENRES, Catalog
from cliffhanger.events import DEVICES, PlaybackEvent
from serving import candidates as cand_mod
from serving.rerank import SERVING_SPEC
from transforms import feature_rows
from transforms.bigtable_sink import BigtableSink
from transforms.features import HISTORY_LEN, UserState

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
EMBEDDING_DIM = 32


@dataclasses.dataclass(frozen=True)
class Artifacts:
    tower_dir: str
    onnx_path: str
    item_ids: tuple[str, ...]


def build_artifacts(workdir: str, catalog: Catalog, user_ids: Sequence[str], seed: int = 0) -> Artifacts:
    """Export an untrained query tower (SavedModel) and a tiny ranker (ONNX, parity-gated)."""
    import tf_keras

    from models.onnx_export import export_ranker
    from models.ranker import train_ranker
    from models.two_tower import QueryTower, QueryTowerSpec, export_tower

    tf_keras.utils.set_random_seed(seed)
    item_ids = tuple(e.episode_id for e in catalog.episodes())
    countries = tuple(sorted({c for s in catalog for c in s.licensing}))
    spec = QueryTowerSpec(
        user_vocab=tuple(user_ids),
        item_vocab=item_ids,
        embedding_dim=EMBEDDING_DIM,
        history_len=HISTORY_LEN,
        countries=countries,
        devices=DEVICES,
        use_hour=True,
        n_genres=len(GENRES),
        hidden=(32,),
    )
    tower = QueryTower(spec)
    tower_dir = os.path.join(workdir, "query_tower")
    export_tower(tower, tower_dir)
    X, y = synthetic_ranker_data(catalog, np.random.default_rng(seed))
    ranker = train_ranker(X, y, hidden=(16, 8), epochs=2, validation_fraction=0.0, seed=seed)
    onnx_path = export_ranker(
        ranker,
        os.path.join(workdir, "ranker.onnx"),
        SERVING_SPEC.n_features,
        metadata={"feature_schema_hash": SERVING_SPEC.schema_hash},
    )
    return Artifacts(tower_dir, onnx_path, item_ids)


def synthetic_ranker_data(catalog: Catalog, rng: np.random.Generator, n_users: int = 64, per_user: int = 8):
    """(X [n_users * per_user, f] float32, y [n] float32): random users, continue-watching rows and
    episode stats over the catalog, mapped to ranker columns by THE mapping
    (`models.ranker_features.ranker_matrix`, SERVING_SPEC = MICRODRAMA_FEATURES), so the ranker's
    baked-in standardisation sees realistic value ranges. Labels are synthetic: a noisy rule favouring
    the next episode, a high retrieval score and genre affinity."""
    from models.ranker_features import Candidate, ranker_matrix

    episodes = list(catalog.episodes())
    blocks = []
    for _ in range(n_users):
        mix = {g: float(rng.random()) for g in rng.choice(GENRES, 2, replace=False)}
        total = sum(mix.values()) or 1.0
        user_u = {
            "completion_rate_7d": float(rng.random()),
            "skip_rate_7d": float(rng.random()),
            "hover_skip_rate_7d": float(rng.random()),
            "binge_depth": int(rng.integers(0, 10)),
            "genre_mix_30m": {g: v / total for g, v in mix.items()},
        }
        watching = [episodes[i] for i in rng.choice(len(episodes), min(3, len(episodes)), replace=False)]
        user_cw = {
            e.series_id: {"episode_number": e.episode_number, "completed": bool(rng.random() < 0.5)} for e in watching
        }
        picks = [episodes[i] for i in rng.integers(0, len(episodes), per_user)]
        picks[0] = catalog.next_episode(watching[0].episode_id) or picks[0]  # some next-episode positives
        cands = [
            Candidate(
                e.episode_id,
                e.series_id,
                e.episode_number,
                catalog.genres(e.series_id),
                float(rng.normal()),
                {
                    "plays_24h": int(rng.integers(0, 500)),
                    "completion_rate_24h": float(rng.random()),
                    "trending": float(rng.random() * 10),
                },
            )
            for e in picks
        ]
        blocks.append(ranker_matrix(user_u, user_cw, cands, SERVING_SPEC))
    X = np.concatenate(blocks)
    col = SERVING_SPEC.columns.index
    logit = X[:, col("retrieval_score")] + 2.0 * X[:, col("ctx_is_next_episode")] + X[:, col("user_genre_affinity")]
    y = (logit + 0.5 * rng.standard_normal(len(X)) > 0.5).astype(np.float32)
    return X, y


def publish_bundle(root: str, artifacts: Artifacts, version: str, seed: int = 0, schema_hash: str | None = None) -> str:
    """Write + publish one bundle version (random item embeddings from `seed`); returns the version."""
    from models.ann_index import build_index
    from models.bundle_writer import BundleWriter

    rng = np.random.default_rng(seed)
    embeddings = (rng.standard_normal((len(artifacts.item_ids), EMBEDDING_DIM)) / np.sqrt(EMBEDDING_DIM)).astype(
        np.float32
    )
    writer = BundleWriter(root, schema_hash or SERVING_SPEC.schema_hash, version=version)
    writer.write_query_tower(artifacts.tower_dir)
    writer.write_items(embeddings, list(artifacts.item_ids))
    writer.write_index(build_index(embeddings, list(artifacts.item_ids)))
    writer.write_ranker(artifacts.onnx_path)
    writer.add_gate("ann_recall_at_10", True, 1.0, 0.95)
    writer.add_gate("onnx_parity", True, 0.0, 1e-5)
    writer.finalize({"note": "serving devdata bundle (untrained)"})
    return writer.publish()


def replay_updates(events: Iterable[PlaybackEvent], catalog: Catalog) -> list[feature_rows.RowUpdate]:
    """Fold events (in the given order) into user / episode / series / cohort state; the final rows."""
    users: dict[str, UserState] = {}
    user_events: dict[str, list[PlaybackEvent]] = defaultdict(list)
    entities: dict[str, Any] = {}
    for e in events:
        genres = catalog.genres(e.series_id) if e.series_id in catalog else ()
        state = users.setdefault(e.user_id, UserState())
        if not state.apply(e, genres):
            continue
        user_events[e.user_id].append(e)
        for key in feature_rows.entity_keys(e):
            entity = entities.get(key)
            if entity is None:
                entity = entities[key] = feature_rows.new_entity_state(key)
            entity.apply(e, genres)
    out: list[feature_rows.RowUpdate] = []
    for user_id, state in users.items():
        out += feature_rows.user_updates(user_id, state, user_events[user_id])
    out += [feature_rows.entity_update(key, state) for key, state in entities.items()]
    return out


def seed_features(target: Any, updates: Iterable[feature_rows.RowUpdate], clones: dict[str, str] | None = None) -> int:
    """Write row updates through the pipeline's sink. `clones` {new_user_id: source_user_id} copies a
    user's rows under another id (benchmarks need many distinct users with realistic rows)."""
    from transforms import rowkeys

    sink = BigtableSink(target)
    by_key: dict[bytes, list[feature_rows.RowUpdate]] = defaultdict(list)
    for u in updates:
        sink.add(u)
        by_key[u.row_key].append(u)
    for new_id, source_id in (clones or {}).items():
        for u in by_key.get(rowkeys.user_key(source_id), []):
            sink.add(dataclasses.replace(u, row_key=rowkeys.user_key(new_id)))
    return sink.flush()


def popularity_lists(events: Iterable[PlaybackEvent], k: int) -> dict[tuple[str, str] | None, list[tuple[str, float]]]:
    """Top-k episodes by play_start count per (country, device) segment, and globally (key None)."""
    counts: dict[tuple[str, str] | None, Counter] = defaultdict(Counter)
    for e in events:
        if e.event_type == "play_start":
            counts[(e.country, e.device)][e.episode_id] += 1
            counts[None][e.episode_id] += 1
    return {seg: [(eid, float(n)) for eid, n in c.most_common(k)] for seg, c in counts.items()}


def user_lists(
    bundle: Any, user_features: dict[str, dict], user_context: dict[str, tuple[str, str]], k: int
) -> dict[str, list[tuple[str, float]]]:
    """What the candidates pipeline computes: top-k from the query tower + ScaNN for each user."""
    from models.query_features import QueryContext
    from serving.retrieval import QueryEncoder

    encoder = QueryEncoder(bundle.load_query_tower())
    out = {}
    users = sorted(user_features)
    for start in range(0, len(users), 256):
        chunk = users[start : start + 256]
        contexts = [QueryContext(u, user_features[u], *user_context[u], 12) for u in chunk]
        emb = encoder.encode_batch(contexts)
        ids, scores = bundle.index.search(emb, k=min(k, len(bundle.index)))
        for u, row_ids, row_scores in zip(chunk, ids.tolist(), scores.tolist(), strict=True):
            out[u] = [(str(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True)]
    return out


def write_lists(
    table: Any,
    version: str,
    generated_ms: int,
    users: dict[str, list[tuple[str, float]]],
    segments: dict[tuple[str, str] | None, list[tuple[str, float]]],
) -> int:
    rows = [(cand_mod.user_row(u), version, generated_ms, items) for u, items in users.items()]
    for seg, items in segments.items():
        key = cand_mod.global_row() if seg is None else cand_mod.segment_row(*seg)
        rows.append((key, version, generated_ms, items))
    return cand_mod.write_candidate_lists(table, rows)
