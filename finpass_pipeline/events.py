"""The event contract (CONTRACT.md §1-3): models, the `Event` union and the wire codec.

`parse_event` turns a Kafka message value into one of the `Event` models or raises
`InvalidEventError` with a one-line reason (the dead-letter reason); `serialize_event` is its
inverse. The models live in `event_models`, money in `money`, topics and keys in `routing`; this
module is the one to import from.

Compatibility is additive: unknown envelope fields are ignored, unknown `data` fields are kept
(`EventData.extra_fields()`), unknown `actor` fields are ignored.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from finpass_pipeline.event_models import (
    Actor,
    CredentialExpired,
    CredentialExpiredData,
    CredentialIssued,
    CredentialIssuedData,
    CredentialReinstated,
    CredentialReinstatedData,
    CredentialRevoked,
    CredentialRevokedData,
    CredentialSuspended,
    CredentialSuspendedData,
    EventBase,
    EventData,
    LoginFailed,
    LoginFailedData,
    LoginSucceeded,
    LoginSucceededData,
    PaymentAuthorized,
    PaymentAuthorizedData,
    PaymentCancelled,
    PaymentCancelledData,
    PaymentCaptured,
    PaymentCapturedData,
    PaymentFailed,
    PaymentFailedData,
    PaymentInitiated,
    PaymentInitiatedData,
    PaymentRefunded,
    PaymentRefundedData,
    PaymentType,
    UserKycVerified,
    UserKycVerifiedData,
    UserRegistered,
    UserRegisteredData,
    UserSeen,
    UserSeenData,
    UserStatus,
    UserStatusChanged,
    UserStatusChangedData,
)
from finpass_pipeline.money import (
    EXACT_JSON_NUMBERS,
    JSON_NUMBER_NEEDS_EXACT_PARSE,
    MONEY_FIELDS,
)
from finpass_pipeline.routing import (
    DEAD_LETTER_SUFFIX,
    DOMAIN_TOPIC_SUFFIXES,
    audit_event_type,
    message_key,
    subject_did,
    topic_suffix,
)

__all__ = [
    "DEAD_LETTER_SUFFIX",
    "DOMAIN_TOPIC_SUFFIXES",
    "EVENT_ADAPTER",
    "EVENT_TYPES",
    "MAX_EVENT_BYTES",
    "Actor",
    "CredentialExpired",
    "CredentialExpiredData",
    "CredentialIssued",
    "CredentialIssuedData",
    "CredentialReinstated",
    "CredentialReinstatedData",
    "CredentialRevoked",
    "CredentialRevokedData",
    "CredentialSuspended",
    "CredentialSuspendedData",
    "Event",
    "EventBase",
    "EventData",
    "InvalidEventError",
    "LoginFailed",
    "LoginFailedData",
    "LoginSucceeded",
    "LoginSucceededData",
    "PaymentAuthorized",
    "PaymentAuthorizedData",
    "PaymentCancelled",
    "PaymentCancelledData",
    "PaymentCaptured",
    "PaymentCapturedData",
    "PaymentFailed",
    "PaymentFailedData",
    "PaymentInitiated",
    "PaymentInitiatedData",
    "PaymentRefunded",
    "PaymentRefundedData",
    "PaymentType",
    "UserKycVerified",
    "UserKycVerifiedData",
    "UserRegistered",
    "UserRegisteredData",
    "UserSeen",
    "UserSeenData",
    "UserStatus",
    "UserStatusChanged",
    "UserStatusChangedData",
    "audit_event_type",
    "message_key",
    "parse_event",
    "serialize_event",
    "subject_did",
    "topic_suffix",
]

MAX_EVENT_BYTES = 1_048_576
"""A message value larger than this is invalid (and goes to the dead-letter topic)."""


# --- the union and the codec -------------------------------------------------------------------

Event = Annotated[
    UserRegistered
    | UserKycVerified
    | UserStatusChanged
    | UserSeen
    | CredentialIssued
    | CredentialRevoked
    | CredentialSuspended
    | CredentialReinstated
    | CredentialExpired
    | PaymentInitiated
    | PaymentAuthorized
    | PaymentCaptured
    | PaymentFailed
    | PaymentRefunded
    | PaymentCancelled
    | LoginSucceeded
    | LoginFailed,
    Field(discriminator="event_type"),
]
"""Any valid event; `event_type` selects the model."""

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
"""Validates and serialises `Event`; prefer `parse_event`, which also reads JSON money exactly."""

EVENT_TYPES: dict[str, type[EventBase]] = {
    cls.model_fields["event_type"].default: cls
    for cls in (
        UserRegistered, UserKycVerified, UserStatusChanged, UserSeen,
        CredentialIssued, CredentialRevoked, CredentialSuspended, CredentialReinstated,
        CredentialExpired,
        PaymentInitiated, PaymentAuthorized, PaymentCaptured, PaymentFailed, PaymentRefunded,
        PaymentCancelled,
        LoginSucceeded, LoginFailed,
    )
}  # fmt: skip
"""`event_type` string -> model class, in contract order."""


class InvalidEventError(Exception):
    """A message that is not a valid event. It goes to the dead-letter topic and table with
    `reason`; the partition keeps flowing. Retrying it cannot help."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        """One line naming the field and the rule, e.g. `data.amount: more than two decimal
        places`."""


def parse_event(raw: bytes) -> Event:
    """Validate a message value and return its event model; raise `InvalidEventError` if invalid.

    The fast path is pydantic-core's JSON parser. Money sent as a JSON number with a fraction
    takes a slower, exact path (see `finpass_pipeline.money`).
    """
    if not raw:
        raise InvalidEventError("empty message")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEventError(
            f"message is {len(raw)} bytes, larger than the limit of {MAX_EVENT_BYTES}"
        )
    try:
        event = EVENT_ADAPTER.validate_json(raw)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        if not any(error["type"] == JSON_NUMBER_NEEDS_EXACT_PARSE for error in errors):
            raise InvalidEventError(_reason(raw, errors)) from None
        event = _parse_with_exact_numbers(raw)
    # PostgreSQL text cannot hold a NUL character: refuse it here, not in the consumer's
    # transaction. JSON can only carry one escaped, so this byte search keeps the hot path cheap.
    if b"\\u0000" in raw:
        _refuse_nul(event)
    return event


def serialize_event(event: EventBase) -> bytes:
    """Compact UTF-8 JSON of `event`: money as strings, times in UTC with `Z`, nulls kept.

    `parse_event(serialize_event(e)) == e` for every valid event.
    """
    return event.model_dump_json().encode()


def _parse_with_exact_numbers(raw: bytes) -> Event:
    # Rare path: money sent as a JSON number with a fraction, which pydantic-core has read as a
    # binary float. Read those numbers again from the text, as Decimals, and validate once more
    # with them at hand.
    try:
        document = json.loads(raw, parse_float=Decimal, parse_constant=Decimal)
    except (ValueError, RecursionError) as e:  # pydantic-core accepted it; be safe all the same
        raise InvalidEventError(f"not JSON: {e}") from None
    data = document.get("data") if isinstance(document, dict) else None
    exact = {
        name: value
        for name in MONEY_FIELDS
        if isinstance(data, dict) and isinstance(value := data.get(name), Decimal)
    }
    try:
        return EVENT_ADAPTER.validate_json(raw, context={EXACT_JSON_NUMBERS: exact})
    except ValidationError as e:
        raise InvalidEventError(_reason(raw, e.errors(include_url=False))) from None


def _refuse_nul(event: EventBase) -> None:
    def find(value: Any, path: str) -> str | None:
        if isinstance(value, str):
            return path if "\x00" in value else None
        if isinstance(value, dict):
            items: Any = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            return None
        for key, item in items:
            if "\x00" in str(key):
                return f"{path}.{key!r}"
            found = find(item, f"{path}.{key}")
            if found is not None:
                return found
        return None

    # Only what the event keeps: ignored envelope and actor fields are never stored.
    for name, value in event.model_dump().items():
        where = find(value, name)
        if where is not None:
            raise InvalidEventError(f"{where}: NUL character (\\u0000) not allowed")


_JSON_KINDS = {
    b"[": "an array",
    b'"': "a string",
    b"n": "null",
    b"t": "a boolean",
    b"f": "a boolean",
}


def _reason(raw: bytes, errors: list[ErrorDetails]) -> str:
    first = errors[0]
    kind, location = first["type"], first["loc"]
    if kind == "json_invalid":
        try:
            raw.decode()
        except UnicodeDecodeError as e:
            return f"not UTF-8: invalid byte at offset {e.start}"
        return f"not JSON: {first.get('ctx', {}).get('error', first['msg'])}"
    if not location:
        if kind == "dict_type":
            got = _JSON_KINDS.get(raw.lstrip()[:1], "a number")
            return f"not a JSON object: the message is {got}"
        if kind == "union_tag_not_found":
            return "missing event_type"
        if kind == "union_tag_invalid":
            return f"unknown event_type {first.get('ctx', {}).get('tag')!r}"
    if location and location[0] in EVENT_TYPES:
        location = location[1:]  # the union's tag, not part of the document
    reason = f"{'.'.join(str(part) for part in location) or 'event'}: {first['msg']}"
    if len(errors) > 1:
        more = len(errors) - 1
        reason += f" (and {more} more error{'s' if more > 1 else ''})"
    return reason
