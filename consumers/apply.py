"""What each event does to the tables (CONTRACT.md §3), applied to in-memory row images.

Pure logic: `Applier.apply` looks only at `BatchState` (rows loaded by the store) and records the
changes and the one audit row per applied event. The store writes the result set-based in the
batch's transaction. An event whose subject does not exist yet is *parked* (kept in
`parked_events`) and applied, in its original order, in the transaction that creates the subject.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeAlias, assert_never

from consumers.records import Incoming
from consumers.rows import CredentialRow, PaymentRow, UserRow, user_id_for
from finpass_pipeline.audit.pseudonym import Pseudonymizer
from finpass_pipeline.audit.record import (
    AUDIT_TEXT_WIDTHS,
    RETENTION_DAYS_DEFAULT,
    RETENTION_DAYS_SECURITY,
    TRUNCATION_MARK,
    AuditRow,
    to_json,
)
from finpass_pipeline.events import (
    CredentialExpired,
    CredentialIssued,
    CredentialReinstated,
    CredentialRevoked,
    CredentialSuspended,
    Event,
    LoginFailed,
    LoginSucceeded,
    PaymentAuthorized,
    PaymentCancelled,
    PaymentCaptured,
    PaymentFailed,
    PaymentInitiated,
    PaymentRefunded,
    UserErasureRequested,
    UserKycVerified,
    UserRegistered,
    UserSeen,
    UserStatusChanged,
    audit_event_type,
)
from finpass_pipeline.events.models import EventData, Subject
from finpass_pipeline.privacy.erasure import pseudonym_of, strip_audit_actor

# Payment status moves only forward (CONTRACT §3).
PAYMENT_TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "payment.authorized": (frozenset({"PENDING"}), "AUTHORIZED"),
    "payment.captured": (frozenset({"AUTHORIZED"}), "CAPTURED"),
    "payment.refunded": (frozenset({"CAPTURED"}), "REFUNDED"),
    "payment.failed": (frozenset({"PENDING", "AUTHORIZED"}), "FAILED"),
    "payment.cancelled": (frozenset({"PENDING", "AUTHORIZED"}), "CANCELLED"),
}
# Credentials: REVOKED is final; EXPIRED is final except that it may still be revoked (a
# revocation list outlives expiry); SUSPENDED ↔ VALID.
CREDENTIAL_TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "credential.revoked": (frozenset({"VALID", "SUSPENDED", "EXPIRED"}), "REVOKED"),
    "credential.suspended": (frozenset({"VALID"}), "SUSPENDED"),
    "credential.reinstated": (frozenset({"SUSPENDED"}), "VALID"),
    "credential.expired": (frozenset({"VALID", "SUSPENDED"}), "EXPIRED"),
}
CredentialTransition: TypeAlias = (
    CredentialRevoked | CredentialSuspended | CredentialReinstated | CredentialExpired)
PaymentTransition: TypeAlias = (
    PaymentAuthorized | PaymentCaptured | PaymentFailed | PaymentRefunded | PaymentCancelled)


@dataclass
class BatchState:
    """Row images for one transaction. A key mapped to None is known not to exist."""

    users: dict[str, UserRow | None] = field(default_factory=dict)
    credentials: dict[str, CredentialRow | None] = field(default_factory=dict)
    payments: dict[str, PaymentRow | None] = field(default_factory=dict)
    audit: list[AuditRow] = field(default_factory=list)
    applied: list[Incoming] = field(default_factory=list)
    to_park: list[tuple[Incoming, Subject]] = field(default_factory=list)
    created: list[Subject] = field(default_factory=list)
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)
    rejected: list[tuple[Event, str]] = field(default_factory=list)
    """(event, why) for each event audited REJECTED: the daemon logs them."""
    erased: set[str] = field(default_factory=set)
    """Pseudonyms of the erased people among those the batch mentions (and those it erases)."""
    erasures: list[tuple[str, str, UserErasureRequested]] = field(default_factory=list)
    """(DID, pseudonym, event) of each erasure applied, in order: the store erases what is
    stored in the same transaction."""

    def exists(self, subject: Subject) -> bool:
        table: dict[str, Any] = getattr(self, subject.kind + "s")
        return table.get(subject.key) is not None

    def known(self, subject: Subject) -> bool:
        table: dict[str, Any] = getattr(self, subject.kind + "s")
        return subject.key in table


def _metadata(base: dict[str, Any] | None, extra: dict[str, Any], existing: str | None = None
              ) -> str | None:
    if not base and not extra and not existing:
        return "{}"  # what the general path below writes for nothing to merge, without JSON
    merged: dict[str, Any] = json.loads(existing) if existing else {}
    merged.update(base or {})
    merged.update(extra)
    return json.dumps(merged, sort_keys=True, separators=(",", ":"), default=str) or None


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class Applier:
    """Applies events to a `BatchState`, writing exactly one audit row per applied event."""

    def __init__(self, pseudonymizer: Pseudonymizer) -> None:
        self.pz = pseudonymizer

    def apply(self, state: BatchState, incoming: Incoming) -> str:
        """Apply one event: returns APPLIED, REJECTED or PARKED."""
        event = incoming.event
        needed = event.requires()
        if needed is not None and not state.exists(needed):
            state.to_park.append((incoming, needed))
            return "PARKED"
        effect = self._effect(state, event)
        audit = self._audit_row(event, effect)
        if state.erased and (audit.user_id_hash in state.erased
                             or audit.performed_by in state.erased):
            strip_audit_actor(audit)  # an erased person's later events: no personal data
        state.audit.append(audit)
        state.applied.append(incoming)
        key = (event.event_type, effect.outcome)
        state.outcomes[key] = state.outcomes.get(key, 0) + 1
        if effect.outcome == "REJECTED":
            state.rejected.append((event, effect.error_message or ""))
        return "REJECTED" if effect.outcome == "REJECTED" else "APPLIED"

    def _effect(self, state: BatchState, event: Event) -> _Effect:
        """Dispatch on the model: each handler sees its own event type (mypy checks the match
        is exhaustive over `Event`)."""
        match event:
            case UserRegistered():
                return self._user_registered(state, event)
            case UserKycVerified():
                return self._user_kyc_verified(state, event)
            case UserStatusChanged():
                return self._user_status_changed(state, event)
            case UserSeen() | LoginSucceeded():
                return self._user_seen(state, event)
            case UserErasureRequested():
                return self._user_erasure_requested(state, event)
            case LoginFailed():
                return self._login_failed(event)
            case CredentialIssued():
                return self._credential_issued(state, event)
            case CredentialRevoked() | CredentialSuspended() | CredentialReinstated() | (
                    CredentialExpired()):
                return self._credential_transition(state, event)
            case PaymentInitiated():
                return self._payment_initiated(state, event)
            case PaymentAuthorized() | PaymentCaptured() | PaymentFailed() | PaymentRefunded() | (
                    PaymentCancelled()):
                return self._payment_transition(state, event)
            case _:
                assert_never(event)

    # --- users -----------------------------------------------------------------------------

    def _user_registered(self, state: BatchState, e: UserRegistered) -> _Effect:
        d = e.data
        if state.users.get(d.did) is not None:
            existing = state.users[d.did]
            assert existing is not None  # noqa: S101  (narrowing for mypy)
            return _rejected("USER", str(existing.id), d.did, "DUPLICATE_REGISTRATION",
                             "user already registered")
        # One HMAC for the row's pseudonym and the audit row's user_id_hash.
        hashed = self.pz.hash(d.did)
        row = UserRow(id=user_id_for(d.did), did=d.did, created_at=e.occurred_at,
                      email=d.email, phone=d.phone,
                      metadata=_metadata(d.metadata, d.extra_fields()),
                      updated_at=e.occurred_at, user_id_hash=hashed, is_new=True)
        state.users[d.did] = row
        state.created.append(Subject("user", d.did))
        return _Effect("USER", str(row.id), d.did, new={"status": "ACTIVE",
                       "kyc_verified": False}, description="user registered",
                       subject_hash=hashed)

    def _user(self, state: BatchState, did: str) -> UserRow:
        row = state.users[did]
        assert row is not None  # noqa: S101  (apply() parks events whose user is missing)
        return row

    def _touch(self, row: UserRow | CredentialRow | PaymentRow, when: datetime) -> None:
        row.dirty = True
        if row.updated_at is None or when > row.updated_at:
            row.updated_at = when

    def _user_kyc_verified(self, state: BatchState, e: UserKycVerified) -> _Effect:
        row = self._user(state, e.data.did)
        when = e.data.verified_at or e.occurred_at
        before = {"kyc_verified": row.kyc_verified, "kyc_verified_at": _ts(row.kyc_verified_at)}
        row.kyc_verified, row.kyc_verified_at = True, when
        self._merge_extra(row, e.data)
        self._touch(row, e.occurred_at)
        return _Effect("USER", str(row.id), row.did, previous=before,
                       new={"kyc_verified": True, "kyc_verified_at": _ts(when)},
                       description="KYC verified")

    def _user_status_changed(self, state: BatchState, e: UserStatusChanged) -> _Effect:
        row = self._user(state, e.data.did)
        before = row.status
        row.status = e.data.status
        self._merge_extra(row, e.data)
        self._touch(row, e.occurred_at)
        severity = "WARNING" if row.status != "ACTIVE" else "INFO"
        return _Effect("USER", str(row.id), row.did, previous={"status": before},
                       new={"status": row.status}, severity=severity,
                       description=f"user status {before} -> {row.status}",
                       details={"reason": e.data.reason} if e.data.reason else None)

    def _user_seen(self, state: BatchState, e: UserSeen | LoginSucceeded) -> _Effect:
        row = self._user(state, e.data.did)
        before = row.last_seen
        if before is None or e.occurred_at > before:  # last_seen never moves backwards
            row.last_seen = e.occurred_at
            self._touch(row, e.occurred_at)
        login = isinstance(e, LoginSucceeded)
        session = e.data.session_id if isinstance(e, LoginSucceeded) else None
        return _Effect("SESSION" if login else "USER", session or str(row.id),
                       row.did, previous={"last_seen": _ts(before)},
                       new={"last_seen": _ts(row.last_seen)},
                       description="login succeeded" if login else "user seen")

    def _user_erasure_requested(self, state: BatchState, e: UserErasureRequested) -> _Effect:
        """Marks the person erased; the store redacts and crypto-shreds in this transaction.
        The reason is not copied into the audit row (free text about the person)."""
        did = e.data.did
        pseudonym = self.pz.hash(did)
        again = pseudonym in state.erased
        state.erased.add(pseudonym)
        state.erasures.append((did, pseudonym, e))
        row = state.users.get(did)
        return _Effect("USER", str(row.id if row is not None else user_id_for(did)), did,
                       new={"erased": True}, severity="WARNING",
                       description="personal data already erased" if again
                       else "personal data erased",
                       details={"registered": row is not None, "already_erased": again})

    def _login_failed(self, e: LoginFailed) -> _Effect:
        d = e.data
        return _Effect("SESSION", e.session_id(), d.did, outcome="FAILURE", severity="WARNING",
                       description="login failed", error_code="LOGIN_FAILED",
                       error_message=d.reason)

    def _merge_extra(self, row: UserRow | CredentialRow | PaymentRow, data: EventData) -> None:
        extra = data.extra_fields()
        if extra:
            row.metadata = _metadata(None, extra, row.metadata)

    # --- credentials -----------------------------------------------------------------------

    def _credential_issued(self, state: BatchState, e: CredentialIssued) -> _Effect:
        d = e.data
        key = d.subject_key
        user = self._user(state, d.user_did)
        if state.credentials.get(key) is not None:
            return _rejected("CREDENTIAL", key, d.user_did, "DUPLICATE_CREDENTIAL",
                             "credential already issued")
        holder = pseudonym_of(self.pz, user.did)  # the stored DID: `hmac:…` once erased
        subject = (holder if d.subject_did == user.did else self.pz.maybe(d.subject_did))
        row = CredentialRow(
            id=d.credential_id, user_id=user.id, user_did=user.did, status="VALID",
            status_changed_at=e.occurred_at, issuer_id=d.issuer_id,
            credential_type=d.credential_type, credential_jwt=d.credential_jwt,
            issued_at=e.occurred_at, expires_at=d.expires_at,
            revocation_handle=d.revocation_handle,
            credential_hash=hashlib.sha256(d.credential_jwt.encode()).hexdigest(),
            nonce=d.nonce, subject_did=d.subject_did, verification_method=d.verification_method,
            proof_type=d.proof_type, proof_created_at=d.proof_created_at,
            proof_purpose=d.proof_purpose, metadata=_metadata(d.metadata, d.extra_fields()),
            created_at=e.occurred_at, updated_at=e.occurred_at, user_id_hash=holder,
            subject_id_hash=subject, is_new=True,
        )
        state.credentials[key] = row
        state.created.append(Subject("credential", key))
        return _Effect("CREDENTIAL", key, user.did,
                       new={"status": "VALID", "credential_type": d.credential_type,
                            "expires_at": _ts(d.expires_at)},
                       details={"issuer_id": d.issuer_id}, description="credential issued",
                       subject_hash=holder)

    def _credential_transition(self, state: BatchState, e: CredentialTransition) -> _Effect:
        d = e.data
        key = d.subject_key
        row = state.credentials[key]
        assert row is not None  # noqa: S101  (parked otherwise)
        allowed, target = CREDENTIAL_TRANSITIONS[e.event_type]
        reason = None if isinstance(e, CredentialExpired) else e.data.reason
        if row.status not in allowed:
            return _rejected("CREDENTIAL", key, row.user_did, "INVALID_TRANSITION",
                             f"credential {row.status} -> {target} is not allowed",
                             previous={"status": row.status})
        before = row.status
        row.status, row.status_reason, row.status_changed_at = target, reason, e.occurred_at
        if isinstance(e, CredentialRevoked):
            row.revoked_at, row.revocation_reason = e.occurred_at, reason
            row.revoked_by = e.data.revoked_by
        self._merge_extra(row, d)
        self._touch(row, e.occurred_at)
        return _Effect("CREDENTIAL", key, row.user_did, previous={"status": before},
                       new={"status": target}, description=f"credential {before} -> {target}",
                       details={"reason": reason} if reason else None,
                       severity="WARNING" if target in ("REVOKED", "SUSPENDED") else "INFO")

    # --- payments --------------------------------------------------------------------------

    def _payment_initiated(self, state: BatchState, e: PaymentInitiated) -> _Effect:
        d = e.data
        key = d.subject_key
        if state.payments.get(key) is not None:
            return _rejected("PAYMENT", key, d.payer_did, "DUPLICATE_PAYMENT",
                             "payment already initiated")
        amount, currency = d.amount.value, d.amount.currency
        total = amount + (d.fee_amount or Decimal(0)) + (d.tax_amount or Decimal(0))
        payer, payee = self.pz.hash(d.payer_did), self.pz.hash(d.payee_did)
        row = PaymentRow(
            id=d.payment_id, payer_did=d.payer_did, payee_did=d.payee_did, amount=amount,
            currency=currency, status="PENDING", payment_type=d.payment_type,
            kyc_decision_token=d.kyc_decision_token, payment_method=d.payment_method,
            reference_id=d.merchant_reference, description=d.description,
            fee_amount=d.fee_amount,
            tax_amount=d.tax_amount, total_amount=total,
            metadata=_metadata(None, d.extra_fields()), created_at=e.occurred_at,
            updated_at=e.occurred_at, payer_id_hash=payer, payee_id_hash=payee, is_new=True,
        )
        state.payments[key] = row
        state.created.append(Subject("payment", key))
        return _Effect("PAYMENT", key, d.payer_did,
                       new={"status": "PENDING", "amount": str(amount),
                            "currency": currency, "total_amount": str(total),
                            "payment_type": d.payment_type},
                       details={"payee": payee}, description="payment initiated",
                       subject_hash=payer)

    def _payment_transition(self, state: BatchState, e: PaymentTransition) -> _Effect:
        d = e.data
        key = d.subject_key
        row = state.payments[key]
        assert row is not None  # noqa: S101  (parked otherwise)
        allowed, target = PAYMENT_TRANSITIONS[e.event_type]
        if row.status not in allowed:
            return _rejected("PAYMENT", key, row.payer_did, "INVALID_TRANSITION",
                             f"payment {row.status} -> {target} is not allowed",
                             previous={"status": row.status})
        before, at = row.status, e.occurred_at
        row.status = target
        new: dict[str, Any] = {"status": target}
        reason: str | None = None
        if isinstance(e, PaymentAuthorized):
            row.authorized_at = at
            if e.data.transaction_id:
                row.transaction_id = e.data.transaction_id
                new["transaction_id"] = e.data.transaction_id
        elif isinstance(e, PaymentCaptured):
            row.captured_at = row.completed_at = at
        elif isinstance(e, PaymentFailed):
            row.failed_at, row.failure_reason = at, e.data.failure_reason
            reason = e.data.failure_reason
        elif isinstance(e, PaymentRefunded):
            row.refunded_at, row.refund_reason = at, e.data.refund_reason
            reason = e.data.refund_reason
        else:
            reason = e.data.reason
        self._merge_extra(row, d)
        self._touch(row, at)
        return _Effect("PAYMENT", key, row.payer_did, previous={"status": before}, new=new,
                       description=f"payment {before} -> {target}",
                       details={"reason": reason} if reason else None,
                       severity="WARNING" if target == "FAILED" else "INFO")

    # --- audit -----------------------------------------------------------------------------

    def _details_json(self, details: dict[str, Any]) -> str | None:
        """`details` as JSON with any DID replaced by its pseudonym. The substring test is the
        fast path: the recursive scrub runs only when a DID-looking string is present."""
        text = to_json(details)
        if text is not None and "did:" in text:
            text = to_json(self.pz.scrub(details))
        return text

    def _audit_row(self, e: Event, effect: _Effect) -> AuditRow:
        # The hot path's biggest Python step: plain locals, positional construction, and the
        # free-text check cheap (`_fit` only for text that mentions a DID or is too long).
        actor = e.actor
        details = dict(effect.details) if effect.details else {}
        extra = e.data.__pydantic_extra__
        if extra:
            details["extra"] = dict(extra)
        if e.causation_id:
            details["causation_id"] = str(e.causation_id)
        if actor is not None:
            ip, by = actor.ip_address, (self.pz.hash(actor.did) if actor.did else None)
            texts = [e.session_id(), e.tenant_id, effect.resource_id, effect.description,
                     effect.error_message, actor.user_agent, actor.role, actor.geolocation,
                     actor.device_fingerprint]
        else:
            ip = by = None
            texts = [e.session_id(), e.tenant_id, effect.resource_id, effect.description,
                     effect.error_message, None, None, None, None]
        overflow: dict[str, str] = {}
        for i, text in enumerate(texts):
            if text is not None and ("did:" in text or len(text) > _TEXT_WIDTHS[i]):
                texts[i] = self._fit(_TEXT_COLUMNS[i], text, overflow)
        session, tenant, resource, description, error, agent, role, geo, device = texts
        subject = effect.subject_hash
        if subject is None and effect.subject_did:
            subject = pseudonym_of(self.pz, effect.subject_did)
        if overflow:
            details["full_text"] = overflow
        event_type = e.event_type
        # One audit row per event: the event id is a natural, replay-stable row id.
        return AuditRow(
            e.event_id, audit_event_type(event_type), subject,
            session, ip, agent, tenant, resource, effect.resource_type, e.action,
            effect.outcome, effect.severity, description,
            self._details_json(details) if details else None,
            to_json(effect.previous), to_json(effect.new), by, role, e.source_system,
            e.correlation_id, None, effect.error_code, error, geo, device,
            RETENTION_DAYS_SECURITY if event_type.startswith("auth.")
            else RETENTION_DAYS_DEFAULT,
            e.event_id, e.occurred_at, self.pz.key_id)

    def _fit(self, column: str, text: str, overflow: dict[str, str]) -> str:
        """Free text from the event may mention a DID; its pseudonym is longer (`hmac:` and 64
        hex), so text that fitted its column may no longer fit. The column keeps a marked
        prefix, `details.full_text` the whole (pseudonymised) text: the event is applied,
        nothing is lost, and the database never refuses the row."""
        clean = self.pz.scrub_text(text)
        width = AUDIT_TEXT_WIDTHS[column]
        if len(clean) <= width:
            return clean
        overflow[column] = clean
        return clean[:width - len(TRUNCATION_MARK)] + TRUNCATION_MARK


_TEXT_COLUMNS = ("session_id", "tenant_id", "resource_id", "description", "error_message",
                 "user_agent", "performed_by_role", "geolocation", "device_fingerprint")
"""The free-text columns `_audit_row` fills, in its order."""
_TEXT_WIDTHS = tuple(AUDIT_TEXT_WIDTHS[c] for c in _TEXT_COLUMNS)


@dataclass(slots=True)
class _Effect:
    resource_type: str
    resource_id: str | None
    subject_did: str | None
    outcome: str = "SUCCESS"
    severity: str = "INFO"
    description: str | None = None
    previous: dict[str, Any] | None = None
    new: dict[str, Any] | None = None
    details: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    subject_hash: str | None = None
    """The pseudonym of `subject_did`, when the handler already computed it for a row."""


def _rejected(resource_type: str, resource_id: str, did: str | None, code: str, message: str,
              previous: dict[str, Any] | None = None) -> _Effect:
    """A disallowed change: no domain row moves; audited REJECTED / WARNING."""
    return _Effect(resource_type, resource_id, did, outcome="REJECTED", severity="WARNING",
                   description=message, previous=previous, error_code=code,
                   error_message=message)
