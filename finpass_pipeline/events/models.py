"""The event models of CONTRACT.md §2 and §3: the envelope, the actor and each type's `data`.

Import them from `finpass_pipeline.events`, which adds the `Event` union and the wire codec.
Lengths match the database columns, so a value that could not be stored fails validation rather
than a transaction. Unknown envelope and actor fields are ignored; unknown `data` fields are kept
(`EventData.extra_fields()`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from finpass_pipeline.events.money import Money, check_total
from finpass_pipeline.events.wire_types import (
    JSON_VALUE_PLACEHOLDER,
    NO_NUL,
    Did,
    JsonObject,
    Jwt,
    Required100,
    Required255,
    Required500,
    Required1000,
    SchemaVersion,
    SchemaVersion2,
    Text45,
    Text50,
    Text100,
    Text255,
    Text500,
    Timestamp,
    Uuid,
)

# --- field types (shared ones in `wire_types`) --------------------------------------------------

Reason100 = Required100
Reason500 = Required500
Reason1000 = Required1000
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


# --- what an event is about -------------------------------------------------------------------

SubjectKind = Literal["user", "credential", "payment"]


class Subject(NamedTuple):
    """An aggregate an event reads or creates: the consumer locks, loads, parks on it."""

    kind: SubjectKind
    key: str
    """The DID of a user; the UUID (canonical text) of a credential or payment."""


def _memo_text(data: BaseModel, name: str) -> str:
    """`str()` of field `name`, made once per instance: a batch asks for a subject's key several
    times per event and `str(UUID)` is Python code. Kept in `__dict__` as
    `functools.cached_property` does (whose lock costs 2 µs per read on 3.11); pydantic compares
    and dumps fields only."""
    known = data.__dict__
    text: str | None = known.get("_text_" + name)
    if text is None:
        text = known["_text_" + name] = str(known[name])
    return text


def _extra_text(data: EventData, name: str) -> str | None:
    # A field this contract version does not declare, when a producer sends it as text.
    value = (data.model_extra or {}).get(name)
    return value if isinstance(value, str) and value else None


# --- envelope ----------------------------------------------------------------------------------


class Actor(BaseModel):
    """Who did it and from where; every field optional. Feeds the audit row's actor columns."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    did: Did | None = None  # pseudonymised before storage, but bounded like every DID
    role: Text100 | None = None
    session_id: Text255 | None = None
    ip_address: Text45 | None = None
    user_agent: Text500 | None = None
    geolocation: Text255 | None = None
    device_fingerprint: Text255 | None = None


def _unknown_fields_are_json(schema: dict[str, Any]) -> None:
    # Unknown `data` fields are kept in `metadata` (jsonb): any JSON value without U+0000.
    schema["additionalProperties"] = dict(JSON_VALUE_PLACEHOLDER)
    schema["propertyNames"] = {"pattern": NO_NUL}


class EventData(BaseModel):
    """Base of every event's `data`. Unknown fields are kept (see `extra_fields`)."""

    model_config = ConfigDict(
        extra="allow", frozen=True, json_schema_extra=_unknown_fields_are_json
    )

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

    event_id: Uuid
    event_type: str
    schema_version: SchemaVersion
    occurred_at: Timestamp
    correlation_id: Required255
    causation_id: Uuid | None = None
    source_system: Required100
    tenant_id: Text255 | None = None
    actor: Actor | None = None
    data: EventData

    action: ClassVar[str]
    """`audit_events.action` of this type (REGISTER, CAPTURE, ...)."""

    # What the event is about (CONTRACT.md §1 keys, §5 reference semantics). Routing, locking,
    # parking and auditing all ask these; each domain's base class below answers them once.

    def requires(self) -> Subject | None:
        """The subject that must exist before this event applies (None: it needs none)."""
        return None

    def creates(self) -> Subject | None:
        """The subject this event creates, if any."""
        return None

    def subjects(self) -> list[Subject]:
        """Every subject the event reads or creates: the consumer locks and loads these."""
        return [s for s in (self.requires(), self.creates()) if s is not None]

    def subject_did(self) -> str | None:
        """The DID the audit row is about when the event itself names it (else the consumer
        takes the owner of the stored credential or payment)."""
        return None

    def aggregate_key(self) -> str | None:
        """The aggregate id that orders this event on its partition (the Kafka key's text)."""
        return None

    def message_key(self) -> bytes:
        """The Kafka key (UTF-8); with no aggregate to order by, the event id spreads them."""
        return (self.aggregate_key() or str(self.event_id)).encode()

    def session_id(self) -> str | None:
        """The session for the audit row: the event's own `session_id` field, else the actor's."""
        return _extra_text(self.data, "session_id") or (
            self.actor.session_id if self.actor else None)


# --- user.* ------------------------------------------------------------------------------------


