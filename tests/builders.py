"""Compact event builders for consumer tests: `ev("payment.captured", payment_id=...)`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from finpass_pipeline.events import EVENT_ADAPTER, EventBase

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def ev(event_type: str, *, at: int = 0, event_id: uuid.UUID | None = None,
       actor: dict[str, Any] | None = None, correlation_id: str | None = None,
       **data: Any) -> EventBase:
    """A valid event; `at` is seconds after T0 for `occurred_at`."""
    raw = {
        "event_id": str(event_id or uuid.uuid4()),
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": (T0 + timedelta(seconds=at)).isoformat(),
        "correlation_id": correlation_id or f"corr-{uuid.uuid4().hex[:8]}",
        "source_system": "tests",
        "actor": actor,
        "data": {k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in data.items()},
    }
    event: EventBase = EVENT_ADAPTER.validate_python(raw)
    return event


def registered(did: str, at: int = 0, **data: Any) -> EventBase:
    return ev("user.registered", at=at, did=did, **data)


def issued(credential_id: uuid.UUID, user_did: str, at: int = 0, **data: Any) -> EventBase:
    fields: dict[str, Any] = {"issuer_id": "did:web:issuer.example", "credential_type": "KYC",
                              "credential_jwt": f"jwt.{credential_id}.sig"}
    fields.update(data)
    return ev("credential.issued", at=at, credential_id=credential_id, user_did=user_did,
              **fields)


def initiated(payment_id: uuid.UUID, payer: str = "did:example:payer", at: int = 0,
              **data: Any) -> EventBase:
    fields: dict[str, Any] = {"payee_did": "did:example:payee", "amount": "100.00",
                              "currency": "EUR"}
    fields.update(data)
    return ev("payment.initiated", at=at, payment_id=payment_id, payer_did=payer, **fields)
