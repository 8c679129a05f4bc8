"""The keyed pseudonym of a DID: the only form in which a person enters the audit log.

HMAC-SHA-256 under `FINPASS_AUDIT_HASH_KEY`, 64 lowercase hex characters; the key's id is stored
beside it so keys can rotate without rewriting history. Every part of the code that needs a
pseudonym (the consumer's audit rows, `audit user`, the synthetic data generator) calls
`pseudonym` here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from functools import lru_cache
from typing import Any, overload


def pseudonym(key: bytes, did: str) -> str:
    """HMAC-SHA-256 of `did` under `key`, as 64 lowercase hex characters."""
    return hmac.new(key, did.encode(), hashlib.sha256).hexdigest()


# A DID per W3C DID Core: "did:" method ":" method-specific-id (colon-separated segments).
DID_PATTERN = re.compile(r"did:[a-z0-9]+:(?:[A-Za-z0-9._%-]*:)*[A-Za-z0-9._%-]+")


class Pseudonymizer:
    """HMAC-SHA-256 of a DID under one key: 64 lowercase hex characters."""

    def __init__(self, key: bytes, key_id: str) -> None:
        self.key_id = key_id
        self._key = key
        self.hash = lru_cache(maxsize=65_536)(self._hash)

    def _hash(self, did: str) -> str:
        return pseudonym(self._key, did)

    def maybe(self, did: str | None) -> str | None:
        return self.hash(did) if did else None

    @overload
    def scrub_text(self, text: str) -> str: ...
    @overload
    def scrub_text(self, text: None) -> None: ...
    def scrub_text(self, text: str | None) -> str | None:
        """`text` with every DID in it (W3C syntax `did:method:id`) replaced by `hmac:<pseudonym>`:
        free text such as a reason or an unknown field may mention one."""
        if text is None or "did:" not in text:
            return text
        return DID_PATTERN.sub(lambda m: f"hmac:{self.hash(m.group())}", text)

    def scrub(self, value: Any) -> Any:
        """Replace every DID inside `value` (strings, nested dicts and lists) by its pseudonym."""
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub(v) for v in value]
        return value
