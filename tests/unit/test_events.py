"""The event contract (CONTRACT.md §1-3): parsing, field rules, round trips and routing.

Pure and fast: no Kafka, no database.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from finpass_pipeline.events import (
    DEAD_LETTER_SUFFIX,
    DOMAIN_TOPIC_SUFFIXES,
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    Actor,
    EventBase,
    InvalidEventError,
    PaymentInitiated,
    PaymentInitiatedData,
    PaymentInitiatedDataV1,
    PaymentType,
    UserStatus,
    audit_event_type,
    event_versions,
    message_key,
    parse_event,
    parse_wire,
    serialize_event,
    topic_suffix,
    upcast,
)
from finpass_pipeline.events.models import UserKycVerifiedData, UserSeenData
from finpass_pipeline.events.money import explain as explain_money
from tests.support import builders
from tests.support.builders import FACTORIES

CONTRACT_EXAMPLE = b"""{
  "event_id": "0192f5c4-8d2e-7a51-9c1e-3b8f0d2a4e61",
  "event_type": "payment.captured",
  "schema_version": 1,
  "occurred_at": "2026-11-27T17:00:00.123456Z",
  "correlation_id": "req-7f3a9c",
  "causation_id": null,
  "source_system": "payments-api",
  "tenant_id": null,
  "actor": {"did": "did:example:alice", "role": "USER", "session_id": "s-1",
            "ip_address": "203.0.113.7", "user_agent": "\xe2\x80\xa6", "geolocation": "DE",
            "device_fingerprint": "\xe2\x80\xa6"},
  "data": {"payment_id": "0192f5c4-8d2e-7a51-9c1e-3b8f0d2a4e62"}
}"""


def as_json(event: EventBase) -> dict[str, Any]:
    """The event as the JSON document a producer would send."""
    document: dict[str, Any] = json.loads(serialize_event(event))
    return document


def encode(document: dict[str, Any], **raw_numbers: str) -> bytes:
    """JSON bytes; each `"@name"` string value is replaced by the raw number text given."""
    raw = json.dumps(document).encode()
    for name, text in raw_numbers.items():
        raw = raw.replace(f'"@{name}"'.encode(), text.encode())
    return raw


def reason_of(raw: bytes) -> str:
    with pytest.raises(InvalidEventError) as caught:
        parse_event(raw)
    return caught.value.reason


# --- valid events ------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
def test_every_type_round_trips(event_type: str) -> None:
    """A valid example of every type survives serialize -> parse unchanged, byte for byte."""
    event = FACTORIES[event_type]()
    raw = serialize_event(event)
    parsed = parse_event(raw)
    assert type(parsed) is EVENT_TYPES[event_type]
    assert parsed == upcast(event)
    assert parse_wire(raw) == event and serialize_event(parse_wire(raw)) == raw
    assert json.loads(raw)["event_type"] == event_type


def test_factories_cover_every_type_and_mint_fresh_ids() -> None:
    """There is one factory per event type, and each call gets a new event id."""
    assert list(FACTORIES) == list(EVENT_TYPES)
    assert builders.user_seen().event_id != builders.user_seen().event_id


def test_contract_example_parses() -> None:
    """The envelope example of CONTRACT.md §2 is a valid payment.captured."""
    event = parse_event(CONTRACT_EXAMPLE)
    assert event.event_type == "payment.captured"
    assert event.occurred_at == datetime(2026, 11, 27, 17, 0, 0, 123456, tzinfo=UTC)
    assert event.actor == Actor(
        did="did:example:alice",
        role="USER",
        session_id="s-1",
        ip_address="203.0.113.7",
        user_agent="\u2026",
        geolocation="DE",
        device_fingerprint="\u2026",
    )
    assert message_key(event) == b"0192f5c4-8d2e-7a51-9c1e-3b8f0d2a4e62"


def test_serialized_form_is_compact_with_money_strings_and_utc() -> None:
    """Output has no whitespace, money as strings at the given scale, and UTC times with Z."""
    offset = timezone(timedelta(hours=5, minutes=30))
    event = builders.payment_initiated(
        amount="1250.00", fee_amount=Decimal("0.5"), tax_amount=7,
        occurred_at=datetime(2026, 11, 27, 22, 30, tzinfo=offset),
    )  # fmt: skip
    raw = serialize_event(event)
    assert b'"amount":"1250.00"' in raw
    assert b'"fee_amount":"0.5"' in raw
    assert b'"tax_amount":"7"' in raw
    assert b'"occurred_at":"2026-11-27T17:00:00Z"' in raw
    assert b": " not in raw and b", " not in raw


def test_offsets_are_normalised_to_utc() -> None:
    """Any RFC 3339 offset is accepted and held as the same instant in UTC."""
    document = as_json(builders.user_kyc_verified())
    document["occurred_at"] = "2026-11-27T12:00:00-05:00"
    document["data"]["verified_at"] = "2026-11-27T18:30:00.5+01:30"
    event = parse_event(encode(document))
    assert event.occurred_at == datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
    assert event.occurred_at.tzinfo is UTC
    assert isinstance(event.data, UserKycVerifiedData)
    assert event.data.verified_at == datetime(2026, 11, 27, 17, 0, 0, 500000, tzinfo=UTC)


def test_unknown_data_fields_are_kept() -> None:
    """Fields a newer producer adds to `data` survive parsing and show in extra_fields()."""
    document = as_json(builders.payment_captured())
    document["data"]["settlement"] = {"batch": "b-7", "rate": 1.5}
    document["data"]["acquirer"] = "acme"
    event = parse_event(encode(document))
    expected = {"settlement": {"batch": "b-7", "rate": 1.5}, "acquirer": "acme"}
    assert event.data.extra_fields() == expected
    assert parse_event(serialize_event(event)) == upcast(event)
    assert builders.payment_captured().data.extra_fields() == {}


def test_unknown_envelope_and_actor_fields_are_ignored() -> None:
    """Additive envelope and actor fields are not errors and are not kept."""
    document = as_json(builders.user_seen(actor=builders.actor()))
    document["trace_parent"] = "00-abc-01"
    document["actor"]["mfa"] = True
    event = parse_event(encode(document))
    assert "trace_parent" not in serialize_event(event).decode()
    assert event.actor is not None and "mfa" not in event.actor.model_dump()


def test_optional_fields_may_be_absent_and_defaults_apply() -> None:
    """Only the bold fields are needed; payment_type defaults to ONE_TIME."""
    document = as_json(builders.payment_initiated())
    for name in ("payment_type", "payment_method", "reference_id", "description",
                 "kyc_decision_token", "fee_amount", "tax_amount"):  # fmt: skip
        del document["data"][name]
    for name in ("causation_id", "tenant_id", "actor"):
        del document[name]
    event = parse_event(encode(document))
    assert isinstance(event, PaymentInitiated)
    assert event.data.payment_type is PaymentType.ONE_TIME
    assert event.data.fee_amount is None and event.actor is None


def test_null_payment_type_means_one_time() -> None:
    """A producer that sends unset fields as null gets the default payment_type."""
    document = as_json(builders.payment_initiated())
    document["data"]["payment_type"] = None
    event = parse_event(encode(document))
    assert isinstance(event, PaymentInitiated)
    assert event.data.payment_type is PaymentType.ONE_TIME


def test_enums_accept_every_contract_value() -> None:
    """status and payment_type accept exactly the values CONTRACT.md §3 lists."""
    for status in ("ACTIVE", "SUSPENDED", "TERMINATED"):
        assert builders.user_status_changed(status=status).data.status is UserStatus(status)
    for kind in ("ONE_TIME", "RECURRING", "SUBSCRIPTION"):
        assert builders.payment_initiated(payment_type=kind).data.payment_type == kind


# --- money -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("12345678901234.57", "12345678901234.57"),
        ("9999999999999999.99", "9999999999999999.99"),  # a binary float would make this 1e16
        ("1234567890123456.78", "1234567890123456.78"),
        ("0.1", "0.1"),
        ("0.01", "0.01"),
        ("12.5", "12.5"),
        ("100", "100"),
        ("100.00", "100.00"),
        ("1e2", "100"),
    ],
)
def test_exact_json_numbers_are_read_exactly(number: str, expected: str) -> None:
    """A JSON number amount is read from its text, never through a binary float: v1's `amount`
    and v2's `amount.value` alike."""
    v1 = as_json(builders.payment_initiated(fee_amount=None, tax_amount=None))
    v2 = as_json(builders.payment_initiated_v2(fee_amount=None, tax_amount=None))
    v1["data"]["amount"] = "@amount"
    v2["data"]["amount"]["value"] = "@amount"
    for document in (v1, v2):
        event = parse_event(encode(document, amount=number))
        assert isinstance(event, PaymentInitiated)
        assert event.data.amount.value == Decimal(expected)
        assert str(event.data.amount.value) == expected
        assert f'"amount":{{"value":"{expected}"'.encode() in serialize_event(event)


