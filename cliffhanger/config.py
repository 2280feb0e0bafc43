"""The one configuration module: every tunable the suite shares, read from the environment.

Pipelines take these as defaults for their flags, serving reads them at start-up, the local stack
uses the ports. Nothing here imports Beam, so the PyFlink venv can import it too.

Environment variables (all optional; defaults suit the local stack):

    CLIFFHANGER_PROJECT            GCP project id                      (local-project)
    CLIFFHANGER_BT_INSTANCE        Bigtable instance id                (cliffhanger)
    CLIFFHANGER_BIGTABLE_PORT      Bigtable emulator port              (8086)
    CLIFFHANGER_PUBSUB_PORT        Pub/Sub emulator port               (8085)
    CLIFFHANGER_ALLOWED_LATENESS_S events later than this are dead-lettered (600)
    CLIFFHANGER_MAX_CLOCK_SKEW_S   events this far in the future are dead-lettered (120)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from exc


@dataclasses.dataclass(frozen=True)
class Settings:
    project: str = "local-project"
    bigtable_instance: str = "cliffhanger"
    bigtable_port: int = 8086
    pubsub_port: int = 8085
    allowed_lateness_s: int = 600
    max_clock_skew_s: int = 120

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            project=env.get("CLIFFHANGER_PROJECT", cls.project),
            bigtable_instance=env.get("CLIFFHANGER_BT_INSTANCE", cls.bigtable_instance),
            bigtable_port=_env_int(env, "CLIFFHANGER_BIGTABLE_PORT", cls.bigtable_port),
            pubsub_port=_env_int(env, "CLIFFHANGER_PUBSUB_PORT", cls.pubsub_port),
            allowed_lateness_s=_env_int(env, "CLIFFHANGER_ALLOWED_LATENESS_S", cls.allowed_lateness_s),
            max_clock_skew_s=_env_int(env, "CLIFFHANGER_MAX_CLOCK_SKEW_S", cls.max_clock_skew_s),
        )

    @property
    def bigtable_emulator_host(self) -> str:
        return f"127.0.0.1:{self.bigtable_port}"

    @property
    def pubsub_emulator_host(self) -> str:
        return f"127.0.0.1:{self.pubsub_port}"
