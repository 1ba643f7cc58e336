"""API keys: `sy-<key id>-<secret>`, the secret random (256 bits), only its hash stored.

    sy-7f3a9c01d2e4-Xh2b...43 characters...

The key id names a key in logs, in the admin API and in a secret scanner's
rules without revealing it; the secret is shown once, when the key is made or
rotated, and never again. The store keeps SHA-256 of the secret (right for a
secret this random: nothing to stretch), compared in constant time. A rotated
key keeps its id; its previous secret stays valid until `previous_until`.

Pure: no I/O, no clock (callers pass the time).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

PREFIX = "sy"
KEY_ID_BYTES = 6  # 12 hex characters
SECRET_BYTES = 32  # 256 bits, 43 characters of URL-safe base64
_SHAPE = re.compile(r"^sy-([0-9a-f]{12})-([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key as the directory keeps it (no secret: its hashes)."""

    key_id: str
    tenant: str
    name: str = ""
    secret_hash: str = field(default="", repr=False)
    previous_hash: str | None = field(default=None, repr=False)
    previous_until: float | None = None  # the previous secret works until then
    expires_at: float | None = None
    revoked_at: float | None = None
    admin: bool = False  # may call the admin API
    created_at: float = 0.0
    rotated_at: float | None = None

    def state(self, now: float) -> str:
        """ "active", "revoked" or "expired" at `now`."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def new_key_id() -> str:
    """A fresh key id."""
    return secrets.token_hex(KEY_ID_BYTES)


def new_secret() -> str:
    """A fresh secret."""
    return secrets.token_urlsafe(SECRET_BYTES)


def token(key_id: str, secret: str) -> str:
    """The whole key a caller sends."""
    return f"{PREFIX}-{key_id}-{secret}"


def parse(text: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    found = _SHAPE.match(text)
    return None if found is None else (found[1], found[2])


def digest(secret: str) -> str:
    """What the directory stores for a secret: SHA-256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def matches(key: ApiKey, secret: str, now: float) -> bool:
    """Is `secret` the key's secret, or its previous one still inside the grace period?"""
    presented = digest(secret)
    if hmac.compare_digest(presented, key.secret_hash):
        return True
    previous = key.previous_hash
    return (
        previous is not None
        and key.previous_until is not None
        and now < key.previous_until
        and hmac.compare_digest(presented, previous)
    )
