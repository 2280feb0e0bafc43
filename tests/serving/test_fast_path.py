"""serving/fast_path.py: which requests the ASGI fast path answers itself, and that what it answers is
what the FastAPI route (the documented one) answers."""

from __future__ import annotations

import asyncio

import pytest

from serving.fast_path import FastPath, parse_query, user_of


class Inner:
    """An ASGI app that records what reached it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.state = "inner-state"

    async def __call__(self, scope, receive, send) -> None:
        self.seen.append((scope["type"], scope.get("path", "")))


def _call(app, scope: dict) -> list[dict]:
    sent: list[dict] = []

    async def receive():  # pragma: no cover - GETs read no body
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


@pytest.mark.parametrize(
    ("method", "path", "fast"),
    [
        ("GET", "/v1/users/u1/recommendations", True),
        ("HEAD", "/v1/users/u1/recommendations", False),
        ("GET", "/v1/users/u1/recommendations/", False),
        ("GET", "/v1/users/a/b/recommendations", False),
        ("GET", "/v1/users//recommendations", False),
        ("GET", "/v1/users/u1/next.m3u8", False),
        ("GET", "/healthz", False),
    ],
)
def test_only_a_plain_recommendations_get_takes_the_fast_path(method: str, path: str, fast: bool) -> None:
    asked: list[tuple[str, dict]] = []

    async def answer(user_id, query):
        asked.append((user_id, dict(query)))
        return 200, [(b"content-type", b"application/json"), (b"content-length", b"2")], b"{}"

    inner = Inner()
    app = FastPath(inner, answer)
    sent = _call(app, {"type": "http", "method": method, "path": path, "query_string": b"n=3&country="})
    assert bool(asked) is fast and bool(inner.seen) is not fast
    if fast:
        assert asked == [("u1", {"n": "3", "country": ""})]
        assert sent[0] == {"type": "http.response.start", "status": 200, "headers": sent[0]["headers"]}
        assert sent[1] == {"type": "http.response.body", "body": b"{}"}


def test_lifespan_and_attributes_belong_to_the_fastapi_app() -> None:
    inner = Inner()
    app = FastPath(inner, None)
    _call(app, {"type": "lifespan"})
    assert inner.seen == [("lifespan", "")] and app.state == "inner-state"


def test_query_parsing_matches_starlette() -> None:
    from starlette.datastructures import QueryParams

    raw = b"n=5&context=episode_end&n=7&episode_id=s0001e002&series_id=&x=%2Fa+b"
    assert parse_query(raw) == dict(QueryParams(raw.decode()).items()) | {"n": QueryParams(raw.decode())["n"]}
    assert parse_query(raw)["n"] == "7" and parse_query(raw)["x"] == "/a b" and parse_query(raw)["series_id"] == ""
    assert user_of("/v1/users/u-9/recommendations") == "u-9" and user_of("/v1/users/u-9") is None
