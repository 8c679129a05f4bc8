"""AEAD for personal data: one AES-256-GCM data key per person, wrapped by a master key.

    master key (FINPASS_PII_MASTER_KEY, id FINPASS_PII_MASTER_KEY_ID)
      └─ wraps each person's data key   person_keys.wrapped_key, .master_key_id
           └─ seals that person's fields users.email_enc, users.phone_enc,
                                         credentials.credential_jwt_enc

A sealed value is `0x01 || nonce (12 bytes) || ciphertext || tag (16 bytes)`. The associated
data binds it to its place (`finpass:v1:<table>.<column>:<row id>`), so a ciphertext moved to
another row or column does not open. A wrapped key binds the person's pseudonym and the master
key id the same way. Destroying a person's wrapped key (erasure) makes every copy of their sealed
fields unreadable, in backups too (crypto-shredding).
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from finpass_pipeline.errors import FinpassError

FORMAT_V1 = b"\x01"
NONCE_BYTES = 12
KEY_BYTES = 32

DEV_MASTER_KEY = b"finpass-dev-only-insecure-pii-ke"  # 32 bytes; dev mode only
DEV_MASTER_KEY_ID = "dev"


class DecryptionError(FinpassError):
    """A sealed value or wrapped key did not open: tampered, moved, or the wrong key."""


class UnknownMasterKey(FinpassError):
    """A wrapped key names a master key id the keyring does not hold (rotation incomplete?)."""


def parse_key(text: str, name: str) -> bytes:
    """A 32-byte key from base64 (standard or URL-safe) or 64 hex characters; `ValueError`
    names `name` and never echoes the value."""
    raw = text.strip()
    try:
        if len(raw) == 2 * KEY_BYTES and all(c in "0123456789abcdefABCDEF" for c in raw):
            key = bytes.fromhex(raw)
        else:
            key = base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_" if (
                "-" in raw or "_" in raw) else None, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name}: not base64 or hex") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"{name}: must be {KEY_BYTES} bytes (got {len(key)}); "
                           "e.g. `openssl rand -base64 32`")
    return key


def field_aad(table: str, column: str, row_id: object) -> bytes:
    """Associated data of a sealed field: its table, column and row."""
    return f"finpass:v1:{table}.{column}:{row_id}".encode()


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def seal(key: bytes, plaintext: str, aad: bytes) -> bytes:
    """Encrypt `plaintext` (UTF-8) under `key` with a fresh random nonce."""
    nonce = os.urandom(NONCE_BYTES)
    return FORMAT_V1 + nonce + AESGCM(key).encrypt(nonce, plaintext.encode(), aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> str:
    """Decrypt what `seal` wrote; `DecryptionError` if anything (key, data, place) differs."""
    if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != FORMAT_V1:
        raise DecryptionError("sealed value has an unknown format")
    nonce = blob[1:1 + NONCE_BYTES]
    try:
        return AESGCM(key).decrypt(nonce, blob[1 + NONCE_BYTES:], aad).decode()
    except InvalidTag:
        raise DecryptionError("sealed value does not open: tampered, moved or wrong key"
                              ) from None


def _wrap_aad(pseudonym: str, key_id: str) -> bytes:
    return f"finpass:v1:person_key:{pseudonym}:{key_id}".encode()


class MasterKeyring:
    """The current master key (wraps new data keys) and older ones (still unwrap, until
    `privacy rotate-key` has re-wrapped every data key under the current one)."""

    def __init__(self, current_id: str, keys: dict[str, bytes], *, dev: bool = False) -> None:
        if current_id not in keys:
            raise ValueError(f"keyring lacks its current key {current_id!r}")
        self.current_id = current_id
        self.dev = dev
        self._aead = {kid: AESGCM(k) for kid, k in keys.items()}

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._aead)

    def wrap(self, data_key: bytes, pseudonym: str) -> tuple[str, bytes]:
        """(master key id, wrapped key) of `data_key` for the person `pseudonym`."""
        nonce = os.urandom(NONCE_BYTES)
        kid = self.current_id
        sealed = self._aead[kid].encrypt(nonce, data_key, _wrap_aad(pseudonym, kid))
        return kid, FORMAT_V1 + nonce + sealed

    def unwrap(self, key_id: str, wrapped: bytes, pseudonym: str) -> bytes:
        aead = self._aead.get(key_id)
        if aead is None:
            raise UnknownMasterKey(
                f"a data key is wrapped by master key {key_id!r}, which is not configured "
                "(FINPASS_PII_MASTER_KEY / FINPASS_PII_MASTER_KEYS)")
        if len(wrapped) < 1 + NONCE_BYTES + 16 or wrapped[:1] != FORMAT_V1:
            raise DecryptionError("wrapped data key has an unknown format")
        try:
            return aead.decrypt(wrapped[1:1 + NONCE_BYTES], wrapped[1 + NONCE_BYTES:],
                                _wrap_aad(pseudonym, key_id))
        except InvalidTag:
            raise DecryptionError(f"data key of {pseudonym[:12]}… does not unwrap under master "
                                  f"key {key_id!r}: tampered or wrong key") from None