def test_json_number_money_in_every_money_field() -> None:
    """fee_amount and tax_amount sent as JSON numbers are exact as well."""
    document = as_json(builders.payment_initiated())
    document["data"].update(amount="@a", fee_amount="@f", tax_amount="@t")
    event = parse_event(encode(document, a="5000000000000000.01", f="0.10", t="2"))
    assert isinstance(event, PaymentInitiated)
    assert (event.data.amount.value, event.data.fee_amount, event.data.tax_amount) == (
        Decimal("5000000000000000.01"), Decimal("0.10"), Decimal("2"),
    )  # fmt: skip


@given(
    st.integers(0, 2).flatmap(
        lambda places: st.decimals(
            min_value=Decimal("0.01"), max_value=Decimal("9999999999999999.99"), places=places
        )
    )
)
@settings(deadline=None)
def test_any_valid_amount_is_exact_as_string_or_json_number(amount: Decimal) -> None:
    """Every amount with 0-2 places below 10^16 parses to itself, as a string or a JSON number."""
    text = format(amount, "f")
    document = as_json(builders.payment_initiated(fee_amount=None, tax_amount=None))
    for form in (f'"{text}"', text):
        document["data"]["amount"] = "@amount"
        event = parse_event(encode(document, amount=form))
        assert isinstance(event, PaymentInitiated)
        assert str(event.data.amount.value) == text


