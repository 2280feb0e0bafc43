"""The parsed HCL of infra/terraform (python-hcl2, no provider needed), for the Terraform tests."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import hcl2

ROOT = Path(__file__).resolve().parents[2]
TF_DIR = ROOT / "infra" / "terraform"
_OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)


@functools.cache
def _parsed() -> dict[str, dict[str, Any]]:
    files = sorted(TF_DIR.glob("*.tf"))
    assert files, f"no *.tf files in {TF_DIR}"
    out = {}
    for path in files:
        with path.open(encoding="utf-8") as f:
            out[path.name] = hcl2.load(f, serialization_options=_OPTIONS)
    return out


def _local(name: str) -> Any:
    found = [(file, block[name]) for file, doc in _parsed().items() for block in doc.get("locals", []) if name in block]
    assert len(found) == 1, f"local.{name} must be defined exactly once in infra/terraform, found in {found!r}"
    return found[0][1]


def _resources(kind: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for doc in _parsed().values():
        for block in doc.get("resource", []):
            for name, body in block.get(kind, {}).items():
                assert name not in out, f"{kind}.{name} declared twice"
                out[name] = body
    return out


def _only(kind: str) -> dict[str, Any]:
    found = _resources(kind)
    assert len(found) == 1, f"expected ONE {kind} (driven by a local map), found {sorted(found)}"
    return next(iter(found.values()))
