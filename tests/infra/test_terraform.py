"""infra/terraform mirrors cliffhanger/resources.py, wires serving's settings, and holds no secrets.

The HCL is parsed with python-hcl2 (no provider needed). `terraform validate` needs the google
provider, which cannot be downloaded here, so it is not run; `terraform fmt -check` is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cliffhanger import resources
from tests.infra.terraform_hcl import ROOT, TF_DIR, _local, _only, _parsed, _resources  # noqa: F401

# --- the resource declaration, both ways -----------------------------------------------------------


def _subscription_line(s: resources.Subscription) -> str:
    dlq = f'"{s.dead_letter_topic}"' if s.dead_letter_topic else "null"
    attempts = s.max_delivery_attempts if s.dead_letter_topic else "null"
    return (
        f'"{s.name}" = {{ topic = "{s.topic}", dead_letter_topic = {dlq}, '
        f"max_delivery_attempts = {attempts}, ack_deadline_seconds = {s.ack_deadline_s} }}"
    )


def test_topics_are_the_declared_ones():
    got = _local("pubsub_topics")
    declared = [t.name for t in resources.TOPICS]
    assert len(got) == len(set(got)), f"duplicate topics in local.pubsub_topics: {got}"
    missing, extra = sorted(set(declared) - set(got)), sorted(set(got) - set(declared))
    assert not missing and not extra, (
        f"pubsub.tf local.pubsub_topics differs from cliffhanger.resources.TOPICS: add {missing}, remove {extra}"
    )


def test_subscriptions_have_the_declared_settings():
    got = _local("pubsub_subscriptions")
    # Pub/Sub has max_delivery_attempts only inside a dead_letter_policy: without a dead-letter topic
    # there is nothing to carry it (the local stack does the same, see tests/cliffhanger/test_localstack.py).
    expected = {
        s.name: {
            "topic": s.topic,
            "dead_letter_topic": s.dead_letter_topic,
            "max_delivery_attempts": s.max_delivery_attempts if s.dead_letter_topic else None,
            "ack_deadline_seconds": s.ack_deadline_s,
        }
        for s in resources.SUBSCRIPTIONS
    }
    wrong = [_subscription_line(s) for s in resources.SUBSCRIPTIONS if got.get(s.name) != expected[s.name]]
    extra = sorted(set(got) - set(expected))
    assert not wrong and not extra, (
        "pubsub.tf local.pubsub_subscriptions differs from cliffhanger.resources.SUBSCRIPTIONS.\n"
        "Lines to add or correct:\n  " + "\n  ".join(wrong) + f"\nNot declared (remove): {extra}"
    )


def test_dead_letter_topics_and_subscribed_topics_exist():
    topics = set(_local("pubsub_topics"))
    for name, s in _local("pubsub_subscriptions").items():
        assert s["topic"] in topics, f"{name}: topic {s['topic']} is not in local.pubsub_topics"
        if s["dead_letter_topic"] is not None:
            assert s["dead_letter_topic"] in topics, f"{name}: dead-letter topic {s['dead_letter_topic']} missing"
            assert 5 <= s["max_delivery_attempts"] <= 100, f"{name}: Pub/Sub allows 5..100 delivery attempts"
        assert 10 <= s["ack_deadline_seconds"] <= 600, f"{name}: Pub/Sub allows ack deadlines of 10..600 s"


def test_tables_and_families_have_the_declared_gc_rules():
    got = _local("bigtable_tables")
    expected = {
        t.name: {f.name: {"max_versions": f.max_versions, "max_age_days": f.max_age_days} for f in t.families}
        for t in resources.TABLES
    }
    assert got == expected, (
        "bigtable.tf local.bigtable_tables differs from cliffhanger.resources.TABLES\n"
        f"terraform: {got}\nresources: {expected}"
    )


def test_resources_are_driven_by_the_maps_and_nothing_else():
    topic = _only("google_pubsub_topic")
    assert topic["for_each"] == "${toset(local.pubsub_topics)}" and topic["name"] == "${each.key}"

    sub = _only("google_pubsub_subscription")
    assert sub["for_each"] == "${local.pubsub_subscriptions}" and sub["name"] == "${each.key}"
    assert sub["topic"] == "${google_pubsub_topic.topic[each.value.topic].id}"
    assert sub["ack_deadline_seconds"] == "${each.value.ack_deadline_seconds}"
    (dlq,) = [d["dead_letter_policy"] for d in sub["dynamic"] if "dead_letter_policy" in d]
    assert dlq["for_each"] == "${each.value.dead_letter_topic == null ? [] : [each.value]}"
    (content,) = dlq["content"]
    assert content == {
        "dead_letter_topic": "${google_pubsub_topic.topic[dead_letter_policy.value.dead_letter_topic].id}",
        "max_delivery_attempts": "${dead_letter_policy.value.max_delivery_attempts}",
    }
    assert sub["expiration_policy"] == [{"ttl": ""}], "subscriptions must never expire for inactivity"

    table = _only("google_bigtable_table")
    assert table["for_each"] == "${local.bigtable_tables}" and table["name"] == "${each.key}"
    (families,) = [d["column_family"] for d in table["dynamic"] if "column_family" in d]
    assert families["for_each"] == "${each.value}"
    assert families["content"] == [{"family": "${column_family.key}"}]

    gc = _only("google_bigtable_gc_policy")
    assert "local.bigtable_gc_rules" in gc["for_each"]
    assert gc["column_family"] == "${local.bigtable_families[each.key].family}"
    assert "gc_rules" in gc and "max_age" not in gc and "max_version" not in gc


def test_gc_rule_expression_covers_both_limits():
    # The JSON itself is built by Terraform; check the pieces it is built from (days -> hours, union).
    rules = _local("bigtable_gc_rules")
    assert "max_version = f.max_versions" in rules
    assert 'max_age = "${f.max_age_days * 24}h"' in rules
    gc = _only("google_bigtable_gc_policy")["gc_rules"]
    assert '\\"mode\\":\\"union\\"' in gc, "two limits on one family must combine as a union, as the local stack"


def _locals_text(file: str) -> str:
    """The `locals { ... }` block of one .tf file, as text (braces inside strings are balanced here)."""
    text = (TF_DIR / file).read_text()
    start = text.index("locals {")
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0 and text[i] == "}":
            return text[start : i + 1]
    raise AssertionError(f"unbalanced locals block in {file}")


def _expected_gc_rule(family: resources.ColumnFamily) -> dict | None:
    rules = []
    if family.max_versions is not None:
        rules.append({"max_version": family.max_versions})
    if family.max_age_days is not None:
        rules.append({"max_age": f"{family.max_age_days * 24}h"})
    if not rules:
        return None
    return {"rules": rules} if len(rules) == 1 else {"mode": "union", "rules": rules}


def test_gc_rules_evaluated_by_terraform_match_resources(tmp_path: Path):
    """Real Terraform evaluates the locals and the gc_rules expression (no provider needed for that)."""
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("the terraform binary is not on PATH: cannot evaluate the HCL expressions")
    (tmp_path / "main.tf").write_text(_locals_text("bigtable.tf"))
    expression = _only("google_bigtable_gc_policy")["gc_rules"]
    assert expression.startswith("${") and expression.endswith("}")
    per_family = expression[2:-1].replace("each.value", "rules")
    query = (
        "jsonencode({ for key, rules in local.bigtable_gc_rules : "
        f"key => jsondecode({per_family}) if length(rules) > 0 }})\n"
    )
    env = {**os.environ, "TF_CLI_CONFIG_FILE": os.devnull, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}
    init = subprocess.run(
        [terraform, "init", "-input=false", "-no-color"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert init.returncode == 0, init.stdout + init.stderr
    console = subprocess.run(
        [terraform, "console", "-no-color"], cwd=tmp_path, env=env, input=query, capture_output=True, text=True
    )
    assert console.returncode == 0, console.stdout + console.stderr
    got = json.loads(json.loads(console.stdout.strip()))
    expected = {
        f"{t.name}/{f.name}": rule for t in resources.TABLES for f in t.families if (rule := _expected_gc_rule(f))
    }
    assert got == expected


def test_buckets():
    buckets = _resources("google_storage_bucket")
    assert set(buckets) == {"pipeline", "bundles"}
    for name, b in buckets.items():
        assert b["uniform_bucket_level_access"] is True, name
        assert b["public_access_prevention"] == "enforced", name
    assert buckets["bundles"]["versioning"] == [{"enabled": True}]
    (temp_rule,) = buckets["pipeline"]["lifecycle_rule"]
    assert temp_rule["condition"][0]["matches_prefix"] == ["tmp/"]
    assert temp_rule["action"] == [{"type": "Delete"}]


def test_versions_are_pinned():
    (terraform,) = _parsed()["versions.tf"]["terraform"]
    assert terraform["required_version"] == ">= 1.5"
    google = terraform["required_providers"][0]["google"]
    assert google["source"] == "hashicorp/google"
    assert re.fullmatch(r"~> 6\.\d+(\.\d+)?", google["version"]), google["version"]


# --- serving: settings names and secrets -------------------------------------------------------------

# CLIFFHANGER_* names the serving process reads (through serving.settings and cliffhanger.config) that
# have no business on Cloud Run, and why.
_NOT_FOR_CLOUD_RUN = {
    "CLIFFHANGER_BIGTABLE_PORT": "emulator port, local stack only",
    "CLIFFHANGER_PUBSUB_PORT": "emulator port, local stack only",
    "CLIFFHANGER_ALLOWED_LATENESS_S": "pipeline setting in the shared Settings; serving does not use it",
    "CLIFFHANGER_MAX_CLOCK_SKEW_S": "pipeline setting in the shared Settings; serving does not use it",
    "CLIFFHANGER_REPLICA_ID": "one value per process (python -m serving --replicas N sets it per child); "
    "Cloud Run gives every instance the same environment",
}
_SECRETS = {"CLIFFHANGER_EDGE_KEY_SECRET", "CLIFFHANGER_ADMIN_TOKEN"}


def _names_read_by_serving() -> set[str]:
    sources = [ROOT / "serving" / "settings.py", ROOT / "cliffhanger" / "config.py"]
    return {n for p in sources for n in re.findall(r"[\"'](CLIFFHANGER_[A-Z0-9_]+)[\"']", p.read_text())}


def test_serving_env_mirrors_settings_names():
    read = _names_read_by_serving()
    assert "CLIFFHANGER_BUNDLE_ROOT" in read and read >= _SECRETS, "has serving/settings.py moved?"
    wired = set(re.findall(r"CLIFFHANGER_[A-Z0-9_]+", (TF_DIR / "serving.tf").read_text()))
    unwired = sorted(read - wired - set(_NOT_FOR_CLOUD_RUN))
    assert not unwired, (
        f"serving reads {unwired} but serving.tf neither sets them nor lists them in local.serving_tunable_env"
    )
    unknown = sorted(wired - read)
    assert not unknown, f"serving.tf names {unknown}, which serving/settings.py does not read"
    assert not wired & set(_NOT_FOR_CLOUD_RUN)


def test_tunables_exclude_secrets_and_stack_owned_names():
    tunable = set(_local("serving_tunable_env"))
    stack_owned = set(re.findall(r"(CLIFFHANGER_[A-Z0-9_]+)\s*=", _local("serving_env")))
    assert stack_owned == {
        "CLIFFHANGER_PROJECT",
        "CLIFFHANGER_BT_INSTANCE",
        "CLIFFHANGER_BUNDLE_ROOT",
        "CLIFFHANGER_CATALOG",
    }
    assert not tunable & (_SECRETS | stack_owned)


def test_secrets_come_from_secret_manager():
    (service,) = _only("google_cloud_run_v2_service")["template"]
    (container,) = service["containers"]
    plain = list(container.get("env", []))
    plain += [d["env"]["content"][0] for d in container.get("dynamic", []) if "env" in d]
    by_ref = {}
    for env in plain:
        if "value_source" in env:
            ref = env["value_source"][0]["secret_key_ref"][0]
            name = env["name"] if env["name"] != "${env.value}" else "CLIFFHANGER_ADMIN_TOKEN"
            by_ref[name] = ref["secret"]
            assert "value" not in env
    assert by_ref == {
        "CLIFFHANGER_EDGE_KEY_SECRET": "${google_secret_manager_secret.edge_key.secret_id}",
        "CLIFFHANGER_ADMIN_TOKEN": "${google_secret_manager_secret.admin_token.secret_id}",
    }
    assert not _resources("google_secret_manager_secret_version"), "secret values never go through terraform"


# --- hygiene ---------------------------------------------------------------------------------------------

_SECRET_PATTERNS = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),  # Google API key
    re.compile(r"\b(ghp|gho|github_pat|xox[abpr])_?[0-9A-Za-z_]{20,}"),
    # secret-ish attribute = a quoted literal without interpolation
    re.compile(
        r"(?i)\b\w*(secret|token|password|passwd|api_key|apikey|private_key)\w*\s*=\s*\"(?![^\"]*\$\{)[^\"]{6,}\""
    ),
    re.compile(r"\"[A-Za-z0-9+/_\-]{40,}={0,2}\""),  # long high-entropy-looking literal
]


def _secret_looking(text: str) -> list[str]:
    return [m.group(0) for p in _SECRET_PATTERNS for m in p.finditer(text)]


@pytest.mark.parametrize(
    "sample",
    [
        'admin_token = "hunter2hunter2"',
        'api_key = "AIzaSyA1234567890abcdefghijklmnopqrstuv"',
        'value = "ZXhhbXBsZS1zZWNyZXQtdGhhdC1pcy1sb25nLWVub3VnaA=="',
    ],
)
def test_secret_regex_catches_samples(sample: str):
    assert _secret_looking(sample)


def test_no_secret_looking_literals():
    hits = {p.name: found for p in sorted(TF_DIR.glob("*.tf")) if (found := _secret_looking(p.read_text()))}
    assert not hits, f"secret-looking literals in infra/terraform: {hits}"


def test_values_and_state_are_git_ignored():
    ignored = set((TF_DIR / ".gitignore").read_text().split())
    assert {".terraform/", "*.tfstate", "*.tfstate.*", "*.tfvars", "*.tfvars.json"} <= ignored


def test_terraform_fmt():
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("the terraform binary is not on PATH: cannot run `terraform fmt -check`")
    done = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(TF_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, (
        f"terraform fmt -check failed; run `terraform fmt -recursive infra/terraform`\n{done.stdout}"
    )