class UserRefData(EventData):
    """The `data` of an event about one user, named by DID."""

    did: Did


class UserEvent(EventBase):
    """user.* (and `auth.login_succeeded`): about the user `data.did`, who must exist."""

    data: UserRefData

    def requires(self) -> Subject | None:
        return Subject("user", self.data.did)

    def subject_did(self) -> str | None:
        return self.data.did

    def aggregate_key(self) -> str | None:
        return self.data.did


class UserRegisteredData(UserRefData):
    """`user.registered`: insert `users` (status ACTIVE)."""

    email: Text255 | None = None
    phone: Text50 | None = None
    metadata: JsonObject | None = None


class UserKycVerifiedData(UserRefData):
    """`user.kyc_verified`: `kyc_verified`, `kyc_verified_at` (= `verified_at` or `occurred_at`)."""

    verified_at: Timestamp | None = None


class UserStatusChangedData(UserRefData):
    """`user.status_changed`: `users.status`."""

    status: UserStatus
    reason: Text500 | None = None


class UserSeenData(UserRefData):
    """`user.seen`: `users.last_seen` (never moves backwards)."""



class UserRegistered(UserEvent):
    """A user signed up."""

    event_type: Literal["user.registered"] = "user.registered"
    data: UserRegisteredData
    action = "REGISTER"

    def requires(self) -> Subject | None:
        return None

    def creates(self) -> Subject | None:
        return Subject("user", self.data.did)


class UserKycVerified(UserEvent):
    """A user passed KYC."""

    event_type: Literal["user.kyc_verified"] = "user.kyc_verified"
    data: UserKycVerifiedData
    action = "VERIFY_KYC"


class UserStatusChanged(UserEvent):
    """A user was activated, suspended or terminated."""

    event_type: Literal["user.status_changed"] = "user.status_changed"
    data: UserStatusChangedData
    action = "CHANGE_STATUS"


class UserSeen(UserEvent):
    """A user was active."""

    event_type: Literal["user.seen"] = "user.seen"
    data: UserSeenData
    action = "SEEN"


class UserErasureRequestedData(UserRefData):
    """`user.erasure_requested` (CONTRACT.md §5 v1.1): erase the person's personal data."""

    reason: Text500 | None = None


class UserErasureRequested(UserEvent):
    """A person exercised the right to erasure. Needs no user row (a DID that never registered
    can still be erased: payments name DIDs without one); locks and loads the user."""

    event_type: Literal["user.erasure_requested"] = "user.erasure_requested"
    data: UserErasureRequestedData
    action = "ERASE"

    def requires(self) -> Subject | None:
        return None

    def subjects(self) -> list[Subject]:
        return [Subject("user", self.data.did)]


# --- credential.* ------------------------------------------------------------------------------


class CredentialRefData(EventData):
    """The `data` of an event about one credential."""

    credential_id: Uuid

    @property
    def subject_key(self) -> str:
        """`credential_id` as canonical text (the subject's key, the Kafka key), made once."""
        return _memo_text(self, "credential_id")


class CredentialEvent(EventBase):
    """credential.*: about the credential `data.credential_id`, which must exist."""

    data: CredentialRefData

    def requires(self) -> Subject | None:
        return Subject("credential", self.data.subject_key)

    def aggregate_key(self) -> str | None:
        return self.data.subject_key


class CredentialIssuedData(CredentialRefData):
    """`credential.issued`: insert `credentials` (VALID) and its `credential_status` row."""

    user_did: Did
    issuer_id: Did
    credential_type: Required100
    credential_jwt: Jwt
    expires_at: Timestamp | None = None
    subject_did: Text255 | None = None
    nonce: Text255 | None = None
    revocation_handle: Text255 | None = None
    verification_method: Text100 | None = None
    proof_type: Text50 | None = None
    proof_created_at: Timestamp | None = None
    proof_purpose: Text50 | None = None
    metadata: JsonObject | None = None


class CredentialRevokedData(CredentialRefData):
    """`credential.revoked`: REVOKED; `reason` becomes `revocation_reason` (VARCHAR(100))."""

    reason: Reason100
    revoked_by: Text255 | None = None


class CredentialSuspendedData(CredentialRefData):
    """`credential.suspended`: SUSPENDED."""

    reason: Text500 | None = None


class CredentialReinstatedData(CredentialRefData):
    """`credential.reinstated`: VALID again."""

    reason: Text500 | None = None


class CredentialExpiredData(CredentialRefData):
    """`credential.expired`: EXPIRED."""



class CredentialIssued(CredentialEvent):
    """An issuer issued a verifiable credential to a user."""

    event_type: Literal["credential.issued"] = "credential.issued"
    data: CredentialIssuedData
    action = "ISSUE"

    def requires(self) -> Subject | None:
        return Subject("user", self.data.user_did)

    def creates(self) -> Subject | None:
        return Subject("credential", self.data.subject_key)

    def subject_did(self) -> str | None:
        return self.data.user_did


