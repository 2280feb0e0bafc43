"""The synthetic world: a catalog, users with latent tastes, and the ground truth that produced them.

Everything is drawn from one numpy Generator seeded with `seed`, so a seed names a world exactly.

True affinity of user u for series s (kept in `Truth`, written to `truth.json`)::

    match[u, s]    = mean over the series' genres g of taste[u, g]         (taste ~ Dirichlet, sums to 1)
    affinity[u, s] = sigmoid(AFFINITY_SLOPE * ln(len(GENRES) * match[u, s] + 0.05) + noise[u, s])

`len(GENRES) * match` is 1 for a genre the user likes as much as a uniform user would, so an average
series sits near 0.5; noise ~ Normal(0, AFFINITY_NOISE_SD) is the per-(user, series) idiosyncrasy.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from cliffhanger.catalog import GENRES, Catalog, Episode, Series, episode_id_for, series_id_for, user_id_for
from cliffhanger.events import DEVICES

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
DEFAULT_START_MS = 1_795_132_800_000  # 2026-11-20T00:00:00Z: a fixed epoch keeps worlds reproducible
DEFAULT_COUNTRIES = ("US", "BR", "IN", "ID", "PH", "MX")
_COUNTRY_WEIGHTS = {"US": 0.25, "BR": 0.15, "IN": 0.2, "ID": 0.15, "PH": 0.1, "MX": 0.15}
_DEVICE_WEIGHTS = {"ios": 0.35, "android": 0.5, "web": 0.1, "tv": 0.05}
_GENRE_WEIGHTS = np.array([0.22, 0.16, 0.16, 0.1, 0.1, 0.09, 0.09, 0.08])  # romance is the biggest shelf
APP_VERSIONS = ("5.2.1", "5.2.0", "5.1.3")
AFFINITY_SLOPE = 1.6
AFFINITY_NOISE_SD = 0.6
TASTE_ALPHA = 0.4  # Dirichlet concentration: < 1 gives peaked tastes (most users love one or two genres)

_ADJ = ("Secret", "Billionaire's", "Forbidden", "Runaway", "Contract", "Midnight", "Hidden", "Fake", "Lost", "Cursed")
_NOUN = ("Bride", "Heiress", "Alpha", "Revenge", "Marriage", "Twin", "Heir", "Queen", "Promise", "Bodyguard")


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    user_id: str
    country: str
    device: str
    app_version: str
    binge_propensity: float  # 0..1: raises the chance of playing the next episode
    churn_prob: float  # chance per active day of leaving for good
    return_prob: float  # chance of coming back on a given day


@dataclasses.dataclass(frozen=True, eq=False)
class Truth:
    """Ground truth: true tastes and affinities, aligned with `user_ids` x `series_ids`.

    taste: [n_users, len(GENRES)], rows sum to 1.
    affinity: [n_users, n_series], in (0, 1).
    popularity: [n_series], sums to 1 (the feed's base rate of showing a series).
    """

    user_ids: tuple[str, ...]
    series_ids: tuple[str, ...]
    taste: np.ndarray
    affinity: np.ndarray
    popularity: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "_u", {u: i for i, u in enumerate(self.user_ids)})
        object.__setattr__(self, "_s", {s: i for i, s in enumerate(self.series_ids)})

    def user_index(self, user_id: str) -> int:
        return self._u[user_id]

    def series_index(self, series_id: str) -> int:
        return self._s[series_id]

    def true_affinity(self, user_id: str, series_id: str) -> float:
        return float(self.affinity[self._u[user_id], self._s[series_id]])

    def true_taste(self, user_id: str) -> dict[str, float]:
        return dict(zip(GENRES, self.taste[self._u[user_id]].tolist(), strict=True))

    def top_series(self, user_id: str, k: int = 10) -> list[str]:
        """The k series this user truly likes best (ideal recommendations, ignoring licensing)."""
        row = self.affinity[self._u[user_id]]
        order = np.argsort(-row, kind="stable")[:k]
        return [self.series_ids[i] for i in order]

    def to_dict(self) -> dict:
        return {
            "truth_version": 1,
            "genres": list(GENRES),
            "affinity_formula": (
                f"sigmoid({AFFINITY_SLOPE} * ln({len(GENRES)} * mean(taste[series genres]) + 0.05)"
                f" + Normal(0, {AFFINITY_NOISE_SD}))"
            ),
            "user_ids": list(self.user_ids),
            "series_ids": list(self.series_ids),
            "popularity": np.round(self.popularity, 6).tolist(),
            "taste": np.round(self.taste, 5).tolist(),
            "affinity": np.round(self.affinity, 4).tolist(),
        }

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, separators=(",", ":"))
            f.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Truth:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
        if obj.get("genres") != list(GENRES):
            raise ValueError(f"{os.fspath(path)}: genres {obj.get('genres')} differ from catalog.GENRES")
        return cls(
            user_ids=tuple(obj["user_ids"]),
            series_ids=tuple(obj["series_ids"]),
            taste=np.asarray(obj["taste"], dtype=np.float64),
            affinity=np.asarray(obj["affinity"], dtype=np.float64),
            popularity=np.asarray(obj["popularity"], dtype=np.float64),
        )


@dataclasses.dataclass(frozen=True, eq=False)
class World:
    seed: int
    start_ms: int
    days: int
    countries: tuple[str, ...]
    catalog: Catalog
    users: tuple[User, ...]
    truth: Truth

    def users_dict(self) -> dict:
        return {"users_version": 1, "users": [dataclasses.asdict(u) for u in self.users]}


def generate_world(
    seed: int,
    n_series: int = 120,
    n_users: int = 2000,
    countries: tuple[str, ...] = DEFAULT_COUNTRIES,
    start_ms: int = DEFAULT_START_MS,
    days: int = 3,
) -> World:
    """A deterministic world: `days` is the horizon licensing windows and episode drops are planned for."""
    if n_series < 1 or n_users < 1 or days < 1 or not countries:
        raise ValueError("n_series, n_users and days must be >= 1 and countries non-empty")
    rng = np.random.default_rng([seed, 1])
    series, popularity = _make_series(rng, n_series, countries, start_ms, days)
    catalog = Catalog(series)
    users, taste = _make_users(rng, n_users, countries)

    genre_index = {g: i for i, g in enumerate(GENRES)}
    membership = np.zeros((n_series, len(GENRES)))
    for j, s in enumerate(series):
        for g in s.genres:
            membership[j, genre_index[g]] = 1.0 / len(s.genres)
    match = taste @ membership.T  # [n_users, n_series]
    noise = rng.normal(0.0, AFFINITY_NOISE_SD, size=match.shape)
    affinity = 1.0 / (1.0 + np.exp(-(AFFINITY_SLOPE * np.log(len(GENRES) * match + 0.05) + noise)))
    truth = Truth(
        user_ids=tuple(u.user_id for u in users),
        series_ids=tuple(s.series_id for s in series),
        taste=taste,
        affinity=affinity,
        popularity=popularity,
    )
    return World(seed, start_ms, days, tuple(countries), catalog, tuple(users), truth)


def _make_series(
    rng: np.random.Generator, n: int, countries: tuple[str, ...], start_ms: int, days: int
) -> tuple[list[Series], np.ndarray]:
    ranks = rng.permutation(n)
    popularity = 1.0 / (ranks + 1.0) ** 1.1  # Zipf-like: a few hits, a long tail
    popularity /= popularity.sum()
    out = []
    for j in range(n):
        sid = series_id_for(j + 1)
        n_genres = int(rng.choice([1, 2, 3], p=[0.45, 0.4, 0.15]))
        genres = tuple(GENRES[i] for i in sorted(rng.choice(len(GENRES), n_genres, replace=False, p=_GENRE_WEIGHTS)))
        n_eps = int(rng.integers(10, 81))
        base_s = rng.uniform(60, 180)
        durations = np.clip(base_s + rng.normal(0, 12, n_eps), 60, 180) * 1000
        launch = start_ms - int(rng.uniform(2, 90) * DAY_MS)
        if rng.random() < 0.25:  # ongoing: the last few episodes drop during the simulated days, twice a day
            pending = int(rng.integers(1, 2 * days + 1))
            first_drop = start_ms + int(rng.uniform(0, 12) * HOUR_MS)
            releases = [launch] * (n_eps - pending) + [first_drop + k * 12 * HOUR_MS for k in range(pending)]
        else:
            releases = [launch] * n_eps
        episodes = tuple(
            Episode(episode_id_for(sid, k + 1), sid, k + 1, int(durations[k]), releases[k]) for k in range(n_eps)
        )
        licensing: dict[str, tuple[int, int | None]] = {}
        for c in countries:
            r = rng.random()
            begin, end = launch, None
            if r < 0.12:
                continue  # never licensed here
            if r < 0.20:
                begin = start_ms + int(rng.uniform(0, days) * DAY_MS)  # licence starts mid-simulation
            elif r < 0.32:
                end = start_ms + int(rng.uniform(0.25, days) * DAY_MS)  # licence expires mid-simulation
            licensing[c] = (begin, end)
        title = f"The {_ADJ[int(rng.integers(len(_ADJ)))]} {_NOUN[int(rng.integers(len(_NOUN)))]} ({sid})"
        strength = round(float(rng.beta(2.0, 2.0)), 4)
        out.append(Series(sid, title, genres, strength, episodes, licensing))
    return out, popularity


def _make_users(rng: np.random.Generator, n: int, countries: tuple[str, ...]) -> tuple[list[User], np.ndarray]:
    cw = np.array([_COUNTRY_WEIGHTS.get(c, 0.1) for c in countries])
    country_idx = rng.choice(len(countries), n, p=cw / cw.sum())
    dw = np.array([_DEVICE_WEIGHTS.get(d, 0.1) for d in DEVICES])
    device_idx = rng.choice(len(DEVICES), n, p=dw / dw.sum())
    version_idx = rng.choice(len(APP_VERSIONS), n, p=[0.6, 0.3, 0.1])
    taste = rng.dirichlet(np.full(len(GENRES), TASTE_ALPHA), n)
    binge = rng.beta(2.0, 2.5, n)
    churn = rng.beta(1.0, 15.0, n)
    ret = rng.beta(4.0, 3.0, n)
    users = [
        User(
            user_id=user_id_for(i + 1),
            country=countries[country_idx[i]],
            device=DEVICES[device_idx[i]],
            app_version=APP_VERSIONS[version_idx[i]],
            binge_propensity=round(float(binge[i]), 4),
            churn_prob=round(float(churn[i]), 4),
            return_prob=round(float(ret[i]), 4),
        )
        for i in range(n)
    ]
    return users, taste
