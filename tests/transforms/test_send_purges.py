"""SendPurges against the fake CDN API (a real loopback HTTP server): batch limits, retries, and the
fault case "the endpoint fails 20% of the time -> no purge lost: each applied or dead-lettered, counted"."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from cliffhanger.fakes.cdn import CLOUDFLARE, FASTLY, FakeCdn, FakeCdnConfig
from cliffhanger.purge import targets
from cliffhanger.purge.clients import CLOUDFLARE_TOKEN_ENV, FASTLY_TOKEN_ENV
from cliffhanger.purge.sender import RetryPolicy
from transforms.parse import DEAD_LETTER
from transforms.purge_batches import NAMESPACE, PurgeBatch
from transforms.send_purges import APPLIED, FailedPurge, SendPurges


@pytest.fixture
def cdn(monkeypatch):
    config = FakeCdnConfig(fastly_rate_per_s=1e4, fastly_burst=10**4, cloudflare_rate_per_s=1e4, cloudflare_burst=10**4)
    with FakeCdn(config) as server:
        monkeypatch.setenv(FASTLY_TOKEN_ENV, config.fastly_token)
        monkeypatch.setenv(CLOUDFLARE_TOKEN_ENV, config.cloudflare_token)
        yield server


def _specs(cdn):
    c = cdn.config
    return (
        targets.fastly(c.fastly_service_id, cdn.url, rate_per_s=1e4, burst=10**4),
        targets.TargetSpec(targets.CLOUDFLARE, cdn.url, c.cloudflare_zone_id, 1e4, 10**4, CLOUDFLARE_TOKEN_ENV),
    )


def _counters(result) -> dict[str, int]:
    found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    return {c.key.metric.name: c.committed for c in found}


def _run(batches, specs, policy):
    p = TestPipeline(options=PipelineOptions(runner="BundleBasedDirectRunner"))
    out = p | beam.Create(batches) | SendPurges(specs, policy)
    applied_keys = out[APPLIED] | "AppliedKeys" >> beam.FlatMap(lambda o: [(o.target, k) for k in o.keys])
    dead_keys = out[DEAD_LETTER] | "DeadKeys" >> beam.FlatMap(lambda f: [(f.target, k) for k in f.keys])
    return p, applied_keys, dead_keys


def test_batches_are_split_at_each_vendors_limit(cdn):
    keys = tuple(f"u-{i:04d}" for i in range(300))
    p, applied, dead = _run([PurgeBatch(FASTLY, keys), PurgeBatch(CLOUDFLARE, keys)], _specs(cdn), RetryPolicy())
    assert_that(applied, equal_to([(t, k) for t in (FASTLY, CLOUDFLARE) for k in keys]), label="applied")
    assert_that(dead, equal_to([]), label="dead")
    counters = _counters(p.run())
    assert counters["fastly_requests"] == 2 == counters["fastly_min_requests"]  # 256 + 44
    assert counters["cloudflare_requests"] == 3 == counters["cloudflare_min_requests"]  # 100 x 3
    assert cdn.applied_keys(FASTLY) == cdn.applied_keys(CLOUDFLARE) == set(keys)


def _append_line(key, path):
    with open(path, "a") as f:
        f.write(key + "\n")


def test_endpoint_failing_20_percent_loses_no_purge(cdn, tmp_path):
    """Two attempts per batch, so ~4 % of batches exhaust them: both paths are exercised."""
    cdn.set_fail_rate(0.2)
    batches = [PurgeBatch(FASTLY, (f"u-{i:04d}a", f"u-{i:04d}b")) for i in range(400)]
    everything = {k for b in batches for k in b.keys}
    p, applied, dead = _run(batches, _specs(cdn)[:1], RetryPolicy(max_attempts=2, base_backoff_s=0.001))
    dead_file = tmp_path / "dead.txt"
    _ = dead | beam.Map(lambda tk, path: _append_line(tk[1], path), str(dead_file))
    result = p.run()
    result.wait_until_finish()
    counters = _counters(result)
    on_server = cdn.applied_keys(FASTLY)
    dead_lettered = counters["fastly_keys_dead_lettered"]
    assert counters["fastly_keys_applied"] + dead_lettered == len(everything)  # counted
    assert counters["fastly_keys_applied"] == len(on_server)
    assert 0 < dead_lettered < 0.15 * len(everything)
    assert counters["fastly_requests"] == cdn.requests(FASTLY)  # every request counted, retries included
    assert counters["fastly_retries"] == cdn.requests(FASTLY) - len(batches)
    dead_keys = dead_file.read_text().split()
    assert len(dead_keys) == dead_lettered == len(set(dead_keys))
    assert set(dead_keys) | on_server == everything and not set(dead_keys) & on_server  # each exactly once


def test_failed_purges_carry_target_keys_reason_and_attempts(cdn):
    cdn.fail_next(3, status=503)
    with TestPipeline(options=PipelineOptions(runner="BundleBasedDirectRunner")) as p:
        out = (
            p
            | beam.Create([PurgeBatch(FASTLY, ("s-1",))])
            | SendPurges(_specs(cdn)[:1], RetryPolicy(max_attempts=3, base_backoff_s=0.001))
        )
        assert_that(
            out[DEAD_LETTER] | beam.Map(lambda f: (f.target, f.keys, f.attempts, f.status, "503" in f.reason)),
            equal_to([(FASTLY, ("s-1",), 3, 503, True)]),
        )


def test_a_batch_for_an_unconfigured_target_is_dead_lettered_not_dropped(cdn):
    with TestPipeline(options=PipelineOptions(runner="BundleBasedDirectRunner")) as p:
        out = p | beam.Create([PurgeBatch("akamai", ("s-1",))]) | SendPurges(_specs(cdn)[:1], RetryPolicy())
        assert_that(out[DEAD_LETTER] | beam.Map(lambda f: (f.target, f.keys)), equal_to([("akamai", ("s-1",))]))


def test_failed_purge_pubsub_message_round_trips():
    failed = FailedPurge(FASTLY, ("s-1", "u-2"), "Fastly purge answered 503: busy", 6, 503)
    message = failed.to_pubsub()
    assert FailedPurge.from_json(message.data) == failed
    assert message.attributes == {
        "stage": "purge",
        "target": FASTLY,
        "reason": failed.reason,
        "attempts": "6",
        "keys": "2",
    }