def test_python_floats_are_refused_for_money() -> None:
    """In Python, a float amount is an error: its binary value is not what the caller meant."""
    with pytest.raises(ValidationError, match="not a valid amount of money"):
        builders.payment_initiated(amount=12.5)
    assert explain_money(12.5) == "a float is not exact: pass a decimal string or a Decimal"


def test_money_bounds() -> None:
    """The largest DECIMAL(18,2) value is accepted; every amount may be zero (CONTRACT.md §5)."""
    event = builders.payment_initiated(
        amount="9999999999999999.99", fee_amount=None, tax_amount=None
    )
    assert event.data.amount == Decimal("9999999999999999.99")
    event = builders.payment_initiated(amount="0.01", fee_amount="0", tax_amount="0.00")
    assert event.data.fee_amount == 0
    assert builders.payment_initiated(amount="0").data.amount == 0
    assert builders.payment_initiated(fee_amount="12.500").data.fee_amount == Decimal("12.50")
    assert builders.payment_initiated(amount="007.50").data.amount == Decimal("7.50")


# --- invalid events ----------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def mutated(event_type: str, mutate: Mutation, **raw_numbers: str) -> bytes:
    """A valid event of `event_type`, changed by `mutate`, as bytes."""
    document = as_json(FACTORIES[event_type]())
    mutate(document)
    return encode(document, **raw_numbers)


def setting(path: str, value: Any) -> Mutation:
    """Set (or, with `...`, delete) the field at dotted `path`."""

    def mutate(document: dict[str, Any]) -> None:
        *parents, name = path.split(".")
        for parent in parents:
            document = document[parent]
        if value is ...:
            del document[name]
        else:
            document[name] = value

    return mutate


def data(name: str, value: Any) -> Mutation:
    return setting(f"data.{name}", value)


PAY = "payment.initiated"
# An otherwise valid event with "é" in Latin-1 rather than UTF-8.
LATIN1 = serialize_event(builders.user_seen(did="did:é")).replace("é".encode(), b"\xe9")
OVERSIZE = mutated("user.registered", data("padding", "x" * MAX_EVENT_BYTES))

