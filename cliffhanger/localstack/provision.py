"""Create the declared topics, subscriptions, tables and families on the emulators, idempotently.

The declaration is `cliffhanger.resources`; nothing here names a resource. Running `provision_*`
twice changes nothing the second time; a family whose GC rule drifted is updated, a missing one
added. The emulators only: the cloud gets the same names from infra/terraform.
"""

from __future__ import annotations

import contextlib
import datetime

from google.api_core import exceptions as gexc

from cliffhanger import resources
from cliffhanger.localstack.clients import bigtable_admin, open_channel, pubsub_publisher, pubsub_subscriber
from cliffhanger.localstack.process import LocalStackError

RPC_TIMEOUT_S = 10.0


def validate(
    topics: tuple[resources.Topic, ...] = resources.TOPICS,
    subscriptions: tuple[resources.Subscription, ...] = resources.SUBSCRIPTIONS,
) -> None:
    """Fail early if a subscription names a topic (or dead-letter topic) that is not declared."""
    names = {t.name for t in topics}
    for s in subscriptions:
        for topic in (s.topic, s.dead_letter_topic):
            if topic is not None and topic not in names:
                raise LocalStackError(
                    f"cliffhanger.resources: subscription {s.name!r} refers to undeclared topic {topic!r}"
                )


def gc_rule(family: resources.ColumnFamily):
    """The admin-API GcRule for a declared family (both limits set: a cell goes when either says so)."""
    from google.cloud.bigtable_admin_v2 import types

    rules = []
    if family.max_versions is not None:
        rules.append(types.GcRule(max_num_versions=family.max_versions))
    if family.max_age_days is not None:
        rules.append(types.GcRule(max_age=datetime.timedelta(days=family.max_age_days)))
    if not rules:
        return types.GcRule()
    if len(rules) == 1:
        return rules[0]
    return types.GcRule(union=types.GcRule.Union(rules=rules))


def provision_bigtable(
    port: int, project: str, instance: str, tables: tuple[resources.Table, ...] = resources.TABLES
) -> None:
    """Create every declared table and column family (with its GC rule) that is missing or differs.

    The emulator does not implement the instance admin API: any instance id exists implicitly, so
    no instance is created here (terraform creates the real one).
    """
    from google.cloud.bigtable_admin_v2 import types

    parent = f"projects/{project}/instances/{instance}"
    with open_channel(port) as channel:
        admin = bigtable_admin(channel)
        for table in tables:
            name = f"{parent}/tables/{table.name}"
            wanted = {f.name: gc_rule(f) for f in table.families}
            try:
                existing = admin.get_table(
                    request={"name": name, "view": types.Table.View.SCHEMA_VIEW}, timeout=RPC_TIMEOUT_S
                ).column_families
            except gexc.NotFound:
                try:
                    admin.create_table(
                        parent=parent,
                        table_id=table.name,
                        table=types.Table(
                            column_families={n: types.ColumnFamily(gc_rule=r) for n, r in wanted.items()}
                        ),
                        timeout=RPC_TIMEOUT_S,
                    )
                    continue
                except gexc.AlreadyExists:  # created concurrently: fall through to the family check
                    existing = admin.get_table(
                        name=name, view=types.Table.View.SCHEMA_VIEW, timeout=RPC_TIMEOUT_S
                    ).column_families
            mods = []
            for fam, rule in wanted.items():
                if fam not in existing:
                    mods.append(types.ModifyColumnFamiliesRequest.Modification(id=fam, create={"gc_rule": rule}))
                elif existing[fam].gc_rule != rule:
                    mods.append(types.ModifyColumnFamiliesRequest.Modification(id=fam, update={"gc_rule": rule}))
            if mods:
                admin.modify_column_families(name=name, modifications=mods, timeout=RPC_TIMEOUT_S)


def reset_bigtable(
    port: int, project: str, instance: str, tables: tuple[resources.Table, ...] = resources.TABLES
) -> None:
    """Drop every row of every declared table; the schema stays."""
    with open_channel(port) as channel:
        admin = bigtable_admin(channel)
        for table in tables:
            admin.drop_row_range(
                request={
                    "name": f"projects/{project}/instances/{instance}/tables/{table.name}",
                    "delete_all_data_from_table": True,
                },
                timeout=RPC_TIMEOUT_S,
            )


def provision_pubsub(
    port: int,
    project: str,
    topics: tuple[resources.Topic, ...] = resources.TOPICS,
    subscriptions: tuple[resources.Subscription, ...] = resources.SUBSCRIPTIONS,
) -> None:
    """Create every declared topic, then every subscription with its ack deadline and dead-letter policy.

    The Pub/Sub emulator (0.8.x, checked here) honours dead_letter_policy: after max_delivery_attempts
    nacks the message is republished to the dead-letter topic with CloudPubSubDeadLetter* attributes,
    so the policy is set on the emulator exactly as in the cloud. (The cloud also needs IAM grants for
    the Pub/Sub service agent; the emulator has no IAM, so none are made here.) A subscription whose
    topic changed is deleted and recreated (emulator data is disposable); other drift is updated.
    """
    from google.pubsub_v1 import types

    validate(topics, subscriptions)
    with open_channel(port) as channel:
        publisher = pubsub_publisher(channel)
        subscriber = pubsub_subscriber(channel)
        for t in topics:
            with contextlib.suppress(gexc.AlreadyExists):  # idempotent: already provisioned
                publisher.create_topic(name=f"projects/{project}/topics/{t.name}", timeout=RPC_TIMEOUT_S)
        for s in subscriptions:
            wanted = types.Subscription(
                name=f"projects/{project}/subscriptions/{s.name}",
                topic=f"projects/{project}/topics/{s.topic}",
                ack_deadline_seconds=s.ack_deadline_s,
                dead_letter_policy=(
                    types.DeadLetterPolicy(
                        dead_letter_topic=f"projects/{project}/topics/{s.dead_letter_topic}",
                        max_delivery_attempts=s.max_delivery_attempts,
                    )
                    if s.dead_letter_topic
                    else None
                ),
            )
            try:
                current = subscriber.get_subscription(subscription=wanted.name, timeout=RPC_TIMEOUT_S)
            except gexc.NotFound:
                current = None
            if current is not None and current.topic != wanted.topic:
                subscriber.delete_subscription(subscription=wanted.name, timeout=RPC_TIMEOUT_S)
                current = None
            if current is None:
                with contextlib.suppress(gexc.AlreadyExists):  # created concurrently by another provisioner
                    subscriber.create_subscription(request=wanted, timeout=RPC_TIMEOUT_S)
                continue
            drift = [
                f for f in ("ack_deadline_seconds", "dead_letter_policy") if getattr(current, f) != getattr(wanted, f)
            ]
            if drift:
                subscriber.update_subscription(
                    request={"subscription": wanted, "update_mask": {"paths": drift}}, timeout=RPC_TIMEOUT_S
                )
