"""`make demo`: the whole suite end to end on local real components.

    python -m cliffhanger.demo [--users 300 --series 30 --events 20000 --rate 2000] [--keep-running]

1. the local stack: Bigtable + Pub/Sub emulators (ports from CLIFFHANGER_*_PORT), topics, tables
2. a synthetic microdrama world (catalog, users, a day of sessions with faults) under var/world
3. a model bundle trained from that world's event log (two-tower, ScaNN, ONNX ranker), published
4. the serving API behind Varnish, and the streaming jobs: features, candidates, invalidation
5. events published "now" to Pub/Sub; what landed in Bigtable, for a few users, series and cohorts
6. requests through Varnish: a miss, a hit, a purge by surrogate key
7. the loop: a viewer finishes an episode -> features -> purge -> their next answer reflects it
8. an episode drops: catalog event -> serving + purge -> it reaches the viewer through Varnish
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import time
from pathlib import Path

from cliffhanger import resources
from cliffhanger.config import Settings
from cliffhanger.demo import steps
from cliffhanger.demo.summary import cohort_lines, pick_users_and_series, series_lines, user_lines
from cliffhanger.localstack import LocalStack


def _header(text: str) -> float:
    print(f"\n\033[1m== {text}\033[0m", flush=True)
    return time.perf_counter()


def _took(t0: float) -> None:
    print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--var", default="var", help="working directory for the world, bundles and logs")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--series", type=int, default=30)
    parser.add_argument(
        "--events", type=int, default=20_000, help="at most this many of the world's messages are published"
    )
    parser.add_argument("--rate", type=float, default=2000.0, help="messages per second")
    parser.add_argument("--keep-running", action="store_true", help="leave everything up until Ctrl-C")
    args = parser.parse_args(argv)
    var = Path(args.var).resolve()
    var.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("CLIFFHANGER_EDGE_KEY_SECRET", secrets.token_hex(16))
    os.environ.setdefault("CLIFFHANGER_ADMIN_TOKEN", secrets.token_hex(16))

    settings = Settings.from_env()
    t = _header(
        f"1/8 local stack: Bigtable emulator :{settings.bigtable_port}, Pub/Sub emulator :{settings.pubsub_port}"
    )
    with LocalStack(settings, workdir=var / "localstack") as stack, contextlib.ExitStack() as running:
        stack.provision()
        stack.apply_env()
        print(
            f"   {len(resources.TOPICS)} topics, {len(resources.SUBSCRIPTIONS)} subscriptions, table '{resources.FEATURES_TABLE}'"
        )
        _took(t)

        t = _header(f"2/8 synthetic world: {args.users} users, {args.series} series, one day (seed {args.seed})")
        world = steps.make_world(var / "world", args.seed, args.users, args.series)
        print(f"   {world.summary}")
        _took(t)

        t = _header("3/8 training a model bundle from the world's event log")
        bundle = steps.train_bundle(world.dir, var / "bundles")
        print(f"   published bundle {bundle.version}: " + ", ".join(f"{k} {v}" for k, v in bundle.headline.items()))
        _took(t)

        t = _header("4/8 serving API behind Varnish; streaming jobs: features, candidates, invalidation")
        edge = steps.start_serving(stack, running, world, var / "bundles", var / "logs")
        print(f"   API {edge.api_url}  (docs {edge.api_url}/docs)   Varnish {edge.varnish.url}")
        jobs = steps.start_pipelines(running, world, var / "bundles", edge)
        print(f"   running: {', '.join(jobs)}")
        _took(t)

        n_events = min(args.events, len(world.generated.messages))  # --events caps the world's day
        t = _header(f"5/8 publishing {n_events:,} messages at {args.rate:,.0f}/s (times rebased to now)")
        published = steps.publish(world, args.events, args.rate)
        print(f"   {published.summary}")
        landed_s = steps.wait_until_landed(published)
        print(f"   the last sampled completions were visible in Bigtable {landed_s:.2f} s after publishing ended")
        users, series, cohorts = pick_users_and_series(published.payloads)
        rows = steps.read_rows(users, series, cohorts)
        print("   users:")
        for u in users:
            print("\n".join(user_lines(u, rows.get(("u", u)))))
        print("   series:")
        for s in series:
            print("\n".join(series_lines(s, rows.get(("s", s)))))
        print("   cohorts:")
        for c in cohorts:
            print("\n".join(cohort_lines(c, rows.get(("c", c)))))
        print(f"   dead-lettered: {steps.dead_letters(published)}")
        _took(t)

        t = _header("6/8 recommendations through Varnish")
        steps.show_edge(edge, users[0], world)
        _took(t)

        t = _header("7/8 the loop: a viewer finishes an episode; their next answer through Varnish reflects it")
        steps.close_the_loop(edge, users[0], world)
        _took(t)

        t = _header("8/8 an episode drops; it reaches the viewer through Varnish")
        steps.drop_episode(edge, users[0], world)
        _took(t)

        if args.keep_running:
            print(f"\nEverything is up (API {edge.api_url}, Varnish {edge.varnish.url}). Ctrl-C to stop.")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    stack.check_alive()
                    time.sleep(5)
        print("\nstopping ...", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
