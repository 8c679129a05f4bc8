"""The event models of CONTRACT.md §2 and §3: the envelope, the actor and each type's `data`.

Import them from `finpass_pipeline.events`, which adds the `Event` union and the wire codec.
Lengths match the database columns, so a value that could not be stored fails validation rather
than a transaction. Unknown envelope and actor fields are ignored; unknown `data` fields are kept
(`EventData.extra_fields()`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from finpass_pipeline.money import Money, PositiveMoney, check_total

# --- field types -------------------------------------------------------------------------------


def _timestamp_input(value: Any) -> Any:
    # Refuse epoch numbers, which pydantic would otherwise read as UTC: the contract says RFC 3339.
    if isinstance(value, str | datetime):
        return value
    raise PydanticCustomError("timestamp_type", "must be an RFC 3339 timestamp string")


def _in_utc(value: datetime) -> datetime:
    if value.utcoffset() is None:
        raise PydanticCustomError("timezone_offset_required", "timezone offset required")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, BeforeValidator(_timestamp_input), AfterValidator(_in_utc)]
"""An RFC 3339 timestamp with an offset, held as an aware datetime in UTC."""

Text = Annotated[str, StringConstraints(min_length=1)]
"""A required, non-empty string with no length limit (a `TEXT` column, e.g. a DID)."""


Reason100 = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Reason500 = Annotated[str, StringConstraints(min_length=1, max_length=500)]
Reason1000 = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
"""Required, non-empty reasons sized to their columns (VARCHAR(100), (500), audit (1000))."""


class UserStatus(StrEnum):
    """`users.status` values that `user.status_changed` may set."""

    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    TERMINATED = "TERMINATED"


class PaymentType(StrEnum):
    """`payments.payment_type` values."""

    ONE_TIME = "ONE_TIME"
    RECURRING = "RECURRING"
    SUBSCRIPTION = "SUBSCRIPTION"


# --- envelope ----------------------------------------------------------------------------------


class Actor(BaseModel):
    """Who did it and from where; every field optional. Feeds the audit row's actor columns."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    did: str | None = None  # pseudonymised before storage, so no column length applies
    role: str | None = Field(default=None, max_length=100)
    session_id: str | None = Field(default=None, max_length=255)
    ip_address: str | None = Field(default=None, max_length=45)
    user_agent: str | None = Field(default=None, max_length=500)
    geolocation: str | None = Field(default=None, max_length=255)
    device_fingerprint: str | None = Field(default=None, max_length=255)


