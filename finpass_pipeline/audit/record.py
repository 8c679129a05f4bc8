"""Audit rows: the keyed pseudonym of a DID and the `audit_events` record for an applied event.

No raw DID ever reaches `audit_events`: subjects and actors are pseudonymised with
HMAC-SHA-256 under `FINPASS_AUDIT_HASH_KEY`, and the key's id is recorded beside the hash so keys
can rotate without rewriting history.
"""

from __future__ import annotations

import hashlib
import hmac
import operator
import re
import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from functools import lru_cache
from typing import Any, overload

import pydantic_core

# Retention per audit row (the seed's `retention_days`): security events a year, the rest
# seven years (typical AML / PSD2 record-keeping). `audit retention` honours the per-row value.
RETENTION_DAYS_DEFAULT = 2555
RETENTION_DAYS_SECURITY = 365

# Widths of audit_events' free-text columns (V2), which text copied from an event must fit once
# its DIDs are pseudonymised; the mark ends a shortened value (the whole is in details).
AUDIT_TEXT_WIDTHS = {
    "session_id": 255, "user_agent": 500, "tenant_id": 255, "resource_id": 255,
    "description": 1000, "performed_by_role": 100, "error_message": 1000, "geolocation": 255,
    "device_fingerprint": 255,
}
TRUNCATION_MARK = "…"

# A DID per W3C DID Core: "did:" method ":" method-specific-id (colon-separated segments).
DID_PATTERN = re.compile(r"did:[a-z0-9]+:(?:[A-Za-z0-9._%-]*:)*[A-Za-z0-9._%-]+")


class Pseudonymizer:
    """HMAC-SHA-256 of a DID under one key: 64 lowercase hex characters."""

    def __init__(self, key: bytes, key_id: str) -> None:
        self.key_id = key_id
        self._key = key
        self.hash = lru_cache(maxsize=65_536)(self._hash)

    def _hash(self, did: str) -> str:
        return hmac.new(self._key, did.encode(), hashlib.sha256).hexdigest()

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


def to_json(value: dict[str, Any] | None) -> str | None:
    """Compact JSON (Rust encoder: this runs three times per audit row). Key order is the order
    the code builds the dict in, so the text is deterministic for a replay."""
    if not value:
        return None
    return pydantic_core.to_json(value).decode()


@dataclass(slots=True)
class AuditRow:
    """One `audit_events` row; field order is the COPY column order."""

    id: uuid.UUID
    event_type: str
    user_id_hash: str | None
    session_id: str | None
    ip_address: str | None
    user_agent: str | None
    tenant_id: str | None
    resource_id: str | None
    resource_type: str | None
    action: str
    outcome: str
    severity: str
    description: str | None
    details: str | None
    previous_values: str | None
    new_values: str | None
    performed_by: str | None
    performed_by_role: str | None
    source_system: str
    correlation_id: str
    request_id: str | None
    error_code: str | None
    error_message: str | None
    geolocation: str | None
    device_fingerprint: str | None
    retention_days: int
    event_id: uuid.UUID
    occurred_at: datetime
    hash_key_id: str

    def record(self) -> tuple[Any, ...]:
        return _AUDIT_GETTER(self)


AUDIT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(AuditRow))
_AUDIT_GETTER = operator.attrgetter(*AUDIT_COLUMNS)
