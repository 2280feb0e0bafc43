"""The hot endpoint without the framework: `GET /v1/users/{user_id}/recommendations` answered straight
from ASGI; every other request, and this endpoint's OpenAPI description, stay with the FastAPI app.

    app = FastPath(fastapi_app, answer)     # what create_app returns; attributes reach the FastAPI app
    status, raw_headers, body = await answer(user_id, query)   # the ONE implementation, both paths call it

Why: at concurrency 8 the framework's share of a cache-miss request (Starlette's middleware stack,
FastAPI's routing, dependency solving and Response objects) was ~0.3 ms of ~1.5 ms of CPU (an
in-process run of the same requests without HTTP against `python -m benchmarks.serving_latency`), and
one Python process serves every request. Here the request is matched with two string tests, the query
parsed as Starlette parses it (`parse_qsl`, blank values kept, the last value of a repeated name wins),
and the answer's headers were encoded once when it was rendered (they are cached with it).

Only a GET whose path is exactly that shape takes this path; anything else (HEAD, a trailing slash, a
user id with a slash) goes to FastAPI, which answers as it always did. The FastAPI route calls the
same `answer`, so the two cannot drift apart; tests exercise both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

PREFIX, SUFFIX = "/v1/users/", "/recommendations"
RawHeaders = list[tuple[bytes, bytes]]
Answer = Callable[[str, Mapping[str, str]], Awaitable[tuple[int, RawHeaders, bytes]]]


def user_of(path: str) -> str | None:
    """The user id of a recommendations path, or None for any other path."""
    if not (path.startswith(PREFIX) and path.endswith(SUFFIX)):
        return None
    user_id = path[len(PREFIX) : -len(SUFFIX)]
    return user_id if user_id and "/" not in user_id else None


def parse_query(query_string: bytes) -> dict[str, str]:
    return dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))


class FastPath:
    """ASGI app: the recommendations GET via `answer`, everything else via `app`."""

    def __init__(self, app: Any, answer: Answer) -> None:
        self.app, self.answer = app, answer

    def __getattr__(self, name: str) -> Any:  # .state, .router, .openapi(): the FastAPI app's
        return getattr(self.app, name)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            user_id = user_of(scope["path"])
            if user_id is not None:
                status, headers, body = await self.answer(user_id, parse_query(scope["query_string"]))
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
