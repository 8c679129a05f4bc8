"""In-memory images of the domain rows a batch touches.

A batch loads the rows its events refer to, applies every event to these images in order (so the
state machine sees each earlier event of the batch), then writes the result back set-based: new
rows by COPY, changed rows by one `UPDATE ... FROM unnest(...)` per table.
"""

from __future__ import annotations

import functools
import operator
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

ROW_NAMESPACE = uuid.UUID("0c7a3b52-6f7e-4c1e-9a8e-2b9d4f1e6a33")


def user_id_for(did: str) -> uuid.UUID:
    """`users.id` is derived from the DID, so a replay into a fresh database writes the same ids."""
    return uuid.uuid5(ROW_NAMESPACE, f"user:{did}")


@dataclass(slots=True)
class UserRow:
    # Contact data is written sealed (`*_enc`) with blind indexes; the plaintext columns are
    # never written (docs/privacy.md).
    INSERT_COLUMNS: ClassVar[tuple[str, ...]] = (
        "id", "did", "created_at", "last_seen", "email_enc", "phone_enc", "email_index",
        "phone_index", "kyc_verified", "kyc_verified_at", "status", "metadata", "updated_at",
        "user_id_hash",
    )
    UPDATE_COLUMNS: ClassVar[tuple[str, ...]] = (
        "last_seen", "kyc_verified", "kyc_verified_at", "status", "metadata", "updated_at",
    )

    id: uuid.UUID
    did: str
    created_at: datetime
    last_seen: datetime | None = None
    email: str | None = None
    phone: str | None = None
    email_enc: bytes | None = None
    phone_enc: bytes | None = None
    email_index: str | None = None
    phone_index: str | None = None
    kyc_verified: bool = False
    kyc_verified_at: datetime | None = None
    status: str = "ACTIVE"
    metadata: str | None = None
    updated_at: datetime | None = None
    user_id_hash: str | None = None
    """Keyed pseudonym of `did` (= the audit rows' user_id_hash); written once, at insert."""
    is_new: bool = field(default=False, compare=False)
    dirty: bool = field(default=False, compare=False)


@dataclass(slots=True)
class CredentialRow:
    INSERT_COLUMNS: ClassVar[tuple[str, ...]] = (
        "id", "user_id", "issuer_id", "credential_type", "credential_jwt_enc", "issued_at",
        "expires_at", "status", "revoked_at", "revocation_handle", "revocation_reason",
        "revoked_by", "credential_hash", "nonce", "subject_did", "verification_method",
        "proof_type", "proof_created_at", "proof_purpose", "metadata", "created_at", "updated_at",
        "user_id_hash", "subject_id_hash",
    )
    UPDATE_COLUMNS: ClassVar[tuple[str, ...]] = (
        "status", "revoked_at", "revocation_reason", "revoked_by", "metadata", "updated_at",
    )

    id: uuid.UUID
    user_id: uuid.UUID
    user_did: str
    status: str = "VALID"
    status_reason: str | None = None
    status_changed_at: datetime | None = None
    issuer_id: str = ""
    credential_type: str = ""
    credential_jwt: str | None = None
    credential_jwt_enc: bytes | None = None
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    revocation_handle: str | None = None
    revocation_reason: str | None = None
    revoked_by: str | None = None
    credential_hash: str | None = None
    nonce: str | None = None
    subject_did: str | None = None
    verification_method: str | None = None
    proof_type: str | None = None
    proof_created_at: datetime | None = None
    proof_purpose: str | None = None
    metadata: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    user_id_hash: str | None = None
    """Pseudonym of the holder (`user_did`)."""
    subject_id_hash: str | None = None
    """Pseudonym of `subject_did`."""
    is_new: bool = field(default=False, compare=False)
    dirty: bool = field(default=False, compare=False)


@dataclass(slots=True)
class PaymentRow:
    INSERT_COLUMNS: ClassVar[tuple[str, ...]] = (
        "id", "payer_did", "payee_did", "amount", "currency", "status", "payment_type",
        "kyc_decision_token", "payment_method", "transaction_id", "reference_id", "description",
        "fee_amount", "tax_amount", "total_amount", "authorized_at", "captured_at", "failed_at",
        "refunded_at", "failure_reason", "refund_reason", "metadata", "created_at", "updated_at",
        "completed_at", "payer_id_hash", "payee_id_hash",
    )
    UPDATE_COLUMNS: ClassVar[tuple[str, ...]] = (
        "status", "transaction_id", "authorized_at", "captured_at", "failed_at", "refunded_at",
        "failure_reason", "refund_reason", "metadata", "updated_at", "completed_at",
    )

    id: uuid.UUID
    payer_did: str
    status: str = "PENDING"
    payee_did: str = ""
    amount: Decimal = Decimal(0)
    currency: str = "USD"
    payment_type: str = "ONE_TIME"
    kyc_decision_token: str | None = None
    payment_method: str | None = None
    transaction_id: str | None = None
    reference_id: str | None = None
    description: str | None = None
    fee_amount: Decimal | None = None
    tax_amount: Decimal | None = None
    total_amount: Decimal | None = None
    authorized_at: datetime | None = None
    captured_at: datetime | None = None
    failed_at: datetime | None = None
    refunded_at: datetime | None = None
    failure_reason: str | None = None
    refund_reason: str | None = None
    metadata: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    payer_id_hash: str | None = None
    payee_id_hash: str | None = None
    is_new: bool = field(default=False, compare=False)
    dirty: bool = field(default=False, compare=False)


Row = UserRow | CredentialRow | PaymentRow


@functools.cache
def _getter(columns: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    return operator.attrgetter(*columns)


def values(row: Row, columns: tuple[str, ...]) -> tuple[Any, ...]:
    """The row's values in `columns` order (one C-level attrgetter call per row)."""
    return _getter(columns)(row)


CREDENTIAL_STATUS_COLUMNS = ("id", "credential_id", "status", "reason", "status_changed_at",
                             "created_at", "updated_at")


def credential_status_id(credential_id: uuid.UUID) -> uuid.UUID:
    """`credential_status.id`, derived like `users.id` so a replay writes the same ids."""
    return uuid.uuid5(ROW_NAMESPACE, f"credential_status:{credential_id}")


@dataclass(frozen=True, slots=True)
class Insert:
    """One COPY: the table, its columns and the records in column order."""

    table: str
    columns: tuple[str, ...]
    records: list[tuple[Any, ...]]


def inserts(users: list[UserRow], credentials: list[CredentialRow], payments: list[PaymentRow]
            ) -> list[Insert]:
    """The COPYs that write the new rows among these images (those with `is_new`), in foreign-key
    order. The consumer's store and the bench's database ceiling both write with this, so the
    ceiling measures exactly what the pipeline writes."""
    new_creds = [r for r in credentials if r.is_new]
    return [
        Insert("users", UserRow.INSERT_COLUMNS,
               [values(r, UserRow.INSERT_COLUMNS) for r in users if r.is_new]),
        Insert("credentials", CredentialRow.INSERT_COLUMNS,
               [values(r, CredentialRow.INSERT_COLUMNS) for r in new_creds]),
        Insert("credential_status", CREDENTIAL_STATUS_COLUMNS,
               [(credential_status_id(r.id), r.id, r.status, r.status_reason,
                 r.status_changed_at, r.created_at, r.updated_at) for r in new_creds]),
        Insert("payments", PaymentRow.INSERT_COLUMNS,
               [values(r, PaymentRow.INSERT_COLUMNS) for r in payments if r.is_new]),
    ]
