"""The `audit_events` record for an applied event: its columns, widths and retention.

No raw DID ever reaches `audit_events`: subjects and actors enter as their pseudonym
(`finpass_pipeline.audit.pseudonym`), with the key's id beside it.
"""

from __future__ import annotations

import operator
import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

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

PERSONAL_COLUMNS: tuple[str, ...] = (
    "session_id", "ip_address", "user_agent", "geolocation", "device_fingerprint", "details",
    "error_message",
)
"""The personal columns of `audit_events`, in digest order (V14, docs/audit.md §6): the chain
(hash version 2) and the Merkle leaf commit to them only through `pii_digest` =
SHA-256(pii_salt || canonical JSON array of these values), so that erasure
(`audit.redaction.erase_rows`) can NULL them and the salt while every proof stays valid."""

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
