"""Audit rows of an operator's actions (dead letters replayed or discarded, offsets skipped).

They join the log like every other row: one chain per kind of action (`finpass.ops.<kind>:0`),
`performed_by_role` OPERATOR, who and why in `details` (an operator's name, never a DID).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from finpass_pipeline.audit.record import RETENTION_DAYS_DEFAULT, AuditRow, to_json


def operator_row(hash_key_id: str, *, resource_type: str, resource_id: str, event_type: str,
                 action: str, outcome: str, description: str, details: dict[str, Any],
                 error: str | None = None, previous: dict[str, Any] | None = None,
                 new: dict[str, Any] | None = None) -> AuditRow:
    row_id = uuid.uuid4()
    return AuditRow(
        id=row_id, event_type=event_type, user_id_hash=None, session_id=None, ip_address=None,
        user_agent=None, tenant_id=None, resource_id=resource_id[:255],
        resource_type=resource_type, action=action, outcome=outcome,
        severity="INFO" if outcome == "SUCCESS" else "WARNING", description=description[:1000],
        details=to_json(details), previous_values=to_json(previous), new_values=to_json(new),
        performed_by=None, performed_by_role="OPERATOR", source_system="finpass-pipeline",
        correlation_id=f"ops-{row_id}", request_id=None,
        error_code="STILL_INVALID" if error else None,
        error_message=error[:1000] if error else None, geolocation=None,
        device_fingerprint=None, retention_days=RETENTION_DAYS_DEFAULT, event_id=row_id,
        occurred_at=datetime.now(UTC), hash_key_id=hash_key_id)