class EventData(BaseModel):
    """Base of every event's `data`. Unknown fields are kept (see `extra_fields`)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    def extra_fields(self) -> dict[str, Any]:
        """The fields this contract version does not define, as received (for `metadata`)."""
        return dict(self.model_extra) if self.model_extra else {}


def _envelope_keys_required(schema: dict[str, Any]) -> None:
    # `event_type` has a Python default (the class decides it), but on the wire it is required.
    required = schema.get("required")
    if isinstance(required, list) and "event_type" not in required:
        required.insert(0, "event_type")
    event_type = schema.get("properties", {}).get("event_type")
    if isinstance(event_type, dict):
        event_type.pop("default", None)


class EventBase(BaseModel):
    """The envelope (CONTRACT.md §2), shared by every event model. Frozen: an event is a fact.

    Each subclass fixes `event_type` (a `Literal` with that default, so Python code need not pass
    it; on the wire it is required) and the type of `data`. Unknown envelope fields are ignored.
    """

    model_config = ConfigDict(
        extra="ignore", frozen=True, json_schema_extra=_envelope_keys_required
    )

    event_id: UUID
    event_type: str
    schema_version: Literal[1]
    occurred_at: UtcDatetime
    correlation_id: str = Field(min_length=1, max_length=255)
    causation_id: UUID | None = None
    source_system: str = Field(min_length=1, max_length=100)
    tenant_id: str | None = Field(default=None, max_length=255)
    actor: Actor | None = None
    data: EventData


# --- user.* ------------------------------------------------------------------------------------


class UserRegisteredData(EventData):
    """`user.registered`: insert `users` (status ACTIVE)."""

    did: Text
    email: str | None = Field(default=None, max_length=255)
    phone: str | None = Field(default=None, max_length=50)
    metadata: dict[str, Any] | None = None


class UserKycVerifiedData(EventData):
    """`user.kyc_verified`: `kyc_verified`, `kyc_verified_at` (= `verified_at` or `occurred_at`)."""

    did: Text
    verified_at: UtcDatetime | None = None


class UserStatusChangedData(EventData):
    """`user.status_changed`: `users.status`."""

    did: Text
    status: UserStatus
    reason: str | None = Field(default=None, max_length=500)


class UserSeenData(EventData):
    """`user.seen`: `users.last_seen` (never moves backwards)."""

    did: Text


class UserRegistered(EventBase):
    """A user signed up."""

    event_type: Literal["user.registered"] = "user.registered"
    data: UserRegisteredData


class UserKycVerified(EventBase):
    """A user passed KYC."""

    event_type: Literal["user.kyc_verified"] = "user.kyc_verified"
    data: UserKycVerifiedData


class UserStatusChanged(EventBase):
    """A user was activated, suspended or terminated."""

    event_type: Literal["user.status_changed"] = "user.status_changed"
    data: UserStatusChangedData


class UserSeen(EventBase):
    """A user was active."""

    event_type: Literal["user.seen"] = "user.seen"
    data: UserSeenData


# --- credential.* ------------------------------------------------------------------------------


class CredentialIssuedData(EventData):
    """`credential.issued`: insert `credentials` (VALID) and its `credential_status` row."""

    credential_id: UUID
    user_did: Text
    issuer_id: Text
    credential_type: Text
    credential_jwt: Text
    expires_at: UtcDatetime | None = None
    subject_did: str | None = Field(default=None, max_length=255)
    nonce: str | None = Field(default=None, max_length=255)
    revocation_handle: str | None = Field(default=None, max_length=255)
    verification_method: str | None = Field(default=None, max_length=100)
    proof_type: str | None = Field(default=None, max_length=50)
    proof_created_at: UtcDatetime | None = None
    proof_purpose: str | None = Field(default=None, max_length=50)
    metadata: dict[str, Any] | None = None


class CredentialRevokedData(EventData):
    """`credential.revoked`: REVOKED; `reason` becomes `revocation_reason` (VARCHAR(100))."""

    credential_id: UUID
    reason: Reason100
    revoked_by: str | None = Field(default=None, max_length=255)


class CredentialSuspendedData(EventData):
    """`credential.suspended`: SUSPENDED."""

    credential_id: UUID
    reason: str | None = Field(default=None, max_length=500)


class CredentialReinstatedData(EventData):
    """`credential.reinstated`: VALID again."""

    credential_id: UUID
    reason: str | None = Field(default=None, max_length=500)


class CredentialExpiredData(EventData):
    """`credential.expired`: EXPIRED."""

    credential_id: UUID


class CredentialIssued(EventBase):
    """An issuer issued a verifiable credential to a user."""

    event_type: Literal["credential.issued"] = "credential.issued"
    data: CredentialIssuedData


class CredentialRevoked(EventBase):
    """A credential was revoked (final)."""

    event_type: Literal["credential.revoked"] = "credential.revoked"
    data: CredentialRevokedData


class CredentialSuspended(EventBase):
    """A credential was suspended."""

    event_type: Literal["credential.suspended"] = "credential.suspended"
    data: CredentialSuspendedData


class CredentialReinstated(EventBase):
    """A suspended credential was reinstated."""

    event_type: Literal["credential.reinstated"] = "credential.reinstated"
    data: CredentialReinstatedData


class CredentialExpired(EventBase):
    """A credential reached its expiry."""

    event_type: Literal["credential.expired"] = "credential.expired"
    data: CredentialExpiredData


# --- payment.* ---------------------------------------------------------------------------------


def _null_is_one_time(value: Any) -> Any:
    # A producer that serialises unset fields as null means "not given", i.e. the default.
    return PaymentType.ONE_TIME if value is None else value


OneTimeByDefault = Annotated[
    PaymentType,
    BeforeValidator(_null_is_one_time),
    WithJsonSchema({"enum": [*PaymentType, None], "description": "ONE_TIME when absent or null"}),
]
"""`payment_type`: ONE_TIME when absent or null."""


class PaymentInitiatedData(EventData):
    """`payment.initiated`: insert `payments` (PENDING, `total_amount` = amount + fee + tax).

    `amount` must be greater than zero; `fee_amount` and `tax_amount` may be zero, never negative;
    the total must also fit `DECIMAL(18,2)`.
    """

    payment_id: UUID
    payer_did: Text
    payee_did: Text
    amount: PositiveMoney
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    payment_type: OneTimeByDefault = PaymentType.ONE_TIME
    payment_method: str | None = Field(default=None, max_length=50)
    reference_id: str | None = Field(default=None, max_length=255)
    description: str | None = Field(default=None, max_length=500)
    kyc_decision_token: str | None = Field(default=None, max_length=500)
    fee_amount: Money | None = None
    tax_amount: Money | None = None

    @model_validator(mode="after")
    def _total_fits(self) -> PaymentInitiatedData:
        check_total(self.amount, self.fee_amount, self.tax_amount)
        return self


class PaymentAuthorizedData(EventData):
    """`payment.authorized`: AUTHORIZED, `authorized_at`."""

    payment_id: UUID
    transaction_id: str | None = Field(default=None, max_length=255)


class PaymentCapturedData(EventData):
    """`payment.captured`: CAPTURED, `captured_at`, `completed_at`."""

    payment_id: UUID


class PaymentFailedData(EventData):
    """`payment.failed`: FAILED, `failed_at`."""

    payment_id: UUID
    failure_reason: Reason500


class PaymentRefundedData(EventData):
    """`payment.refunded`: REFUNDED, `refunded_at`."""

    payment_id: UUID
    refund_reason: Reason500


class PaymentCancelledData(EventData):
    """`payment.cancelled`: CANCELLED."""

    payment_id: UUID
    reason: str | None = Field(default=None, max_length=500)


class PaymentInitiated(EventBase):
    """A payer started a payment."""

    event_type: Literal["payment.initiated"] = "payment.initiated"
    data: PaymentInitiatedData


class PaymentAuthorized(EventBase):
    """A payment was authorised."""

    event_type: Literal["payment.authorized"] = "payment.authorized"
    data: PaymentAuthorizedData


class PaymentCaptured(EventBase):
    """A payment was captured (completed)."""

    event_type: Literal["payment.captured"] = "payment.captured"
    data: PaymentCapturedData


class PaymentFailed(EventBase):
    """A payment failed."""

    event_type: Literal["payment.failed"] = "payment.failed"
    data: PaymentFailedData


class PaymentRefunded(EventBase):
    """A captured payment was refunded."""

    event_type: Literal["payment.refunded"] = "payment.refunded"
    data: PaymentRefundedData


class PaymentCancelled(EventBase):
    """A payment was cancelled before capture."""

    event_type: Literal["payment.cancelled"] = "payment.cancelled"
    data: PaymentCancelledData


# --- auth.* ------------------------------------------------------------------------------------


class LoginSucceededData(EventData):
    """`auth.login_succeeded`: `users.last_seen`; audit only otherwise."""

    did: Text
    session_id: str | None = Field(default=None, max_length=255)


class LoginFailedData(EventData):
    """`auth.login_failed`: audit only (WARNING); `reason` becomes `error_message`."""

    reason: Reason1000
    did: str | None = Field(default=None, min_length=1)


class LoginSucceeded(EventBase):
    """A user logged in."""

    event_type: Literal["auth.login_succeeded"] = "auth.login_succeeded"
    data: LoginSucceededData


class LoginFailed(EventBase):
    """A login attempt failed."""

    event_type: Literal["auth.login_failed"] = "auth.login_failed"
    data: LoginFailedData
