"""CLI for the synthetic world.

python -m cliffhanger.synth generate --seed 7 --out out/world [--preset small] [--users N --series N
    --days D --duplicate-rate R --out-of-order-rate R --late-rate R --malformed-rate R]
python -m cliffhanger.synth publish --log out/world/events.jsonl --topic events --project local-project
    [--rate 500 | --realtime --speed 60] [--limit N] [--no-progress]
"""

from __future__ import annotations

import argparse
import time

from cliffhanger.synth import PRESETS, FaultKnobs, generate, write_world


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cliffhanger.synth", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate a world directory (catalog, users, truth, events.jsonl, manifest)")
    g.add_argument("--seed", type=int, required=True)
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--preset", choices=sorted(PRESETS), default="default")
    g.add_argument("--users", type=int, help="number of users (overrides the preset)")
    g.add_argument("--series", type=int, help="number of series (overrides the preset)")
    g.add_argument("--days", type=int, help="days simulated (overrides the preset)")
    g.add_argument("--duplicate-rate", type=_rate, default=0.0)
    g.add_argument("--out-of-order-rate", type=_rate, default=0.0)
    g.add_argument("--late-rate", type=_rate, default=0.0)
    g.add_argument("--malformed-rate", type=_rate, default=0.0)

    pub = sub.add_parser("publish", help="replay an events.jsonl onto a Pub/Sub topic, rebased to now")
    pub.add_argument("--log", required=True, help="path to events.jsonl")
    pub.add_argument("--topic", default="events")
    pub.add_argument("--project", help="GCP project (default: CLIFFHANGER_PROJECT or local-project)")
    pub.add_argument("--rate", type=float, default=500.0, help="messages per second")
    pub.add_argument("--realtime", action="store_true", help="follow the log's arrival spacing instead of --rate")
    pub.add_argument("--speed", type=float, default=1.0, help="with --realtime: replay this many times faster")
    pub.add_argument("--limit", type=int, help="publish only the first N messages")
    pub.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    return p


def _generate(args: argparse.Namespace) -> None:
    knobs = FaultKnobs(
        duplicate_rate=args.duplicate_rate,
        out_of_order_rate=args.out_of_order_rate,
        late_rate=args.late_rate,
        malformed_rate=args.malformed_rate,
    )
    t0 = time.perf_counter()
    g = generate(args.seed, args.preset, knobs=knobs, n_users=args.users, n_series=args.series, days=args.days)
    man = write_world(args.out, g.world, g.messages, knobs=knobs, days=g.days)
    took = time.perf_counter() - t0
    print(
        f"world seed={man['seed']}: {man['n_series']} series ({man['n_episodes']} episodes), "
        f"{man['n_users']} users, {man['days']} days -> {args.out}  ({took:.1f}s)"
    )
    print(f"messages {man['messages']:,} (valid events {man['valid_events']:,})")
    print("  event types: " + ", ".join(f"{k} {v:,}" for k, v in man["event_types"].items()))
    print("  faults:      " + ", ".join(f"{k} {v:,}" for k, v in man["faults"].items()))


def _publish(args: argparse.Namespace) -> None:
    from cliffhanger.synth.publish import publish_log

    s = publish_log(
        args.log,
        args.topic,
        args.project,
        rate=None if args.realtime else args.rate,
        speed=args.speed,
        limit=args.limit,
        progress=args.progress,
    )
    print(
        f"published {s.count:,} messages to {args.topic} in {s.elapsed_s:.1f}s ({s.achieved_rate:,.0f} msg/s): "
        f"{s.valid:,} valid ({s.duplicates:,} duplicates), {s.malformed:,} malformed"
    )


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    {"generate": _generate, "publish": _publish}[args.command](args)


if __name__ == "__main__":
    main()
