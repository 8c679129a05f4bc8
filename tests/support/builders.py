"""Valid events for tests, from one module: fresh ids on each call, any field overridable.

Two ways to build them:

- Per-type factories (`user_registered`, `payment_initiated`, ... and `FACTORIES`): every field
  set, time-ordered ids and the current time. Every factory takes the identifiers of its
  aggregate first (a fresh one when omitted), then keyword overrides. A keyword naming an
  envelope field (`event_id`, `occurred_at`, `correlation_id`, `causation_id`,
  `source_system`, `tenant_id`, `actor`, `schema_version`) sets the envelope; any other keyword
  sets a `data` field. A name the contract does not define becomes an extra `data` field, as a
  newer producer would send. Money may be given as a string or Decimal.

      reg = user_registered(email="a@example.com")
      pay = payment_initiated(payer_did=reg.data.did, amount="1250.00", occurred_at=t0)
      cap = payment_captured(pay.data.payment_id, occurred_at=t0 + timedelta(seconds=1))

- Compact builders on a fixed clock, for consumer tests (`ev`, `registered`, `issued`,
  `initiated`): `at` is seconds after `T0` for `occurred_at`, and every other keyword but
  `event_id`, `actor` and `correlation_id` is a `data` field.

      ev("payment.captured", payment_id=pid, at=3)

`NEW_EVENT_DATA` is `data` for every event type, for `producers.publisher.new_event`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID, uuid4

from uuid_utils.compat import uuid7

from finpass_pipeline.events import (
    EVENT_ADAPTER,
    Actor,
    CredentialExpired,
    CredentialIssued,
    CredentialReinstated,
    CredentialRevoked,
    CredentialSuspended,
    EventBase,
    LoginFailed,
    LoginSucceeded,
    PaymentAuthorized,
    PaymentCancelled,
    PaymentCaptured,
    PaymentFailed,
    PaymentInitiated,
    PaymentInitiatedV1,
    PaymentRefunded,
    UserErasureRequested,
    UserKycVerified,
    UserRegistered,
    UserSeen,
    UserStatusChanged,
)
from finpass_pipeline.events.wire_types import schema_version_of

E = TypeVar("E", bound=EventBase)

ENVELOPE_FIELDS = frozenset(EventBase.model_fields) - {"event_type", "data"}
ISSUER_DID = "did:example:issuer"


def new_id() -> UUID:
    """A fresh, time-ordered UUID (v7), as producers mint them."""
    return uuid7()


def new_did(label: str = "user") -> str:
    """A fresh DID, unique per call."""
    return f"did:example:{label}-{uuid4().hex[:16]}"


def actor(**overrides: Any) -> Actor:
    """An actor with every field set (override or set any to None)."""
    fields: dict[str, Any] = {
        "did": new_did("actor"),
        "role": "USER",
        "session_id": f"s-{uuid4().hex[:12]}",
        "ip_address": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) finpass-tests",
        "geolocation": "DE",
        "device_fingerprint": f"fp-{uuid4().hex[:16]}",
    }
    return Actor.model_validate(fields | overrides)


def build(cls: type[E], data: dict[str, Any], overrides: dict[str, Any]) -> E:
    """Validate an event of `cls` from default `data`, applying envelope and data overrides."""
    envelope: dict[str, Any] = {
        "event_id": new_id(),
        "schema_version": schema_version_of(cls),
        "occurred_at": datetime.now(UTC),
        "correlation_id": f"corr-{uuid4().hex[:12]}",
        "source_system": "finpass-tests",
    }
    data = dict(data)
    for name, value in overrides.items():
        (envelope if name in ENVELOPE_FIELDS else data)[name] = value
    return cls.model_validate({**envelope, "data": data})


# --- user.* ------------------------------------------------------------------------------------


def user_registered(did: str | None = None, **overrides: Any) -> UserRegistered:
    """`user.registered` for a fresh (or the given) DID."""
    data = {
        "did": did or new_did(),
        "email": f"{uuid4().hex[:10]}@example.com",
        "phone": "+49 30 1234567",
        "metadata": {"signup_channel": "web"},
    }
    return build(UserRegistered, data, overrides)


def user_kyc_verified(did: str | None = None, **overrides: Any) -> UserKycVerified:
    """`user.kyc_verified` (no `verified_at`: the consumer uses `occurred_at`)."""
    return build(UserKycVerified, {"did": did or new_did()}, overrides)


def user_status_changed(
    did: str | None = None, status: str = "SUSPENDED", **overrides: Any
) -> UserStatusChanged:
    """`user.status_changed` to `status`."""
    data = {"did": did or new_did(), "status": status, "reason": "risk review"}
    return build(UserStatusChanged, data, overrides)


def user_seen(did: str | None = None, **overrides: Any) -> UserSeen:
    """`user.seen`."""
    return build(UserSeen, {"did": did or new_did()}, overrides)


def user_erasure_requested(did: str | None = None, **overrides: Any) -> UserErasureRequested:
    """`user.erasure_requested`."""
    data = {"did": did or new_did(), "reason": "GDPR Art. 17 request"}
    return build(UserErasureRequested, data, overrides)


# --- credential.* ------------------------------------------------------------------------------


def fake_jwt(credential_id: UUID) -> str:
    """A JWT-shaped string, unique per credential (`credential_hash` is unique)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    header = part({"alg": "ES256", "typ": "JWT"})
    return f"{header}.{part({'jti': str(credential_id), 'iss': ISSUER_DID})}.c2lnbmF0dXJl"


