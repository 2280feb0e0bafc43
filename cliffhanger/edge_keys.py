"""Surrogate keys: the tags that let the edge purge cached answers by what they depend on.

Used by serving (the `xkey` / `Surrogate-Key` response headers) and by the invalidation pipeline
(which maps change notices to the same keys). User ids never appear in clear: a user's key is a keyed
hash (HMAC-SHA256 with CLIFFHANGER_EDGE_KEY_SECRET), so cache keys and headers leak nothing. The
secret is never in code: `make demo` / the test fixtures generate one; in the cloud it comes from
Secret Manager through the environment.
"""

from __future__ import annotations

import hashlib
import hmac
import os

SECRET_ENV = "CLIFFHANGER_EDGE_KEY_SECRET"
ALL = "all"  # on every API answer: purge everything at once (a new bundle)


class MissingSecretError(RuntimeError):
    pass


def secret_from_env() -> bytes:
    value = os.environ.get(SECRET_ENV, "")
    if not value:
        raise MissingSecretError(f"{SECRET_ENV} is not set: the keyed hash for user surrogate keys needs a secret")
    return value.encode()


def user_hash(user_id: str, secret: bytes) -> str:
    """16 hex chars of HMAC-SHA256(secret, user_id): stable, and not reversible without the secret."""
    return hmac.new(secret, user_id.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def user_key(user_id: str, secret: bytes) -> str:
    return f"u-{user_hash(user_id, secret)}"


def series_key(series_id: str) -> str:
    return f"s-{series_id}"


def episode_key(episode_id: str) -> str:
    return f"e-{episode_id}"


def cohort_key(country: str, device: str) -> str:
    return f"c-{country}-{device}"
