"""Worlds shared by the synth tests: generated once per session (they are deterministic)."""

from __future__ import annotations

import pytest

from cliffhanger.synth import FaultKnobs, Generated, generate

FAULTY = FaultKnobs(duplicate_rate=0.03, out_of_order_rate=0.03, late_rate=0.02, malformed_rate=0.02)


@pytest.fixture(scope="session")
def small() -> Generated:
    """The `small` preset with every fault switched on (~2.5k messages)."""
    return generate(7, "small", knobs=FAULTY)


@pytest.fixture(scope="session")
def medium() -> Generated:
    """Enough users and days for statistical checks of viewing behaviour (~50k events, ~1 s)."""
    return generate(11, "default", n_users=300, n_series=40, days=2)
