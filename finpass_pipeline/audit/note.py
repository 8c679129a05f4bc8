"""Ed25519 signed notes (C2SP signed-note, golang.org/x/mod/sumdb/note) and tlog checkpoints.

    checkpoint body = "<origin>\\n<tree size>\\n<base64 root hash>\\n"
    note            = body + "\\n" + "— <name> <base64(key hash (4 bytes) || signature)>\\n"
    key hash        = first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key), big-endian
    vkey            = "<name>+<key hash as 8 hex>+<base64(0x01 || public key)>"

The key name is the checkpoint's origin line. `FINPASS_AUDIT_SIGNING_KEY` names a PKCS#8 PEM
Ed25519 private key; in dev mode without it a deterministic dev key is used (and said so).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from finpass_pipeline.errors import FinpassError

ALG_ED25519 = 1
DEV_KEY_SEED = hashlib.sha256(b"finpass-dev-only-insecure-audit-signing-key").digest()
DEV_NAME_SUFFIX = "-dev-insecure"
"""Appended to the origin when the dev key signs: nobody can mistake its checkpoints."""


class NoteError(FinpassError):
    """A note or checkpoint that does not parse or whose signature does not verify."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def key_hash(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public).digest()[:4]


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class Signer:
    """An Ed25519 key under a note name (= the checkpoint origin)."""

    name: str
    private: Ed25519PrivateKey
    dev: bool = False

    @property
    def public(self) -> bytes:
        return _raw(self.private.public_key())

    def vkey(self) -> str:
        return (f"{self.name}+{key_hash(self.name, self.public).hex()}"
                f"+{_b64(bytes([ALG_ED25519]) + self.public)}")

    def sign(self, text: str) -> str:
        """The signed note of `text` (which must end in a newline)."""
        if not text.endswith("\n"):
            raise ValueError("a note's text ends with a newline")
        signature = self.private.sign(text.encode())
        return f"{text}\n\u2014 {self.name} {_b64(key_hash(self.name, self.public) + signature)}\n"


def load_signer(origin: str, key_path: Path | None, dev_mode: bool) -> Signer:
    """The checkpoint signer: the PEM at `key_path`, else (dev mode only) the dev key."""
    if not origin or any(c.isspace() or c == "+" for c in origin):
        raise NoteError(f"origin {origin!r}: a note name has no spaces and no '+'")
    if key_path is None:
        if not dev_mode:
            raise NoteError("FINPASS_AUDIT_SIGNING_KEY is not set (a PKCS#8 PEM Ed25519 private "
                            "key; required unless FINPASS_DEV_MODE=true)")
        return Signer(origin + DEV_NAME_SUFFIX, Ed25519PrivateKey.from_private_bytes(DEV_KEY_SEED),
                      dev=True)
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise NoteError(f"FINPASS_AUDIT_SIGNING_KEY {key_path}: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise NoteError(f"FINPASS_AUDIT_SIGNING_KEY {key_path}: not an Ed25519 key")
    return Signer(origin, key)


def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    return f"{origin}\n{size}\n{_b64(root)}\n"


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes


def open_checkpoint(note: str, vkey: str) -> Checkpoint:
    """Parse a signed checkpoint and check its signature under `vkey`; raises NoteError."""
    name, hash_hex, key_b64 = [*vkey.split("+", 2), "", ""][:3]
    try:
        raw = base64.b64decode(key_b64, validate=True)
    except ValueError:
        raise NoteError("malformed vkey") from None
    if len(raw) != 33 or raw[0] != ALG_ED25519 or key_hash(name, raw[1:]).hex() != hash_hex:
        raise NoteError("malformed vkey")
    text, sep, sigs = note.partition("\n\n")
    text += "\n"
    if not sep or not sigs.endswith("\n"):
        raise NoteError("not a signed note")
    public = Ed25519PublicKey.from_public_bytes(raw[1:])
    verified = False
    for line in sigs[:-1].split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "\u2014":
            raise NoteError("malformed signature line")
        if parts[1] != name:
            continue
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except ValueError:
            raise NoteError("malformed signature") from None
        if blob[:4] != bytes.fromhex(hash_hex):
            continue
        try:
            public.verify(blob[4:], text.encode())
        except InvalidSignature:
            raise NoteError("signature does not verify") from None
        verified = True
    if not verified:
        raise NoteError(f"no signature by {name}")
    lines = text.split("\n")
    try:
        origin, size, root = lines[0], int(lines[1]), base64.b64decode(lines[2], validate=True)
    except (IndexError, ValueError):
        raise NoteError("not a tlog checkpoint") from None
    if origin != name or len(root) != 32 or size < 0:
        raise NoteError("not a tlog checkpoint of this log")
    return Checkpoint(origin, size, root)