INVALID: list[tuple[str, bytes, list[str]]] = [
    ("empty", b"", ["empty message"]),
    ("not utf-8", b'\xff\xfe{"event_type": "user.seen"}', ["not UTF-8"]),
    ("latin-1 inside a string", LATIN1, ["not UTF-8"]),
    ("not json", b"{event_type: user.seen}", ["not JSON"]),
    ("trailing garbage", serialize_event(builders.user_seen()) + b" x", ["not JSON", "trailing"]),
    ("json array", b'[{"event_type": "user.seen"}]', ["not a JSON object", "array"]),
    ("json string", b'"user.seen"', ["not a JSON object", "string"]),
    ("json null", b"null", ["not a JSON object", "null"]),
    ("json number", b"42", ["not a JSON object", "number"]),
    ("missing event_type", mutated("user.seen", setting("event_type", ...)),
     ["missing event_type"]),
    ("unknown event_type", mutated("user.seen", setting("event_type", "user.deleted")),
     ["unknown event_type 'user.deleted'"]),
    ("event_type not a string", mutated("user.seen", setting("event_type", 7)),
     ["unknown event_type"]),
    ("missing event_id", mutated("user.seen", setting("event_id", ...)),
     ["event_id", "Field required"]),
    ("bad event_id", mutated("user.seen", setting("event_id", "not-a-uuid")), ["event_id", "UUID"]),
    ("bad causation_id", mutated("user.seen", setting("causation_id", "42")),
     ["causation_id", "UUID"]),
    ("bad payment_id", mutated("payment.captured", data("payment_id", "p-1")),
     ["data.payment_id", "UUID"]),
    ("bad credential_id", mutated("credential.expired", data("credential_id", 12)),
     ["data.credential_id", "UUID"]),
    ("wrong schema_version", mutated("user.seen", setting("schema_version", 2)),
     ["schema_version", "must be the number 1"]),
    ("schema_version as string", mutated("user.seen", setting("schema_version", "1")),
     ["schema_version", "must be the number 1"]),
    ("missing schema_version", mutated("user.seen", setting("schema_version", ...)),
     ["schema_version", "Field required"]),
    ("naive occurred_at", mutated("user.seen", setting("occurred_at", "2026-11-27T17:00:00")),
     ["occurred_at", "RFC 3339 date-time"]),
    ("date-only occurred_at", mutated("user.seen", setting("occurred_at", "2026-11-27")),
     ["occurred_at", "RFC 3339 date-time"]),
    ("epoch occurred_at", mutated("user.seen", setting("occurred_at", 1_790_000_000)),
     ["occurred_at", "RFC 3339"]),
    ("garbage occurred_at", mutated("user.seen", setting("occurred_at", "yesterday")),
     ["occurred_at", "RFC 3339 date-time"]),
    ("naive expires_at", mutated("credential.issued", data("expires_at", "2027-01-01T00:00:00")),
     ["data.expires_at", "RFC 3339 date-time"]),
    ("naive verified_at", mutated("user.kyc_verified", data("verified_at", "2026-01-01 10:00")),
     ["data.verified_at", "RFC 3339 date-time"]),
    ("3-decimal amount", mutated(PAY, data("amount", "12.345")),
     ["data.amount", "more than two decimal places"]),
    ("3-decimal JSON float", mutated(PAY, data("amount", "@a"), a="12.345"),
     ["data.amount", "more than two decimal places"]),
    ("tiny JSON float", mutated(PAY, data("amount", "@a"), a="1e-9999"),
     ["data.amount", "more than two decimal places"]),
    ("float hiding a third place", mutated(PAY, data("amount", "@a"), a="0.30000000000000004"),
     ["data.amount", "more than two decimal places"]),
    ("negative amount", mutated(PAY, data("amount", "-5.00")), ["data.amount", "negative"]),
    ("negative JSON fee", mutated(PAY, data("fee_amount", "@f"), f="-0.01"),
     ["data.fee_amount", "negative"]),
    ("negative tax", mutated(PAY, data("tax_amount", "-1")), ["data.tax_amount", "negative"]),
    ("signed zero amount", mutated(PAY, data("amount", "-0.00")), ["data.amount", "negative"]),
    # NaN and Infinity are not JSON (RFC 8259): the text is refused before any field is read.
    ("NaN amount", mutated(PAY, data("amount", "@a"), a="NaN"), ["not JSON"]),
    ("Infinity amount", mutated(PAY, data("amount", "@a"), a="Infinity"), ["not JSON"]),
    ("NaN string", mutated(PAY, data("amount", "NaN")), ["data.amount", "finite"]),
    ("amount too large", mutated(PAY, data("amount", "10000000000000000.00")),
     ["data.amount", "less than 10^16"]),
    ("huge JSON number", mutated(PAY, data("amount", "@a"), a="1e400"),
     ["data.amount", "less than 10^16"]),
    ("total too large", mutated(PAY, lambda d: d["data"].update(
        amount="9999999999999999.99", fee_amount="0.01", tax_amount=None)),
     ["data", "amount + fee_amount + tax_amount", "10^16"]),
    ("exponent string", mutated(PAY, data("amount", "1e2")), ["data.amount", "decimal string"]),
    ("comma decimal", mutated(PAY, data("amount", "12,50")), ["data.amount", "decimal string"]),
    ("amount as bool", mutated(PAY, data("amount", True)), ["data.amount", "decimal string"]),
    ("missing amount", mutated(PAY, data("amount", ...)), ["data.amount", "Field required"]),
    ("lower-case currency", mutated(PAY, data("currency", "usd")), ["data.currency", "[A-Z]{3}"]),
    ("four-letter currency", mutated(PAY, data("currency", "USDT")), ["data.currency", "[A-Z]{3}"]),
    ("currency with newline", mutated(PAY, data("currency", "USD\n")), ["data.currency"]),
    ("bad payment_type", mutated(PAY, data("payment_type", "ONCE")),
     ["data.payment_type", "ONE_TIME"]),
    ("bad status", mutated("user.status_changed", data("status", "DELETED")),
     ["data.status", "ACTIVE"]),
    ("lower-case status", mutated("user.status_changed", data("status", "active")),
     ["data.status", "ACTIVE"]),
    ("email too long", mutated("user.registered", data("email", "e" * 250 + "@x.com")),
     ["data.email", "at most 255 characters"]),
    ("phone too long", mutated("user.registered", data("phone", "1" * 51)),
     ["data.phone", "at most 50 characters"]),
    ("metadata not an object", mutated("user.registered", data("metadata", ["a"])),
     ["data.metadata", "must be a JSON object"]),
    ("empty did", mutated("user.seen", data("did", "")), ["data.did", "at least 1 character"]),
    ("missing did", mutated("user.status_changed", data("did", ...)),
     ["data.did", "Field required"]),
    ("did not a string", mutated("user.seen", data("did", 42)), ["data.did", "string"]),
    ("missing credential_jwt", mutated("credential.issued", data("credential_jwt", ...)),
     ["data.credential_jwt", "Field required"]),
    ("proof_type too long", mutated("credential.issued", data("proof_type", "p" * 51)),
     ["data.proof_type", "at most 50"]),
    ("revocation reason too long", mutated("credential.revoked", data("reason", "r" * 101)),
     ["data.reason", "at most 100"]),
    ("missing revocation reason", mutated("credential.revoked", data("reason", ...)),
     ["data.reason", "Field required"]),
    ("suspension reason too long", mutated("credential.suspended", data("reason", "r" * 501)),
     ["data.reason", "at most 500"]),
    ("missing failure_reason", mutated("payment.failed", data("failure_reason", ...)),
     ["data.failure_reason", "Field required"]),
    ("refund_reason too long", mutated("payment.refunded", data("refund_reason", "r" * 501)),
     ["data.refund_reason", "at most 500"]),
    ("transaction_id too long", mutated("payment.authorized", data("transaction_id", "t" * 256)),
     ["data.transaction_id", "at most 255"]),
    ("login reason too long", mutated("auth.login_failed", data("reason", "r" * 1001)),
     ["data.reason", "at most 1000"]),
    ("session_id too long", mutated("auth.login_succeeded", data("session_id", "s" * 256)),
     ["data.session_id", "at most 255"]),
    ("correlation_id too long", mutated("user.seen", setting("correlation_id", "c" * 256)),
     ["correlation_id", "at most 255"]),
    ("empty correlation_id", mutated("user.seen", setting("correlation_id", "")),
     ["correlation_id", "at least 1"]),
    ("source_system too long", mutated("user.seen", setting("source_system", "s" * 101)),
     ["source_system", "at most 100"]),
    ("tenant_id too long", mutated("user.seen", setting("tenant_id", "t" * 256)),
     ["tenant_id", "at most 255"]),
    ("actor ip too long", mutated("user.seen", setting("actor", {"ip_address": "1" * 46})),
     ["actor.ip_address", "at most 45"]),
    ("actor role too long", mutated("user.seen", setting("actor", {"role": "r" * 101})),
     ["actor.role", "at most 100"]),
    ("actor not an object", mutated("user.seen", setting("actor", "alice")), ["actor"]),
    ("missing data", mutated("user.seen", setting("data", ...)), ["data", "Field required"]),
    ("data not an object", mutated("user.seen", setting("data", [1])), ["data"]),
    ("NUL in a string", mutated("user.registered", data("email", "a\x00@example.com")),
     ["data.email", "NUL"]),
    ("NUL in metadata", mutated("user.registered", data("metadata", {"on": True, "k": "\x00"})),
     ["data.metadata.k", "NUL"]),
    ("oversize message", OVERSIZE, ["larger than the limit", str(MAX_EVENT_BYTES)]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "fragments"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_event_reason_names_field_and_rule(raw: bytes, fragments: list[str]) -> None:
    """Each invalid input raises InvalidEventError with a one-line reason naming field and rule."""
    reason = reason_of(raw)
    assert "\n" not in reason
    for fragment in fragments:
        assert fragment in reason, (fragment, reason)


def test_reason_counts_further_errors() -> None:
    """The reason is the first error, plus how many more there were."""
    raw = mutated(PAY, lambda d: d["data"].update(amount="1.001", currency="usd", payer_did=""))
    assert reason_of(raw) == (
        "data.payer_did: String should have at least 1 character (and 2 more errors)"
    )
    raw = mutated(PAY, lambda d: d["data"].update(amount="1.001", currency="usd"))
    assert reason_of(raw) == "data.amount: more than two decimal places (and 1 more error)"


def test_json_number_path_reports_other_errors() -> None:
    """An exact-number message that is also wrong elsewhere still names the first bad field."""
    raw = mutated(PAY, lambda d: d.update(event_id="x") or d["data"].update(amount="@a"), a="1.5")
    assert reason_of(raw).startswith("event_id: ")


def test_message_at_the_size_limit_is_accepted() -> None:
    """A message of exactly MAX_EVENT_BYTES is still valid."""
    document = as_json(builders.user_seen())
    document["data"]["padding"] = ""
    short = MAX_EVENT_BYTES - len(encode(document))
    document["data"]["padding"] = "x" * short
    raw = encode(document)
    assert len(raw) == MAX_EVENT_BYTES
    assert parse_event(raw).data.extra_fields()["padding"] == "x" * short


def test_python_construction_refuses_naive_datetimes() -> None:
    """Building an event in Python with a naive timestamp fails like the wire does."""
    with pytest.raises(ValidationError, match="RFC 3339 date-time"):
        builders.user_seen(occurred_at=datetime(2026, 1, 1))  # noqa: DTZ001 -- the point


def test_nul_in_an_ignored_field_is_harmless() -> None:
    """A NUL only matters where the event keeps it: ignored envelope fields are never stored."""
    document = as_json(builders.user_seen())
    document["trace"] = "\x00"
    data = parse_event(encode(document)).data
    assert isinstance(data, UserSeenData) and data.did == document["data"]["did"]


def test_escaped_backslash_u0000_is_not_a_nul() -> None:
    """The text `\\u0000` (an escaped backslash, then u0000) is an ordinary string."""
    event = builders.user_registered(phone="\\u0000")
    assert parse_event(serialize_event(event)) == upcast(event)


# --- routing -----------------------------------------------------------------------------------

TOPICS = {"user": "users", "credential": "credentials", "payment": "payments", "auth": "security"}


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
def test_topic_and_audit_names(event_type: str) -> None:
    """Each type routes to its domain topic and has its audit event_type."""
    assert topic_suffix(event_type) == TOPICS[event_type.split(".")[0]]
    assert topic_suffix(event_type) in DOMAIN_TOPIC_SUFFIXES
    assert audit_event_type(event_type) == event_type.replace(".", "_").upper()


def test_topic_names_and_unknown_domain() -> None:
    """The four domain topics and the dead-letter topic; an unknown domain is an error."""
    assert DOMAIN_TOPIC_SUFFIXES == ("users", "credentials", "payments", "security")
    assert DEAD_LETTER_SUFFIX == "dead-letter"
    assert audit_event_type("payment.captured") == "PAYMENT_CAPTURED"
    with pytest.raises(ValueError, match="order"):
        topic_suffix("order.created")


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
def test_message_key_is_the_aggregate_id(event_type: str) -> None:
    """user.* by DID, credential.* by credential id, payment.* by payment id, auth.* by DID."""
    event = FACTORIES[event_type]()
    data = event.data
    aggregate = {"user": "did", "credential": "credential_id", "payment": "payment_id",
                 "auth": "did"}[event_type.split(".")[0]]
    expected = str(getattr(data, aggregate))
    assert message_key(event) == expected.encode()


def test_auth_key_falls_back_to_session_then_event_id() -> None:
    """Without a DID, auth.* is keyed by the actor's session, then data's, then the event id."""
    with_actor = builders.login_failed(did=None, actor=builders.actor(session_id="s-actor"))
    assert message_key(with_actor) == b"s-actor"
    with_data = builders.login_failed(did=None, session_id="s-data")
    assert message_key(with_data) == b"s-data"
    bare = builders.login_failed(did=None)
    assert message_key(bare) == str(bare.event_id).encode()


def test_subject_did_per_type() -> None:
    """The audit subject is named by the event where it can be; otherwise it is looked up."""
    reg = builders.user_registered()
    assert reg.subject_did() == reg.data.did
    issued = builders.credential_issued()
    assert issued.subject_did() == issued.data.user_did
    pay = builders.payment_initiated()
    assert pay.subject_did() == pay.data.payer_did
    login = builders.login_succeeded()
    assert login.subject_did() == login.data.did
    assert builders.login_failed(did=None).subject_did() is None
    for event_type in ("credential.revoked", "credential.expired", "payment.captured",
                       "payment.refunded"):  # fmt: skip
        assert FACTORIES[event_type]().subject_did() is None


# --- property: every valid event round-trips ---------------------------------------------------

SAFE_TEXT = st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(SAFE_TEXT, max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(SAFE_TEXT, max_size=8), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
# Hypothesis takes naive bounds and attaches one of OFFSETS to each value.
TIMES = st.datetimes(
    min_value=datetime(1971, 1, 1),  # noqa: DTZ001
    max_value=datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=OFFSETS,
)


def money(minimum: str) -> st.SearchStrategy[Decimal]:
    return st.integers(0, 2).flatmap(
        lambda places: st.decimals(
            min_value=Decimal(minimum), max_value=Decimal("9999999999999999.99"), places=places
        )
    )


@functools.cache
def _limits(model: type[BaseModel], name: str) -> tuple[int, int | None]:
    schema = model.model_json_schema()["properties"][name]
    for variant in [schema, *schema.get("anyOf", [])]:
        if variant.get("type") == "string":
            return variant.get("minLength", 0), variant.get("maxLength")
    raise AssertionError(f"{model.__name__}.{name} is not a string field")


def field_values(model: type[BaseModel], name: str) -> st.SearchStrategy[Any]:
    """Valid values for one field of a `data` model or of Actor."""
    if name in ("credential_id", "payment_id"):
        return st.uuids()
    if name in ("verified_at", "expires_at", "proof_created_at"):
        return TIMES
    if name == "amount" and model is PaymentInitiatedData:  # v2: {value, currency}
        return st.fixed_dictionaries({"value": money("0.01"),
                                      "currency": st.from_regex(r"[A-Z]{3}", fullmatch=True)})
    if name == "amount":
        return money("0.01")
    if name in ("fee_amount", "tax_amount"):
        return money("0")
    if name == "status":
        return st.sampled_from(UserStatus)
    if name == "payment_type":
        return st.sampled_from(PaymentType)
    if name == "currency":
        return st.from_regex(r"[A-Z]{3}", fullmatch=True)
    if name == "metadata":
        return st.dictionaries(st.text(SAFE_TEXT, max_size=8), JSON_VALUES, max_size=3)
    low, high = _limits(model, name)
    return st.text(SAFE_TEXT, min_size=low, max_size=high if high is not None else 60)


def model_fields(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """Every required field, and each optional one either absent, null or a valid value."""
    required = {}
    optional = {}
    for name, field in model.model_fields.items():
        values = field_values(model, name)
        if field.is_required():
            required[name] = values
        else:
            optional[name] = st.none() | values
    return st.fixed_dictionaries(required, optional=optional)


EXTRA_DATA = st.dictionaries(st.from_regex(r"x_[a-z0-9_]{1,8}", fullmatch=True), JSON_VALUES,
                             max_size=3)  # fmt: skip


@st.composite
def events(draw: st.DrawFn, only: tuple[str, int] | None = None) -> EventBase:
    """Any valid event of any type and version (or `only` that one), built the way a producer
    would build it."""
    if only is None:
        event_type = draw(st.sampled_from(list(EVENT_TYPES)))
        version, model = draw(st.sampled_from(list(event_versions()[event_type].items())))
    else:
        event_type, version = only
        model = event_versions()[event_type][version]
    data_model: type[BaseModel] = model.model_fields["data"].annotation  # type: ignore[assignment]
    data = draw(model_fields(data_model)) | draw(EXTRA_DATA)
    if data_model in (PaymentInitiatedData, PaymentInitiatedDataV1):
        amount = data["amount"]["value"] if data_model is PaymentInitiatedData else data["amount"]
        total = amount + (data.get("fee_amount") or 0) + (data.get("tax_amount") or 0)
        if total >= Decimal(10) ** 16:
            data.pop("fee_amount", None)
            data.pop("tax_amount", None)
    envelope = {
        "event_id": draw(st.uuids()),
        "event_type": event_type,
        "schema_version": version,
        "occurred_at": draw(TIMES),
        "correlation_id": draw(st.text(SAFE_TEXT, min_size=1, max_size=255)),
        "causation_id": draw(st.none() | st.uuids()),
        "source_system": draw(st.text(SAFE_TEXT, min_size=1, max_size=100)),
        "tenant_id": draw(st.none() | st.text(SAFE_TEXT, max_size=255)),
        "actor": draw(st.none() | model_fields(Actor)),
        "data": data,
    }
    return model.model_validate(envelope)


@given(events())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_valid_event_round_trips(event: EventBase) -> None:
    """Generated valid events of every type and version survive serialize -> parse unchanged, in
    UTC (an older version comes back upcast, and its upcast round-trips too)."""
    raw = serialize_event(event)
    parsed = parse_event(raw)
    assert parsed == upcast(event)
    assert parse_wire(raw) == event
    assert parse_event(serialize_event(parsed)) == parsed
    assert serialize_event(parse_wire(raw)) == raw
    assert parsed.occurred_at.utcoffset() == timedelta(0)
    assert re.search(rb'"occurred_at":"[^"]+(Z|\+00:00)"', raw)
    assert isinstance(parsed.event_id, UUID)


def _v1_as_v2(document: dict[str, Any]) -> dict[str, Any]:
    """The v2 spelling of a v1 `payment.initiated` document, mapped by hand from docs/events.md
    (not by the upcaster under test)."""
    data = dict(document["data"])
    data["amount"] = {"value": data.pop("amount"), "currency": data.pop("currency")}
    if "reference_id" in data:
        data["merchant_reference"] = data.pop("reference_id")
    return {**document, "schema_version": 2, "data": data}


@given(events(only=("payment.initiated", 1)))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_upcast_equals_the_v2_message_of_the_same_payment(event: EventBase) -> None:
    """A v1 payment, upcast, is exactly the v2 message of that payment: same values, same
    fields set, same unknown fields; and its serialisation parses back to itself."""
    document = json.loads(serialize_event(event))
    if "merchant_reference" in document["data"]:
        return  # an unknown v1 field of that name: v2 declares it (see docs/events.md)
    up = upcast(event)
    v2 = parse_wire(json.dumps(_v1_as_v2(document)).encode())
    assert up == v2
    assert up.data.model_extra == v2.data.model_extra
    assert serialize_event(up) == serialize_event(v2)
    assert parse_event(serialize_event(up)) == up
    assert type(up).model_construct(**dict(up)) == up  # `_constructed` is model_construct
