"""The ONE declaration of the cloud resources the suite uses: topics, subscriptions, tables, families.

The local stack (`cliffhanger.localstack`) creates exactly these on the emulators, idempotently, and
`infra/terraform/` declares the same names for the cloud (a test parses the HCL and compares it with
this module, so the two cannot drift).

Bigtable layout (one table, so serving reads a user, their candidates and the candidates' item
features in ONE `read_rows` call):

    table `features`
      row key                          families written
      u#<salt>#<user_id>               u (aggregates), cw (continue watching), done (completed), cand
      e#<salt>#<episode_id>            i (episode counters over 5 min / 1 h / 24 h, trending)
      s#<salt>#<series_id>             i (series counters)
      c#<country>#<device>             i (cohort trending series)
      g#<segment>                      cand (segment candidate lists for new users)

    <salt> is 4 hex chars of a hash of the id (`transforms.rowkeys`). Ids from the client are often
    sequential or share prefixes (u000001, u000002, ...); unsalted, a burst of writes for new users
    lands on one tablet. The salt spreads them; we never scan ranges of users, only point reads, so
    losing ordered scans costs nothing. Cohort rows (country x device) are few and hot by design:
    the pipeline writes each at most once per bundle, which keeps them far under a row's write limit.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Topic:
    name: str
    purpose: str


@dataclasses.dataclass(frozen=True)
class Subscription:
    name: str
    topic: str
    dead_letter_topic: str | None = None
    max_delivery_attempts: int = 5
    ack_deadline_s: int = 60


@dataclasses.dataclass(frozen=True)
class ColumnFamily:
    name: str
    max_versions: int | None = None
    max_age_days: int | None = None
    purpose: str = ""


@dataclasses.dataclass(frozen=True)
class Table:
    name: str
    families: tuple[ColumnFamily, ...]


EVENTS_TOPIC = "events"
EVENTS_DEAD_LETTER_TOPIC = "events-dead-letter"
FEATURE_CHANGES_TOPIC = "feature-changes"
CATALOG_TOPIC = "catalog"
RETRAIN_TOPIC = "retrain"
PURGE_DEAD_LETTER_TOPIC = "purge-dead-letter"
CANDIDATE_CHANGES_TOPIC = "candidate-changes"
CANDIDATES_DEAD_LETTER_TOPIC = "candidates-dead-letter"
ITEM_CHANGES_TOPIC = "item-changes"

EVENTS_SUBSCRIPTION = "events-features"
EVENTS_DEAD_LETTER_SUBSCRIPTION = "events-dead-letter-inspect"
FEATURE_CHANGES_SUBSCRIPTION = "feature-changes-invalidation"
CATALOG_SUBSCRIPTION = "catalog-invalidation"
RETRAIN_SUBSCRIPTION = "retrain-trainer"
PURGE_DEAD_LETTER_SUBSCRIPTION = "purge-dead-letter-inspect"
FEATURE_CHANGES_CANDIDATES_SUBSCRIPTION = "feature-changes-candidates"
CANDIDATE_CHANGES_SUBSCRIPTION = "candidate-changes-invalidation"
CANDIDATES_DEAD_LETTER_SUBSCRIPTION = "candidates-dead-letter-inspect"
# Serving applies catalog events (episode drops) to its in-process catalog copy. One subscription is
# shared by the replicas of one deployment only when there is one replica: Pub/Sub load-balances a
# subscription's messages, so with N replicas each needs its own (see serving/catalog_feed.py).
CATALOG_SERVING_SUBSCRIPTION = "catalog-serving"
# Serving's edge replicas apply episode notices (serving/notice_feed.py); one subscription per replica,
# as for catalog-serving.
ITEM_CHANGES_SERVING_SUBSCRIPTION = "item-changes-serving"
# The candidates job finds the viewers waiting for a dropped episode (transforms/candidates_drop.py).
CATALOG_CANDIDATES_SUBSCRIPTION = "catalog-candidates"
# pipelines/prewarm.py reads every playback event too (its own subscription: Pub/Sub load-balances one),
# to warm the next episode of what each viewer just started into the edge.
EVENTS_PREWARM_SUBSCRIPTION = "events-prewarm"

FEATURES_TABLE = "features"

TOPICS: tuple[Topic, ...] = (
    Topic(EVENTS_TOPIC, "client playback events, JSON, schema in cliffhanger.events"),
    Topic(EVENTS_DEAD_LETTER_TOPIC, "malformed or too-late events with attributes reason and stage"),
    Topic(FEATURE_CHANGES_TOPIC, "notices from the features pipeline that an entity changed"),
    Topic(CATALOG_TOPIC, "catalog events: episode drops, series updates, licensing changes"),
    Topic(RETRAIN_TOPIC, "requests to run the batch training pipeline"),
    Topic(PURGE_DEAD_LETTER_TOPIC, "edge purges that kept failing"),
    Topic(CANDIDATE_CHANGES_TOPIC, "notices from the candidates pipeline that a user's candidate list was rewritten"),
    Topic(
        CANDIDATES_DEAD_LETTER_TOPIC,
        "change notices and catalog events the candidates pipeline could not parse, with the reason",
    ),
    Topic(ITEM_CHANGES_TOPIC, "episode notices from the features pipeline for serving's edge replicas"),
)

SUBSCRIPTIONS: tuple[Subscription, ...] = (
    Subscription(EVENTS_SUBSCRIPTION, EVENTS_TOPIC, dead_letter_topic=EVENTS_DEAD_LETTER_TOPIC),
    Subscription(EVENTS_DEAD_LETTER_SUBSCRIPTION, EVENTS_DEAD_LETTER_TOPIC),
    Subscription(FEATURE_CHANGES_SUBSCRIPTION, FEATURE_CHANGES_TOPIC),
    Subscription(CATALOG_SUBSCRIPTION, CATALOG_TOPIC),
    Subscription(RETRAIN_SUBSCRIPTION, RETRAIN_TOPIC),
    Subscription(PURGE_DEAD_LETTER_SUBSCRIPTION, PURGE_DEAD_LETTER_TOPIC),
    Subscription(FEATURE_CHANGES_CANDIDATES_SUBSCRIPTION, FEATURE_CHANGES_TOPIC),
    Subscription(CANDIDATE_CHANGES_SUBSCRIPTION, CANDIDATE_CHANGES_TOPIC),
    Subscription(CANDIDATES_DEAD_LETTER_SUBSCRIPTION, CANDIDATES_DEAD_LETTER_TOPIC),
    Subscription(CATALOG_SERVING_SUBSCRIPTION, CATALOG_TOPIC),
    Subscription(ITEM_CHANGES_SERVING_SUBSCRIPTION, ITEM_CHANGES_TOPIC),
    Subscription(CATALOG_CANDIDATES_SUBSCRIPTION, CATALOG_TOPIC),
    Subscription(EVENTS_PREWARM_SUBSCRIPTION, EVENTS_TOPIC),
)

TABLES: tuple[Table, ...] = (
    Table(
        FEATURES_TABLE,
        (
            ColumnFamily("u", max_versions=1, purpose="per-user aggregates, one column per feature"),
            ColumnFamily("cw", max_versions=1, purpose="continue watching: one column per series"),
            ColumnFamily("done", max_age_days=90, purpose="completed episodes: one column per episode"),
            ColumnFamily("i", max_versions=1, purpose="episode / series / cohort counters"),
            ColumnFamily("cand", max_versions=1, purpose="precomputed candidate lists"),
        ),
    ),
)


def table(name: str) -> Table:
    for t in TABLES:
        if t.name == name:
            return t
    raise KeyError(f"no table named {name!r} in cliffhanger.resources.TABLES")


def subscription(name: str) -> Subscription:
    for s in SUBSCRIPTIONS:
        if s.name == name:
            return s
    raise KeyError(f"no subscription named {name!r} in cliffhanger.resources.SUBSCRIPTIONS")