def credential_issued(
    credential_id: UUID | None = None, user_did: str | None = None, **overrides: Any
) -> CredentialIssued:
    """`credential.issued` with every optional field set."""
    credential_id = credential_id or new_id()
    user_did = user_did or new_did()
    now = datetime.now(UTC)
    data = {
        "credential_id": credential_id,
        "user_did": user_did,
        "issuer_id": ISSUER_DID,
        "credential_type": "KycCredential",
        "credential_jwt": fake_jwt(credential_id),
        "expires_at": now + timedelta(days=365),
        "subject_did": user_did,
        "nonce": uuid4().hex,
        "revocation_handle": f"status-list-1#{uuid4().int % 100_000}",
        "verification_method": f"{ISSUER_DID}#key-1",
        "proof_type": "JsonWebSignature2020",
        "proof_created_at": now,
        "proof_purpose": "assertionMethod",
        "metadata": {"schema": "kyc/v1"},
    }
    return build(CredentialIssued, data, overrides)


def credential_revoked(
    credential_id: UUID | None = None, reason: str = "key compromised", **overrides: Any
) -> CredentialRevoked:
    """`credential.revoked`."""
    data = {"credential_id": credential_id or new_id(), "reason": reason, "revoked_by": ISSUER_DID}
    return build(CredentialRevoked, data, overrides)


def credential_suspended(
    credential_id: UUID | None = None, **overrides: Any
) -> CredentialSuspended:
    """`credential.suspended`."""
    data = {"credential_id": credential_id or new_id(), "reason": "under investigation"}
    return build(CredentialSuspended, data, overrides)


def credential_reinstated(
    credential_id: UUID | None = None, **overrides: Any
) -> CredentialReinstated:
    """`credential.reinstated`."""
    data = {"credential_id": credential_id or new_id(), "reason": "investigation closed"}
    return build(CredentialReinstated, data, overrides)


def credential_expired(credential_id: UUID | None = None, **overrides: Any) -> CredentialExpired:
    """`credential.expired`."""
    return build(CredentialExpired, {"credential_id": credential_id or new_id()}, overrides)


# --- payment.* ---------------------------------------------------------------------------------


def payment_initiated(
    payment_id: UUID | None = None,
    *,
    payer_did: str | None = None,
    payee_did: str | None = None,
    amount: Any = "10.00",
    currency: str = "USD",
    **overrides: Any,
) -> PaymentInitiatedV1:
    """`payment.initiated` in v1, as upstream producers send it (fee 0.30, tax 0.00 unless
    overridden); `payment_initiated_v2` for the current version."""
    data = {
        "payment_id": payment_id or new_id(),
        "payer_did": payer_did or new_did("payer"),
        "payee_did": payee_did or new_did("payee"),
        "amount": amount,
        "currency": currency,
        "payment_type": "ONE_TIME",
        "payment_method": "CARD",
        "reference_id": f"ref-{uuid4().hex[:10]}",
        "description": "Test payment",
        "kyc_decision_token": f"kyc-{uuid4().hex}",
        "fee_amount": "0.30",
        "tax_amount": "0.00",
    }
    return build(PaymentInitiatedV1, data, overrides)