class CredentialRevoked(CredentialEvent):
    """A credential was revoked (final)."""

    event_type: Literal["credential.revoked"] = "credential.revoked"
    data: CredentialRevokedData
    action = "REVOKE"


class CredentialSuspended(CredentialEvent):
    """A credential was suspended."""

    event_type: Literal["credential.suspended"] = "credential.suspended"
    data: CredentialSuspendedData
    action = "SUSPEND"


class CredentialReinstated(CredentialEvent):
    """A suspended credential was reinstated."""

    event_type: Literal["credential.reinstated"] = "credential.reinstated"
    data: CredentialReinstatedData
    action = "REINSTATE"


class CredentialExpired(CredentialEvent):
    """A credential reached its expiry."""

    event_type: Literal["credential.expired"] = "credential.expired"
    data: CredentialExpiredData
    action = "EXPIRE"


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


class PaymentRefData(EventData):
    """The `data` of an event about one payment."""

    payment_id: Uuid

    @property
    def subject_key(self) -> str:
        """`payment_id` as canonical text (the subject's key, the Kafka key), made once."""
        return _memo_text(self, "payment_id")


class PaymentEvent(EventBase):
    """payment.*: about the payment `data.payment_id`, which must exist."""

    data: PaymentRefData

    def requires(self) -> Subject | None:
        return Subject("payment", self.data.subject_key)

    def aggregate_key(self) -> str | None:
        return self.data.subject_key


Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
"""An ISO 4217 alphabetic code (`EUR`)."""


class Amount(BaseModel):
    """`payment.initiated` v2 `amount`: the value and its currency, which never travel apart.
    No other members: money must mean one thing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: Money
    currency: Currency


class PaymentInitiatedData(PaymentRefData):
    """`payment.initiated` (v2, the current version): insert `payments` (PENDING,
    `total_amount` = amount + fee + tax, all in `amount.currency`; `merchant_reference` is the
    `reference_id` column).

    Every amount may be zero, never negative; the total must also fit `DECIMAL(18,2)` (a
    semantic check: JSON Schema cannot add numbers).
    """

    payer_did: Did
    payee_did: Did
    amount: Amount
    payment_type: OneTimeByDefault = PaymentType.ONE_TIME
    payment_method: Text50 | None = None
    merchant_reference: Text255 | None = None
    description: Text500 | None = None
    kyc_decision_token: Text500 | None = None
    fee_amount: Money | None = None
    tax_amount: Money | None = None

    @model_validator(mode="after")
    def _total_fits(self) -> PaymentInitiatedData:
        check_total(self.amount.value, self.fee_amount, self.tax_amount)
        return self


class PaymentInitiatedDataV1(PaymentRefData):
    """`payment.initiated` v1: `amount` a plain value with `currency` beside it, and
    `reference_id` for v2's `merchant_reference`. Accepted for ever; `upcast()` gives v2."""

    payer_did: Did
    payee_did: Did
    amount: Money
    currency: Currency
    payment_type: OneTimeByDefault = PaymentType.ONE_TIME
    payment_method: Text50 | None = None
    reference_id: Text255 | None = None
    description: Text500 | None = None
    kyc_decision_token: Text500 | None = None
    fee_amount: Money | None = None
    tax_amount: Money | None = None

    @model_validator(mode="after")
    def _total_fits(self) -> PaymentInitiatedDataV1:
        check_total(self.amount, self.fee_amount, self.tax_amount)
        return self

    def upcast(self) -> PaymentInitiatedData:
        """The same payment in v2. Every v1 value is a valid v2 value (same field types, same
        total rule), so nothing is validated twice; unknown fields stay unknown fields."""
        fields_set = {_V2_NAMES.get(name, name) for name in self.model_fields_set}
        fields_set.discard("currency")
        return _constructed(PaymentInitiatedData, {
            "payment_id": self.payment_id, "payer_did": self.payer_did,
            "payee_did": self.payee_did,
            "amount": _constructed(Amount, {"value": self.amount, "currency": self.currency},
                                   {"value", "currency"}, None),
            "payment_type": self.payment_type, "payment_method": self.payment_method,
            "merchant_reference": self.reference_id, "description": self.description,
            "kyc_decision_token": self.kyc_decision_token, "fee_amount": self.fee_amount,
            "tax_amount": self.tax_amount,
        }, fields_set, None if self.model_extra is None else dict(self.model_extra))


_V2_NAMES = {"reference_id": "merchant_reference"}

M = TypeVar("M", bound=BaseModel)


