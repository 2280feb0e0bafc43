"""Bigtable row keys (layout and hot-spotting reasoning in cliffhanger/resources.py). Pure Python."""

from __future__ import annotations

import hashlib


def salt(entity_id: str) -> str:
    """4 hex chars of a stable hash: spreads sequential ids over tablets (65,536 prefixes)."""
    return hashlib.blake2b(entity_id.encode("utf-8"), digest_size=2).hexdigest()


def user_key(user_id: str) -> bytes:
    return f"u#{salt(user_id)}#{user_id}".encode()


def episode_key(episode_id: str) -> bytes:
    return f"e#{salt(episode_id)}#{episode_id}".encode()


def series_key(series_id: str) -> bytes:
    return f"s#{salt(series_id)}#{series_id}".encode()


def cohort_key(country: str, device: str) -> bytes:
    return f"c#{country}#{device}".encode()


def segment_key(segment: str) -> bytes:
    return f"g#{segment}".encode()


def parse_key(row_key: bytes) -> tuple[str, str]:
    """(kind, id) for a row key: ('u', 'u000042'), ('c', 'US#ios'), ..."""
    text = row_key.decode()
    kind, _, rest = text.partition("#")
    if kind in ("u", "e", "s"):
        return kind, rest.partition("#")[2]
    return kind, rest