def payment_initiated_v2(payment_id: UUID | None = None, **overrides: Any) -> PaymentInitiated:
    """`payment.initiated` in v2: `payment_initiated`'s event, upcast (same keywords, v1 names)."""
    return payment_initiated(payment_id, **overrides).upcast()


def payment_authorized(
    payment_id: UUID | None = None, transaction_id: str | None = None, **overrides: Any
) -> PaymentAuthorized:
    """`payment.authorized` with a fresh `transaction_id` (the column is unique)."""
    data = {
        "payment_id": payment_id or new_id(),
        "transaction_id": transaction_id or f"txn-{uuid4().hex}",
    }
    return build(PaymentAuthorized, data, overrides)


def payment_captured(payment_id: UUID | None = None, **overrides: Any) -> PaymentCaptured:
    """`payment.captured`."""
    return build(PaymentCaptured, {"payment_id": payment_id or new_id()}, overrides)


def payment_failed(
    payment_id: UUID | None = None, failure_reason: str = "card declined", **overrides: Any
) -> PaymentFailed:
    """`payment.failed`."""
    data = {"payment_id": payment_id or new_id(), "failure_reason": failure_reason}
    return build(PaymentFailed, data, overrides)


def payment_refunded(
    payment_id: UUID | None = None, refund_reason: str = "customer request", **overrides: Any
) -> PaymentRefunded:
    """`payment.refunded`."""
    data = {"payment_id": payment_id or new_id(), "refund_reason": refund_reason}
    return build(PaymentRefunded, data, overrides)


def payment_cancelled(payment_id: UUID | None = None, **overrides: Any) -> PaymentCancelled:
    """`payment.cancelled`."""
    data = {"payment_id": payment_id or new_id(), "reason": "payer cancelled"}
    return build(PaymentCancelled, data, overrides)


# --- auth.* ------------------------------------------------------------------------------------


def login_succeeded(
    did: str | None = None, session_id: str | None = None, **overrides: Any
) -> LoginSucceeded:
    """`auth.login_succeeded` with a fresh session id."""
    data = {"did": did or new_did(), "session_id": session_id or f"s-{uuid4().hex[:12]}"}
    return build(LoginSucceeded, data, overrides)


def login_failed(reason: str = "invalid signature", **overrides: Any) -> LoginFailed:
    """`auth.login_failed` for a fresh DID; `did=None` sends none (an unknown user)."""
    return build(LoginFailed, {"did": new_did(), "reason": reason}, overrides)


FACTORIES: dict[str, Callable[..., EventBase]] = {
    "user.registered": user_registered,
    "user.kyc_verified": user_kyc_verified,
    "user.status_changed": user_status_changed,
    "user.seen": user_seen,
    "user.erasure_requested": user_erasure_requested,
    "credential.issued": credential_issued,
    "credential.revoked": credential_revoked,
    "credential.suspended": credential_suspended,
    "credential.reinstated": credential_reinstated,
    "credential.expired": credential_expired,
    "payment.initiated": payment_initiated,
    "payment.authorized": payment_authorized,
    "payment.captured": payment_captured,
    "payment.failed": payment_failed,
    "payment.refunded": payment_refunded,
    "payment.cancelled": payment_cancelled,
    "auth.login_succeeded": login_succeeded,
    "auth.login_failed": login_failed,
}
"""`event_type` -> its factory, in contract order (`payment.initiated` in v1, as upstream
sends it)."""

CURRENT_FACTORIES: dict[str, Callable[..., EventBase]] = {
    **FACTORIES, "payment.initiated": payment_initiated_v2,
}
"""`event_type` -> a factory of its current version (`payment.initiated` in v2)."""


