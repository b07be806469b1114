"""Erasure tombstones: what a forget leaves so that nothing written later brings the name back.

``argusnet forget`` (`identity.erasure`) records a tombstone of the name in the store: an HMAC-SHA256 of the name
under the store's random erasure salt (made on the first forget, kept in the store), never the name. A worker's
store (`store.buffered`) asks which of the names its waiting writes carry have tombstones before it writes them
after an outage, and drops those writes (and the crops of the events it drops), so a forgotten name is never
written back from a worker's buffer. The salt keeps the tombstones from being a list of hashes of names that one
hash of a guessed name could be looked up in across sites; whoever can read the store can still test a guess.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SALT_BYTES = 32


def new_salt() -> str:
    return secrets.token_hex(SALT_BYTES)


def tombstone(salt: str, name: str) -> str:
    """The tombstone of ``name`` under the store's salt (hex)."""
    return hmac.new(bytes.fromhex(salt), name.encode("utf-8"), hashlib.sha256).hexdigest()
