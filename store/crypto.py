"""Encryption at rest (``store.encryption_key_file``): embeddings, face crops, the index file and track crops are
stored as AES-256-GCM blobs ``nonce (12 random bytes) || ciphertext || tag``. Each blob's associated data names
what it is (``face/<gallery salt>/<id>/embedding``, ``crop/<camera>/<track>``, ...), so a blob copied onto another
face or crop fails to decrypt instead of being read as that one.

The key file holds 32 bytes written as 64 hex digits (surrounding whitespace and a trailing newline are fine), e.g.
``python -c 'import secrets; print(secrets.token_hex(32))' > key``. A store created with a key records a key check
value in its meta (an HMAC-SHA256 of a fixed label under the key), so a wrong key, a missing key, or a key given for
an unencrypted store is refused when the store is opened, never when a blob is first read.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import GalleryError, InputError

KEY_BYTES = 32
NONCE_BYTES = 12
CHECK_LABEL = b"argusnet store key check v1"
META_KEY = "key_check"


def load_key(path: Path, field: str = "store.encryption_key_file") -> bytes:
    """The 32-byte key in ``path`` (64 hex digits); InputError naming the file (and the ``field`` it is set in)
    otherwise."""
    try:
        text = Path(path).read_bytes().strip()
    except OSError as exc:
        raise InputError(f"{field} {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise InputError(f"{field} {path}: expected {KEY_BYTES * 2} hex digits (32 random bytes, "
                         "e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)") from None
    if len(key) != KEY_BYTES:
        raise InputError(f"{field} {path}: expected a {KEY_BYTES}-byte key ({KEY_BYTES * 2} hex "
                         f"digits), got {len(key)} bytes")
    return key


class Cipher:
    """AES-256-GCM with a random nonce per blob; ``source`` names the key file in messages."""

    def __init__(self, key: bytes, source: str) -> None:
        if len(key) != KEY_BYTES:
            raise InputError(f"{source}: expected a {KEY_BYTES}-byte key, got {len(key)} bytes")
        self._aead = AESGCM(key)
        self.source = source
        self.check_value = hmac.new(key, CHECK_LABEL, hashlib.sha256).hexdigest()

    @classmethod
    def from_file(cls, path: Path | None) -> "Cipher | None":
        return None if path is None else cls(load_key(path), str(path))

    def encrypt(self, data: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, bytes(data), aad)

    def opens(self, blob: bytes, aad: bytes) -> bool:
        """Whether ``blob`` is this key's blob for ``aad`` (a rekey that stopped part-way skips those)."""
        blob = bytes(blob)
        if len(blob) < NONCE_BYTES + 16:
            return False
        try:
            self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            return False
        return True

    def decrypt(self, blob: bytes, aad: bytes, where: str) -> bytes:
        """The plaintext; GalleryError naming ``where`` when the blob is not this key's blob for ``aad``."""
        blob = bytes(blob)
        if len(blob) < NONCE_BYTES + 16:
            raise GalleryError(f"{where}: encrypted blob too short ({len(blob)} bytes)")
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise GalleryError(f"{where}: cannot decrypt with the key in {self.source} (another key, a damaged "
                               "blob, or a blob moved from another face or crop)") from None


def check_key(recorded: str | None, cipher: Cipher | None, where: str) -> None:
    """Refuse a store whose recorded key check value does not fit the configured key (or its absence)."""
    if recorded is None and cipher is None:
        return
    if recorded is None:
        raise GalleryError(f"{where} is not encrypted, but store.encryption_key_file is set ({cipher.source}); "
                           "unset it (an existing store cannot be encrypted in place: migrate it into a new one)")
    if cipher is None:
        raise GalleryError(f"{where} is encrypted: set store.encryption_key_file to the file holding its key")
    if not hmac.compare_digest(recorded, cipher.check_value):
        raise GalleryError(f"{where} was encrypted with another key than the one in {cipher.source}")


def seal(cipher: Cipher | None, data: bytes, aad: bytes) -> bytes:
    return data if cipher is None else cipher.encrypt(data, aad)


def unseal(cipher: Cipher | None, blob: bytes, aad: bytes, where: str) -> bytes:
    return bytes(blob) if cipher is None else cipher.decrypt(blob, aad, where)