# --- compact builders on a fixed clock (consumer tests) ----------------------------------------

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def ev(event_type: str, *, at: int = 0, event_id: UUID | None = None,
       actor: dict[str, Any] | None = None, correlation_id: str | None = None,
       **data: Any) -> EventBase:
    """A valid event; `at` is seconds after T0 for `occurred_at`."""
    raw = {
        "event_id": str(event_id or uuid4()),
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": (T0 + timedelta(seconds=at)).isoformat(),
        "correlation_id": correlation_id or f"corr-{uuid4().hex[:8]}",
        "source_system": "tests",
        "actor": actor,
        "data": {k: (str(v) if isinstance(v, UUID) else v) for k, v in data.items()},
    }
    event: EventBase = EVENT_ADAPTER.validate_python(raw)
    return event


def registered(did: str, at: int = 0, **data: Any) -> EventBase:
    return ev("user.registered", at=at, did=did, **data)


def issued(credential_id: UUID, user_did: str, at: int = 0, **data: Any) -> EventBase:
    fields: dict[str, Any] = {"issuer_id": "did:web:issuer.example", "credential_type": "KYC",
                              "credential_jwt": f"jwt.{credential_id}.sig"}
    fields.update(data)
    return ev("credential.issued", at=at, credential_id=credential_id, user_did=user_did,
              **fields)


def initiated(payment_id: UUID, payer: str = "did:example:payer", at: int = 0,
              **data: Any) -> EventBase:
    fields: dict[str, Any] = {"payee_did": "did:example:payee", "amount": "100.00",
                              "currency": "EUR"}
    fields.update(data)
    return ev("payment.initiated", at=at, payment_id=payment_id, payer_did=payer, **fields)


# --- `data` for producers.publisher.new_event ----------------------------------------------------

PUBLISHER_DID = "did:example:publisher-test"
PUBLISHER_PAYMENT, PUBLISHER_CREDENTIAL = uuid4(), uuid4()
NEW_EVENT_DATA: dict[str, dict[str, Any]] = {
    "user.registered": {"did": PUBLISHER_DID, "email": "p@example.com",
                        "metadata": {"tier": "gold"}},
    "user.kyc_verified": {"did": PUBLISHER_DID},
    "user.status_changed": {"did": PUBLISHER_DID, "status": "SUSPENDED", "reason": "review"},
    "user.seen": {"did": PUBLISHER_DID},
    "user.erasure_requested": {"did": PUBLISHER_DID, "reason": "GDPR Art. 17 request"},
    "credential.issued": {"credential_id": PUBLISHER_CREDENTIAL, "user_did": PUBLISHER_DID,
                          "issuer_id": "did:web:issuer.example", "credential_type": "KYC",
                          "credential_jwt": "header.payload.signature"},
    "credential.revoked": {"credential_id": PUBLISHER_CREDENTIAL, "reason": "superseded"},
    "credential.suspended": {"credential_id": PUBLISHER_CREDENTIAL},
    "credential.reinstated": {"credential_id": PUBLISHER_CREDENTIAL},
    "credential.expired": {"credential_id": PUBLISHER_CREDENTIAL},
    "payment.initiated": {"payment_id": PUBLISHER_PAYMENT, "payer_did": PUBLISHER_DID,
                          "payee_did": "did:web:shop",
                          "amount": {"value": "1250.00", "currency": "EUR"},
                          "fee_amount": "0.35"},
    "payment.authorized": {"payment_id": PUBLISHER_PAYMENT, "transaction_id": "txn-1"},
    "payment.captured": {"payment_id": PUBLISHER_PAYMENT},
    "payment.failed": {"payment_id": PUBLISHER_PAYMENT, "failure_reason": "declined"},
    "payment.refunded": {"payment_id": PUBLISHER_PAYMENT, "refund_reason": "returned"},
    "payment.cancelled": {"payment_id": PUBLISHER_PAYMENT},
    "auth.login_succeeded": {"did": PUBLISHER_DID, "session_id": "s-1"},
    "auth.login_failed": {"reason": "invalid password"},  # no DID: keyed by the session id
}
"""`event_type` -> a `data` for `new_event`: every event type of the contract, one subject."""
