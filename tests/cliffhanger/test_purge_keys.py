"""cliffhanger.purge.keys: notices and catalog events -> the exact keys serving tags answers with."""

from __future__ import annotations

import pytest

from cliffhanger import edge_keys
from cliffhanger.catalog_events import LICENSING_CHANGE, SERIES_DROP, SERIES_UPDATE, CatalogEvent
from cliffhanger.events import DEVICES
from cliffhanger.notices import ChangeNotice, NoticeError
from cliffhanger.purge.keys import catalog_keys, notice_keys

SECRET = b"test-secret"


def _notice(entity, id_):
    return ChangeNotice(entity, id_, "completed_episode", 3, 1_795_262_400_000)


def test_notice_keys_use_the_edge_key_functions():
    assert notice_keys(_notice("user", "u000042"), SECRET) == (edge_keys.user_key("u000042", SECRET),)
    assert notice_keys(_notice("episode", "s0001e002"), SECRET) == ("e-s0001e002",)
    assert notice_keys(_notice("series", "s0001"), SECRET) == ("s-s0001",)
    assert notice_keys(_notice("cohort", "BR|android"), SECRET) == ("c-BR-android",)


def test_user_key_is_a_keyed_hash_not_the_id():
    (key,) = notice_keys(_notice("user", "u000042"), SECRET)
    assert "u000042" not in key
    assert key != notice_keys(_notice("user", "u000042"), b"other-secret")[0]


@pytest.mark.parametrize("bad", ["BR", "BR|", "|android", "BR|android|x"])
def test_cohort_notice_id_must_be_country_and_device(bad):
    with pytest.raises(NoticeError, match="^id: "):
        notice_keys(_notice("cohort", bad), SECRET)


def test_catalog_keys():
    t = 1_795_262_400_000
    assert catalog_keys(CatalogEvent(SERIES_DROP, "s0001", t, 1, episode_id="s0001e013")) == ("s-s0001", "e-s0001e013")
    assert catalog_keys(CatalogEvent(SERIES_UPDATE, "s0001", t, 1)) == ("s-s0001",)
    keys = catalog_keys(CatalogEvent(LICENSING_CHANGE, "s0002", t, 1, countries=("BR", "US")))
    assert keys == ("s-s0002", *[f"c-{c}-{d}" for c in ("BR", "US") for d in DEVICES])
