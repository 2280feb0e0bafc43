"""`next.m3u8`: the user's next episodes as one HLS Media Playlist, from the same recommendations (and
the same in-process cache) as the JSON API. No HTTP framework here.

Caching contract:
  * The playlist is personal and short-lived: `Cache-Control: public, max-age=2,
    stale-while-revalidate=10` (`playlist_ttl_s` / `playlist_swr_s`; 1 s while a listed series is in
    its drop window). `public` is right for the same reason as the JSON answer: the URL names the user.
  * Tags (`xkey` / `Surrogate-Key`): u-<keyed user hash>, s-<series> and e-<episode> of every listed
    episode and of the request, `all`: the purges that drop a user's answer drop their playlist too.
  * Chunk URLs inside carry no user data (serving/hls.py); the chunks are cached once for everyone.
  * `Link: <init>; rel=preload; as=video, <seg 0>; ..., <seg 1>; ...`: the first episode's init
    section and first two segments, so a player (or an HTTP/2 / 103 Early Hints capable edge) fetches
    them while it parses the playlist.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

import orjson

from cliffhanger import edge_keys
from cliffhanger.catalog import Catalog, Episode
from serving import hls
from serving.recommend import RecRequest
from serving.service import RecommendationService
from serving.settings import ServingSettings
from serving.ttl_policy import Freshness


@dataclasses.dataclass(frozen=True)
class Playlist:
    body: bytes
    headers: Mapping[str, str]
    episodes: tuple[str, ...]


class PlaylistService:
    def __init__(
        self,
        settings: ServingSettings,
        service: RecommendationService,
        catalog: Callable[[], Catalog],
        dropping: Callable[[Iterable[str], int], bool] = lambda _series, _now: False,
    ) -> None:
        self.s, self.service, self.catalog, self.dropping = settings, service, catalog, dropping

    async def get(self, req: RecRequest, rendition: str) -> tuple[Playlist, str]:
        """(playlist, cache status of the underlying recommendations)."""
        rendered, status = await self.service.get(req)
        answer = orjson.loads(rendered.body)
        catalog = self.catalog()
        episodes: list[Episode] = []
        for item in answer["items"]:
            try:
                episodes.append(catalog.episode(item["episode_id"]))
            except KeyError:  # the catalog moved on since the answer was cached: leave it out
                continue
        episodes = episodes[: self.s.playlist_episodes]
        return self.render(req, episodes, rendition, answer["freshness"]["generated_ms"], rendered.headers), status

    def render(
        self, req: RecRequest, episodes: list[Episode], rendition: str, now_ms: int, answer_headers: Mapping[str, str]
    ) -> Playlist:
        series = list(dict.fromkeys(([req.series_id] if req.series_id else []) + [e.series_id for e in episodes]))
        if self.dropping(series, now_ms):
            fresh = Freshness(self.s.drop_ttl_s, self.s.drop_ttl_s)
        else:
            fresh = Freshness(self.s.playlist_ttl_s, self.s.playlist_swr_s)
        keys = [edge_keys.user_key(req.user_id, self.s.edge_key_secret)]
        keys += [edge_keys.series_key(s) for s in series]
        episode_ids = ([req.episode_id] if req.episode_id else []) + [e.episode_id for e in episodes]
        keys += [edge_keys.episode_key(e) for e in dict.fromkeys(episode_ids)]
        keys.append(edge_keys.ALL)
        tags = " ".join(keys)
        headers = {
            "Cache-Control": fresh.cache_control(),
            "xkey": tags,
            "Surrogate-Key": tags,
            "X-Rung": answer_headers.get("X-Rung", ""),
            "X-Bundle-Version": answer_headers.get("X-Bundle-Version", ""),
        }
        preload = hls.preload_paths(episodes, rendition, self.s.segment_s)
        if preload:
            headers["Link"] = hls.link_header(preload)
        body = hls.media_playlist(episodes, rendition, self.s.segment_s).encode()
        return Playlist(body, headers, tuple(e.episode_id for e in episodes))
