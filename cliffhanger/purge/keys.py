"""Which surrogate keys (cliffhanger.edge_keys) a change notice or a catalog event invalidates.

Serving tags every answer with the keys it depends on; a change must purge exactly those keys.

    notice user u1                 -> u-<hmac(u1)>
    notice episode e / series s    -> e-<e> / s-<s>
    notice cohort "BR|android"     -> c-BR-android   (id format of transforms.feature_rows: country|device)
    series:drop / series:update    -> s-<series>, plus e-<episode> when the event names one
    licensing:change               -> s-<series> (+ e-<episode>), plus the cohort key of every
                                      device in each listed country (cohort trending lists)
"""

from __future__ import annotations

from cliffhanger import edge_keys
from cliffhanger.catalog_events import LICENSING_CHANGE, CatalogEvent
from cliffhanger.events import DEVICES
from cliffhanger.notices import ChangeNotice, NoticeError


def notice_keys(notice: ChangeNotice, secret: bytes) -> tuple[str, ...]:
    """The surrogate keys a change notice invalidates; NoticeError if its id cannot name a key."""
    if notice.entity == "user":
        return (edge_keys.user_key(notice.id, secret),)
    if notice.entity == "episode":
        return (edge_keys.episode_key(notice.id),)
    if notice.entity == "series":
        return (edge_keys.series_key(notice.id),)
    country, sep, device = notice.id.partition("|")
    if notice.entity == "cohort" and sep and country and device and "|" not in device:
        return (edge_keys.cohort_key(country, device),)
    raise NoticeError(f"id: a {notice.entity} notice id must look like 'BR|android', got {notice.id[:40]!r}")


def catalog_keys(event: CatalogEvent) -> tuple[str, ...]:
    """The surrogate keys a catalog event invalidates, series key first."""
    keys = [edge_keys.series_key(event.series_id)]
    if event.episode_id is not None:
        keys.append(edge_keys.episode_key(event.episode_id))
    if event.type == LICENSING_CHANGE:
        keys += [edge_keys.cohort_key(c, d) for c in event.countries for d in DEVICES]
    return tuple(keys)
