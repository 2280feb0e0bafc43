"""The synthetic microdrama world: catalog, users, sessions, faults, the event log and its publisher.

    from cliffhanger.synth import generate, FaultKnobs, write_world
    g = generate(7, "small", knobs=FaultKnobs(duplicate_rate=0.02, late_rate=0.01))
    write_world("out/world", g.world, g.messages, knobs=g.knobs, days=g.days)

Deterministic from the seed. Pure Python + numpy: no Beam or TF here (the PyFlink venv imports this).
`publish` (google-cloud-pubsub) is imported on use only: `from cliffhanger.synth.publish import publish_log`.
"""

from __future__ import annotations

import dataclasses

from cliffhanger.synth.faults import FaultKnobs, Message, apply_faults, malformed_payloads
from cliffhanger.synth.log import LogRecord, read_log, write_log, write_world
from cliffhanger.synth.sessions import SimEvent, simulate
from cliffhanger.synth.world import Truth, User, World, generate_world

PRESETS: dict[str, dict[str, int]] = {
    "small": {"n_users": 50, "n_series": 10, "days": 1},  # a few thousand events, for tests
    "default": {"n_users": 2000, "n_series": 120, "days": 3},  # ~250k events
}

__all__ = [
    "PRESETS",
    "FaultKnobs",
    "Generated",
    "LogRecord",
    "Message",
    "SimEvent",
    "Truth",
    "User",
    "World",
    "apply_faults",
    "generate",
    "generate_world",
    "malformed_payloads",
    "read_log",
    "simulate",
    "write_log",
    "write_world",
]


@dataclasses.dataclass(frozen=True, eq=False)
class Generated:
    world: World
    events: list[SimEvent]  # the valid events, each once, by arrival (the ground-truth stream)
    messages: list[Message]  # what reaches the topic: events + faults, by arrival
    knobs: FaultKnobs
    days: int


def generate(
    seed: int,
    preset: str = "default",
    *,
    knobs: FaultKnobs | None = None,
    n_users: int | None = None,
    n_series: int | None = None,
    days: int | None = None,
    **world_kwargs,
) -> Generated:
    """World + simulated events + faults, from a preset with optional overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    p = PRESETS[preset]
    days = p["days"] if days is None else days
    world = generate_world(
        seed,
        n_series=p["n_series"] if n_series is None else n_series,
        n_users=p["n_users"] if n_users is None else n_users,
        days=days,
        **world_kwargs,
    )
    knobs = knobs or FaultKnobs()
    events = simulate(world, days=days)
    return Generated(world, events, apply_faults(events, knobs, seed), knobs, days)