def _constructed(cls: type[M], values: dict[str, Any], fields_set: set[str],
                 extra: dict[str, Any] | None) -> M:
    """`cls.model_construct(**values)` for values that are already valid and complete (every
    field given): the same four attributes pydantic's `model_construct` sets, without its
    per-field Python loop (10 µs per model; an upcast builds three on the hot path, since most
    producers still send v1). tests/unit/test_events.py checks it equals `model_construct`."""
    model = cls.__new__(cls)
    object.__setattr__(model, "__dict__", values)
    object.__setattr__(model, "__pydantic_fields_set__", fields_set)
    object.__setattr__(model, "__pydantic_extra__", extra)
    object.__setattr__(model, "__pydantic_private__", None)
    return model


class PaymentAuthorizedData(PaymentRefData):
    """`payment.authorized`: AUTHORIZED, `authorized_at`."""

    transaction_id: Text255 | None = None


class PaymentCapturedData(PaymentRefData):
    """`payment.captured`: CAPTURED, `captured_at`, `completed_at`."""



class PaymentFailedData(PaymentRefData):
    """`payment.failed`: FAILED, `failed_at`."""

    failure_reason: Reason500


class PaymentRefundedData(PaymentRefData):
    """`payment.refunded`: REFUNDED, `refunded_at`."""

    refund_reason: Reason500


class PaymentCancelledData(PaymentRefData):
    """`payment.cancelled`: CANCELLED."""

    reason: Text500 | None = None


class _InitiatesPayment(PaymentEvent):
    """`payment.initiated` in any version: creates the payment, about its payer."""

    data: PaymentInitiatedData | PaymentInitiatedDataV1
    action = "INITIATE"

    def requires(self) -> Subject | None:
        return None

    def creates(self) -> Subject | None:
        return Subject("payment", self.data.subject_key)

    def subject_did(self) -> str | None:
        return self.data.payer_did


class PaymentInitiated(_InitiatesPayment):
    """A payer started a payment (v2, what the consumer applies; v1 is upcast to it)."""

    event_type: Literal["payment.initiated"] = "payment.initiated"
    schema_version: SchemaVersion2
    data: PaymentInitiatedData


class PaymentInitiatedV1(_InitiatesPayment):
    """A payer started a payment, as v1 producers send it."""

    event_type: Literal["payment.initiated"] = "payment.initiated"
    schema_version: SchemaVersion
    data: PaymentInitiatedDataV1

    def upcast(self) -> PaymentInitiated:
        """This event as the current version: same envelope, `data` upcast."""
        values = dict(self.__dict__)
        values["schema_version"] = 2
        values["data"] = self.data.upcast()
        return _constructed(PaymentInitiated, values, set(self.model_fields_set), None)


class PaymentAuthorized(PaymentEvent):
    """A payment was authorised."""

    event_type: Literal["payment.authorized"] = "payment.authorized"
    data: PaymentAuthorizedData
    action = "AUTHORIZE"


class PaymentCaptured(PaymentEvent):
    """A payment was captured (completed)."""

    event_type: Literal["payment.captured"] = "payment.captured"
    data: PaymentCapturedData
    action = "CAPTURE"


class PaymentFailed(PaymentEvent):
    """A payment failed."""

    event_type: Literal["payment.failed"] = "payment.failed"
    data: PaymentFailedData
    action = "FAIL"


class PaymentRefunded(PaymentEvent):
    """A captured payment was refunded."""

    event_type: Literal["payment.refunded"] = "payment.refunded"
    data: PaymentRefundedData
    action = "REFUND"


class PaymentCancelled(PaymentEvent):
    """A payment was cancelled before capture."""

    event_type: Literal["payment.cancelled"] = "payment.cancelled"
    data: PaymentCancelledData
    action = "CANCEL"


# --- auth.* ------------------------------------------------------------------------------------


class LoginSucceededData(UserRefData):
    """`auth.login_succeeded`: `users.last_seen`; audit only otherwise."""

    session_id: Text255 | None = None


class LoginFailedData(EventData):
    """`auth.login_failed`: audit only (WARNING); `reason` becomes `error_message`."""

    reason: Reason1000
    did: Did | None = None


class LoginSucceeded(UserEvent):
    """A user logged in."""

    event_type: Literal["auth.login_succeeded"] = "auth.login_succeeded"
    data: LoginSucceededData
    action = "LOGIN"

    def session_id(self) -> str | None:
        return self.data.session_id or super().session_id()


class LoginFailed(EventBase):
    """A login attempt failed."""

    event_type: Literal["auth.login_failed"] = "auth.login_failed"
    data: LoginFailedData
    action = "LOGIN"

    def subject_did(self) -> str | None:
        return self.data.did

    def aggregate_key(self) -> str | None:
        # The DID when known, else the session (the actor's, then one sent in `data`).
        return (self.data.did or (self.actor.session_id if self.actor else None)
                or _extra_text(self.data, "session_id"))
