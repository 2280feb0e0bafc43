"""infra/terraform IAM: the Pub/Sub service agent can dead-letter, the jobs' and serving's grants name
declared resources and cover what the code reads and writes, and nothing broad is granted."""

from __future__ import annotations

import re

import pytest

from cliffhanger import resources
from tests.infra.terraform_hcl import ROOT, TF_DIR, _local, _resources


def test_pubsub_service_agent_can_dead_letter():
    agent = _local("pubsub_service_agent")
    assert agent == "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
    publisher = _resources("google_pubsub_topic_iam_member")["dead_letter_publisher"]
    assert publisher["role"] == "roles/pubsub.publisher" and publisher["member"] == "${local.pubsub_service_agent}"
    assert (
        "s.dead_letter_topic" in publisher["for_each"] and "local.dead_lettered_subscriptions" in publisher["for_each"]
    )
    subscriber = _resources("google_pubsub_subscription_iam_member")["dead_letter_source_subscriber"]
    assert subscriber["role"] == "roles/pubsub.subscriber"
    assert subscriber["member"] == "${local.pubsub_service_agent}"
    assert subscriber["for_each"] == "${local.dead_lettered_subscriptions}"


_JOB_MODULES = {
    "streaming_features": "streaming_features.py",
    "candidates": "candidates.py",
    "invalidation": "invalidation.py",
    "prewarm": "prewarm.py",
}


@pytest.mark.parametrize("job", sorted(_JOB_MODULES))
def test_dataflow_grants_cover_each_jobs_flag_defaults(job: str):
    source = ROOT / "pipelines" / _JOB_MODULES[job]
    if not source.exists():
        pytest.skip(f"pipelines/{_JOB_MODULES[job]} is not in this checkout: nothing to compare")
    grants = _local("dataflow_jobs")[job]
    subscriptions = {s.name for s in resources.SUBSCRIPTIONS}
    topics = {t.name for t in resources.TOPICS}
    defaults = {getattr(resources, c) for c in re.findall(r"default=resources\.([A-Z_]+)", source.read_text())}
    assert defaults, f"no default=resources.X flags found in {source.name}: has the flag style changed?"
    assert defaults & subscriptions <= set(grants["subscriptions"]), f"{job}: subscriber grants miss a read"
    assert defaults & topics <= set(grants["topics"]), f"{job}: publisher grants miss a topic the job writes"


def test_granted_pubsub_names_are_declared():
    subscriptions = {s.name for s in resources.SUBSCRIPTIONS}
    topics = {t.name for t in resources.TOPICS}
    for job, grants in _local("dataflow_jobs").items():
        assert set(grants["subscriptions"]) <= subscriptions, f"{job}: undeclared subscription"
        assert set(grants["topics"]) <= topics, f"{job}: undeclared topic"
    assert set(_local("serving_subscriptions")) <= subscriptions


_SERVING_REPLICA_ROLE = "${google_project_iam_custom_role.serving_replica_subscriptions.id}"


def test_no_broad_roles():
    for kind in ("google_project_iam_member", "google_project_iam_binding", "google_project_iam_policy"):
        for name, body in _resources(kind).items():
            assert body.get("role") in ("roles/dataflow.worker", _SERVING_REPLICA_ROLE), (
                f"{kind}.{name}: only roles/dataflow.worker and serving's replica-subscription role are granted "
                f"project-wide; grant {body.get('role')} on the resource (topic, subscription, instance, bucket, secret)"
            )
    text = "\n".join(p.read_text() for p in TF_DIR.glob("*.tf"))
    assert not re.search(r"roles/(owner|editor|pubsub\.admin|pubsub\.editor|bigtable\.admin|storage\.admin)\b", text)


def test_serving_replicas_can_create_and_pull_only_their_own_subscriptions():
    """A replica (CLIFFHANGER_REPLICA_ID) creates `<declared>-<id>` on the declared topic and pulls it
    (serving/settings.py, serving/pubsub_pull.py): create + consume on the project, conditioned on the
    serving subscriptions' name prefixes, and attachSubscription (roles/pubsub.subscriber) on the topics."""
    from serving.settings import FEED_SUBSCRIPTIONS

    declared = {declared for _, declared in FEED_SUBSCRIPTIONS.values()}
    assert set(_local("serving_subscriptions")) == declared
    role = _resources("google_project_iam_custom_role")["serving_replica_subscriptions"]
    assert sorted(role["permissions"]) == ["pubsub.subscriptions.consume", "pubsub.subscriptions.create"]
    grant = _resources("google_project_iam_member")["serving_replica_subscriptions"]
    assert grant["role"] == _SERVING_REPLICA_ROLE
    assert grant["member"] == "${google_service_account.serving.member}"
    (condition,) = grant["condition"]
    assert "resource.name.startsWith" in condition["expression"]
    assert "local.serving_replica_subscription_prefixes" in condition["expression"]
    prefixes = _local("serving_replica_subscription_prefixes")
    assert (
        "${name}-" in prefixes and "local.serving_subscriptions" in prefixes
    )  # `<declared>-` per serving subscription
    attach = _resources("google_pubsub_topic_iam_member")["serving_attach"]
    assert (attach["role"], attach["for_each"]) == ("roles/pubsub.subscriber", "${local.serving_subscription_topics}")
    topics = _local("serving_subscription_topics")
    assert "local.pubsub_subscriptions[name].topic" in topics and "local.serving_subscriptions" in topics
