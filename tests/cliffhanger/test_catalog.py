from __future__ import annotations

import json

import pytest

from cliffhanger.catalog import (
    GENRES,
    Catalog,
    CatalogError,
    Episode,
    Series,
    episode_id_for,
    series_id_for,
    user_id_for,
)

DAY = 86_400_000
T0 = 1_795_132_800_000


def _series(sid: str, n_eps: int, licensing: dict, genres=("romance", "ceo"), strength=0.7) -> Series:
    eps = tuple(Episode(episode_id_for(sid, k), sid, k, 60_000 + k * 1000, T0 - DAY) for k in range(1, n_eps + 1))
    return Series(sid, f"Title {sid}", genres, strength, eps, licensing)


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(
        [
            _series("s0001", 3, {"US": (T0, T0 + 2 * DAY), "BR": (T0 - DAY, None)}),
            _series("s0002", 2, {"US": (T0 + DAY, None)}, genres=("werewolf",), strength=0.1),
        ]
    )


def test_ids_are_zero_padded():
    assert series_id_for(1) == "s0001"
    assert episode_id_for("s0001", 7) == "s0001e007"
    assert user_id_for(42) == "u000042"


def test_lookups(catalog: Catalog):
    assert len(catalog) == 2
    assert catalog.genres("s0002") == ("werewolf",)
    assert catalog.episode("s0001e002").duration_ms == 62_000
    assert catalog.series("s0001").episodes[0].episode_id == "s0001e001"
    assert [e.episode_id for e in catalog.episodes()] == [
        "s0001e001",
        "s0001e002",
        "s0001e003",
        "s0002e001",
        "s0002e002",
    ]
    with pytest.raises(KeyError, match="s9999"):
        catalog.series("s9999")
    with pytest.raises(KeyError, match="s0001e099"):
        catalog.episode("s0001e099")


def test_next_episode(catalog: Catalog):
    assert catalog.next_episode("s0001e001").episode_id == "s0001e002"
    assert catalog.next_episode("s0001e002").episode_number == 3
    assert catalog.next_episode("s0001e003") is None  # last episode: nothing after it
    assert catalog.next_episode("s0002e001").series_id == "s0002"  # never crosses into another series


def test_licensing_windows_are_half_open(catalog: Catalog):
    assert not catalog.is_licensed("s0001", "US", T0 - 1)
    assert catalog.is_licensed("s0001", "US", T0)
    assert catalog.is_licensed("s0001", "US", T0 + 2 * DAY - 1)
    assert not catalog.is_licensed("s0001", "US", T0 + 2 * DAY)  # expired
    assert catalog.is_licensed("s0001", "BR", T0 + 1000 * DAY)  # open-ended window
    assert not catalog.is_licensed("s0001", "IN", T0)  # no licence in this country
    assert not catalog.is_licensed("s0002", "US", T0)  # licence not started yet
    assert catalog.is_licensed("s0002", "US", T0 + DAY)
    assert not catalog.is_licensed("s9999", "US", T0)


def test_save_load_round_trip(catalog: Catalog, tmp_path):
    path = tmp_path / "catalog.json"
    catalog.save(path)
    top = json.loads(path.read_text())
    assert top["catalog_version"] == 1 and len(top["series"]) == 2
    loaded = Catalog.load(path)
    assert loaded.to_dict() == catalog.to_dict()
    assert loaded.series("s0001") == catalog.series("s0001")
    assert loaded.is_licensed("s0001", "BR", T0) and not loaded.is_licensed("s0001", "US", T0 + 3 * DAY)


def test_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "catalog.json"
    path.write_text('{"catalog_version": 1, "series": [')
    with pytest.raises(CatalogError, match=r"catalog\.json: not valid JSON"):
        Catalog.load(path)


def test_bad_field_names_file_and_field(catalog: Catalog, tmp_path):
    obj = catalog.to_dict()
    obj["series"][1]["episodes"][1]["duration_ms"] = -5
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(CatalogError) as err:
        Catalog.load(path)
    assert str(path) in str(err.value)
    assert "series[1].episodes[1].duration_ms" in str(err.value)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda o: o.update(catalog_version=2), "catalog_version"),
        (lambda o: o["series"][0].update(genres=["horror"]), "series[0].genres[0]"),
        (lambda o: o["series"][0].update(cliffhanger_strength=1.5), "series[0].cliffhanger_strength"),
        (lambda o: o["series"][0].pop("title"), "series[0].title"),
        (lambda o: o["series"][0]["licensing"].update(US=[5]), "series[0].licensing.US"),
        (lambda o: o["series"][0]["episodes"][2].update(episode_number=7), "series[0].episodes[2].episode_number"),
        (lambda o: o["series"][1].update(series_id="s0001"), "duplicate series_id"),
    ],
)
def test_validation_names_the_field(catalog: Catalog, mutate, field):
    obj = catalog.to_dict()
    mutate(obj)
    with pytest.raises(CatalogError, match=field.replace("[", r"\[").replace("]", r"\]")):
        Catalog.from_dict(obj)


def test_missing_file_is_a_catalog_error(tmp_path):
    with pytest.raises(CatalogError, match="nope.json"):
        Catalog.load(tmp_path / "nope.json")


def test_genres_are_fixed():
    assert len(GENRES) == len(set(GENRES)) == 8


def test_pickles_for_beam_workers(catalog: Catalog):
    import pickle

    copy = pickle.loads(pickle.dumps(catalog))
    assert copy.to_dict() == catalog.to_dict()
    assert copy.next_episode("s0001e001").episode_id == "s0001e002"
