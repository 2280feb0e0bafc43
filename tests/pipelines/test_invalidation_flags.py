"""pipelines/invalidation flags: purge targets are validated before anything starts (no emulators)."""

from __future__ import annotations

import pytest

from cliffhanger.purge import targets
from pipelines import invalidation


def _specs(*argv: str):
    parser = invalidation._parser()
    known, _ = parser.parse_known_args(list(argv))
    return invalidation.target_specs(known, parser)


def test_default_is_local_varnish():
    (spec,) = _specs("--varnish_url", "http://127.0.0.1:6081")
    assert spec == targets.varnish("http://127.0.0.1:6081")


def test_all_three_targets_with_the_cloudflare_plan_pacing():
    specs = _specs(
        "--targets", "varnish,fastly,cloudflare", "--fastly_service_id", "svc",
        "--cloudflare_zone_id", "zone", "--cloudflare_plan", "enterprise",
    )  # fmt: skip
    assert [s.name for s in specs] == ["varnish", "fastly", "cloudflare"]
    assert (specs[2].rate_per_s, specs[2].burst) == (40.0, 400)  # 80 % of 50/s, bucket 500
    assert specs[1].token_env == "FASTLY_API_TOKEN" and "token" not in repr(specs[1]).replace("token_env", "")


@pytest.mark.parametrize(
    "argv",
    [
        ("--targets", "akamai"),
        ("--targets", "fastly"),  # no service id
        ("--targets", "cloudflare"),  # no zone id
        ("--targets", "varnish,varnish"),
        ("--targets", ""),
    ],
)
def test_bad_targets_are_parser_errors(argv):
    with pytest.raises(SystemExit) as info:
        _specs(*argv)
    assert info.value.code == 2


def test_run_rejects_a_fractional_or_zero_window():
    with pytest.raises(SystemExit):
        invalidation.run(["--batch_window_s", "0"])
