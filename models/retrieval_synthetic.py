"""A time split of a synthetic world (cliffhanger.synth) in the same shape as a real split, plus features.

Each (user, episode) pair gets one label: positive if the user ever completed, liked or shared it,
else negative if the user skipped it or hovered past it (other event types carry no label). The pair
is placed by the time of the first event that decided its label: the earliest 70% of labelled pairs
(by event time) train, the next 10% valid, the last 20% test. Every catalog episode is rankable, so
unwatched (cold) episodes compete through their features (series, genres, episode number).
Malformed or duplicate log records are skipped and counted (the log carries deliberate faults).
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from cliffhanger.catalog import GENRES, Catalog
from cliffhanger.events import EventError, parse_event
from models.retrieval_training import SideFeatures
from models.splits import Split, SplitError, from_rows

POSITIVE_EVENTS = frozenset({"complete", "like", "share"})
NEGATIVE_EVENTS = frozenset({"skip", "hover"})
FRACTIONS = (0.7, 0.1, 0.2)
HOUR_MS = 3_600_000


@dataclasses.dataclass
class SyntheticSplit:
    split: Split
    side: SideFeatures
    stats: dict[str, int]


def load_world_split(world_dir: str) -> SyntheticSplit:
    """Read world_dir/catalog.json and events.jsonl into a time split with side features."""
    from cliffhanger.synth.log import LogError, read_log

    catalog_path, events_path = os.path.join(world_dir, "catalog.json"), os.path.join(world_dir, "events.jsonl")
    for path in (catalog_path, events_path):
        if not os.path.isfile(path):
            raise SplitError(path, "not found (a synthetic world directory needs catalog.json and events.jsonl)")
    try:
        catalog = Catalog.load(catalog_path)
    except ValueError as exc:
        raise SplitError(catalog_path, f"not a valid catalog: {exc}") from None
    stats: collections.Counter = collections.Counter()
    seen: set[str] = set()
    events = []
    try:
        for record in read_log(events_path):
            try:
                event = parse_event(record.payload)
            except EventError:
                stats["malformed"] += 1
                continue
            if event.event_id in seen:
                stats["duplicates"] += 1
                continue
            seen.add(event.event_id)
            events.append(event)
    except (LogError, UnicodeDecodeError) as exc:
        raise SplitError(events_path, f"not an event log: {exc}") from None
    return build_split(os.path.basename(os.path.normpath(world_dir)), catalog, events, stats)


def build_split(name: str, catalog: Catalog, events: list, stats: collections.Counter | None = None) -> SyntheticSplit:
    """events: cliffhanger.events.PlaybackEvent list (any order) -> time split + features."""
    stats = collections.Counter(stats or {})
    episodes = sorted(e.episode_id for e in catalog.episodes())
    known = frozenset(episodes)
    label: dict[tuple[str, str], tuple[float, object]] = {}  # pair -> (label, deciding event)
    for e in sorted(events, key=lambda e: e.event_time_ms):
        if e.episode_id not in known:
            stats["unknown_episode"] += 1
            continue
        key = (e.user_id, e.episode_id)
        if e.event_type in POSITIVE_EVENTS and (key not in label or label[key][0] < 1.0):
            label[key] = (1.0, e)
        elif e.event_type in NEGATIVE_EVENTS and key not in label:
            label[key] = (0.0, e)
    if not label:
        raise SplitError(name, "the event log has no labelled (complete/like/share/skip/hover) events")
    pairs = sorted(label.items(), key=lambda kv: kv[1][1].event_time_ms)
    n = len(pairs)
    cut1, cut2 = int(n * FRACTIONS[0]), int(n * (FRACTIONS[0] + FRACTIONS[1]))
    chunks = {"train": pairs[:cut1], "valid": pairs[cut1:cut2], "test": pairs[cut2:]}
    rows = {p: [(u, i, lab) for (u, i), (lab, _) in chunk] for p, chunk in chunks.items()}
    split = from_rows(name, rows, item_universe=episodes)
    stats.update({f"{p}_pairs": len(r) for p, r in rows.items()})
    return SyntheticSplit(split, _side_features(split, catalog, [e for _, (_, e) in chunks["train"]]), dict(stats))


def item_side_features(item_ids: Sequence[str], catalog: Catalog) -> dict[str, np.ndarray]:
    """Candidate-tower features of catalog episodes: series_id [n] str, genres [n, G] multi-hot,
    episode_number [n] float32 (row i is item_ids[i]); a new episode gets an embedding from these."""
    genre_index = {g: k for k, g in enumerate(GENRES)}
    series = np.empty(len(item_ids), dtype=object)
    genres = np.zeros((len(item_ids), len(GENRES)), dtype=np.float32)
    number = np.zeros(len(item_ids), dtype=np.float32)
    for i, episode_id in enumerate(item_ids):
        ep = catalog.episode(episode_id)
        series[i], number[i] = ep.series_id, ep.episode_number
        for g in catalog.genres(ep.series_id):
            genres[i, genre_index[g]] = 1.0
    return {"series_id": series, "genres": genres, "episode_number": number}


def _side_features(split: Split, catalog: Catalog, train_events: list) -> SideFeatures:
    train_context = {
        "country": np.array([e.country for e in train_events], dtype=object),
        "device": np.array([e.device for e in train_events], dtype=object),
        "hour": np.array([(e.event_time_ms // HOUR_MS) % 24 for e in train_events], dtype=np.int64),
    }
    # context at evaluation time: the user's last train event (a user absent from train gets the mode)
    user = {
        "country": np.full(
            split.n_users, collections.Counter(train_context["country"]).most_common(1)[0][0], dtype=object
        ),
        "device": np.full(
            split.n_users, collections.Counter(train_context["device"]).most_common(1)[0][0], dtype=object
        ),
        "hour": np.zeros(split.n_users, dtype=np.int64),
    }
    user_rows = split.train.users
    for r, u in enumerate(user_rows):  # time order: the last write wins
        for key in user:
            user[key][u] = train_context[key][r]
    return SideFeatures(item=item_side_features(split.item_ids, catalog), user=user, train_context=train_context)


def generate_world_split(seed: int, preset: str = "small") -> SyntheticSplit:
    """Generate a world in memory (cliffhanger.synth) and split it."""
    from cliffhanger.synth import generate

    g = generate(seed, preset)
    return build_split(f"synthetic-{preset}-seed{seed}", g.world.catalog, [e.event for e in g.events])
