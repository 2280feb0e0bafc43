"""`python -m serving --port 8080`: one uvicorn process serving create_app(ServingSettings.from_env()).
`python -m serving --replicas N --port 8080`: N such processes on ports 8080..8080+N-1, each with its
own replica id and Pub/Sub subscriptions, supervised by this one (serving/supervisor.py).

The access log is off: request paths carry user ids, and logs must not (STYLE: ids only as keyed hashes).

Event loop and HTTP parser: uvloop and httptools (C) when installed (they are in the `serve` extra and
requirements.txt), else asyncio and h11 (pure Python). Measured with `python -m benchmarks.serving_latency`,
the pure-Python pair costs about a millisecond of CPU more per request on the cache-miss path.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys

import uvicorn

from serving import supervisor
from serving.settings import ServingConfigError, ServingSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Cliffhanger recommendation API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--replicas", type=int, default=1, help="serving processes on ports --port.. (one per core; behind Varnish)"
    )
    args = parser.parse_args(argv)
    if args.replicas != 1:
        try:
            code = supervisor.run(args.replicas, args.host, args.port, args.log_level)
        except ServingConfigError as exc:
            parser.error(str(exc))
        sys.exit(code)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from serving.app import create_app  # not in a --replicas parent: it only supervises

    app = create_app(ServingSettings.from_env())
    loop, http = server_stack()
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level=args.log_level, loop=loop, http=http)


def server_stack() -> tuple[str, str]:
    """(uvicorn loop, uvicorn http): the C implementations when importable."""
    have = lambda name: importlib.util.find_spec(name) is not None  # noqa: E731
    return ("uvloop" if have("uvloop") else "asyncio"), ("httptools" if have("httptools") else "h11")


if __name__ == "__main__":
    main()
