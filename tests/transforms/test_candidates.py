"""transforms/candidates.py and transforms/candidate_lists.py: parsing, per-user coalescing, list helpers."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from cliffhanger.notices import ChangeNotice
from tests.factories import CATALOG, T0, catalog
from transforms import candidate_lists
from transforms.candidates import NOTICES, CoalesceNotices, ParseNotices
from transforms.parse import DEAD_LETTER, RawEvent


def n(user: str, version: int, t: int = T0, reason: str = "completed_episode") -> ChangeNotice:
    return ChangeNotice("user", user, reason, version, t, "US", "ios")


def test_coalesce_keeps_the_newest_version_per_user():
    got = candidate_lists.coalesce([n("u1", 3), n("u2", 1), n("u1", 7), n("u1", 5), n("u2", 1, T0 + 1)])
    assert got == [n("u1", 7), n("u2", 1, T0 + 1)]  # version first, then event time; users in first-seen order
    assert candidate_lists.coalesce([]) == []
    assert candidate_lists.coalesce(got) == got  # idempotent


def test_query_context_takes_cohort_from_the_notice_and_hour_from_event_time():
    ctx = candidate_lists.query_context(n("u1", 1, t=T0 + 3 * 3_600_000), {"recent_completed": ["s0001e001"]})
    assert (ctx.user_id, ctx.country, ctx.device, ctx.hour) == ("u1", "US", "ios", 15)  # T0 is 12:00 UTC
    old = ChangeNotice("user", "u1", "new_session", 1, T0)  # an older producer: no cohort -> '' (OOV)
    assert candidate_lists.query_context(old, None).country == ""


def test_refreshed_notice_keeps_version_and_time():
    r = candidate_lists.refreshed_notice(n("u1", 9))
    assert (r.entity, r.id, r.reason, r.version, r.event_time_ms) == ("user", "u1", "candidates_refreshed", 9, T0)


def test_parse_routes_malformed_notices_to_dead_letter_and_skips_other_entities():
    raws = [
        RawEvent(n("u1", 1).to_json(), 5),
        RawEvent(b"not json", 6),
        RawEvent(b'{"entity": "user", "id": "u2", "reason": "x", "version": "1", "event_time_ms": 1}', 7),
        RawEvent(ChangeNotice("episode", "s0001e001", "trending", 1, T0).to_json(), 8),
    ]
    with TestPipeline() as p:
        out = p | beam.Create(raws) | ParseNotices()
        assert_that(out[NOTICES], equal_to([n("u1", 1)]), label="notices")
        assert_that(
            out[DEAD_LETTER] | beam.Map(lambda d: (d.payload, d.field, d.stage, d.reason.split(":")[0])),
            equal_to([(b"not json", "", "parse", "notice"), (raws[2].payload, "version", "parse", "notice")]),
            label="dead",
        )


def test_coalesce_transform_emits_one_notice_per_user_per_batch():
    notices = [n("u1", 1), n("u1", 4), n("u2", 2), n("u1", 3), n("u3", 1), n("u2", 2)]

    def unique_users(batch):
        assert len({x.id for x in batch}) == len(batch), batch
        return list(batch)

    with TestPipeline() as p:
        batches = p | beam.Create(notices) | CoalesceNotices()
        latest = (
            batches
            | beam.FlatMap(unique_users)
            | beam.Map(lambda x: (x.id, x))
            | beam.GroupByKey()
            | beam.MapTuple(lambda _, xs: candidate_lists.coalesce(xs)[0])
        )
        assert_that(latest, equal_to([n("u1", 4), n("u2", 2), n("u3", 1)]))


def test_licensing_filter_and_popularity_with_padding():
    cat = catalog()
    assert candidate_lists.licensed_episodes(cat, "FR", T0) == frozenset()
    allowed = candidate_lists.licensed_episodes(cat, None, T0)
    assert len(allowed) == sum(len(s["episodes"]) for s in CATALOG["series"])
    rows = {"s0001e002": {"plays_24h": 5, "trending": 1.0}, "s0002e003": {"plays_24h": 5, "trending": 2.0}}
    rows["s0001e001"] = {"plays_24h": 0}
    pop = candidate_lists.popularity(rows, allowed, 10)
    assert pop == [("s0002e003", 5.0), ("s0001e002", 5.0)]  # ties by trending; no plays -> left out
    pad = candidate_lists.first_episodes(cat, allowed, [e for e, _ in pop], 5)
    assert pad == [("s0001e001", 0.0), ("s0002e001", 0.0)]
    assert candidate_lists.filter_items([("x", 1.0), ("s0001e001", 0.5)], allowed, 1) == [("s0001e001", 0.5)]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Target:
    def open_table(self):
        return object()


def test_bundle_hot_swap_is_throttled_and_a_bad_version_is_refused(tmp_path, monkeypatch):
    from transforms import candidates as mod

    loads = []

    def fake_load(self, version):
        loads.append(version)
        if version == "bad":
            raise RuntimeError("corrupt")
        self.current = (version, f"encoder-{version}", f"index-{version}")

    monkeypatch.setattr(mod._Models, "load", fake_load)
    (tmp_path / "CURRENT").write_text("v1\n")
    clock = _Clock()
    fn = mod._RefreshCandidatesFn(str(tmp_path), _Target(), top_n=5, reload_check_s=10, clock=clock)
    fn.setup()
    fn.setup()  # the DirectRunner calls setup() per bundle: the process-wide models load once
    assert loads == ["v1"]
    (tmp_path / "CURRENT").write_text("v2\n")
    clock.now = 5.0
    fn.start_bundle()
    assert fn._models.version == "v1"  # not looked at before reload_check_s
    clock.now = 11.0
    fn.start_bundle()
    assert fn._models.version == "v2" and loads == ["v1", "v2"]
    (tmp_path / "CURRENT").write_text("bad\n")
    clock.now = 30.0
    fn.start_bundle()
    clock.now = 50.0
    fn.start_bundle()
    assert fn._models.version == "v2" and loads == ["v1", "v2", "bad"]  # refused once, not retried
