"""The committed JSON Schemas (docs/schemas/) match the models and CONTRACT.md §3.

Instances are checked with `jsonschema.Draft202012Validator`, formats asserted (`date-time`,
`uuid`); `tests/test_wire_validity.py` compares the schemas with `parse_event` in depth.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from finpass_pipeline.events import (
    CURRENT_VERSIONS,
    EVENT_TYPES,
    InvalidEventError,
    event_versions,
    parse_event,
    serialize_event,
)
from finpass_pipeline.events.schema_export import export_schemas, versioned
from finpass_pipeline.events.wire_types import JSON_VALUE_DEF
from tests.support import REPO_ROOT
from tests.support.builders import (
    CURRENT_FACTORIES,
    payment_initiated,
    payment_initiated_v2,
    user_registered,
)

COMMITTED = REPO_ROOT / "docs" / "schemas"

ENVELOPE_REQUIRED = {
    "event_id", "event_type", "schema_version", "occurred_at", "correlation_id", "source_system",
    "data",
}  # fmt: skip

# The bold fields of CONTRACT.md §3, per event type.
DATA_REQUIRED = {
    "user.registered": {"did"},
    "user.kyc_verified": {"did"},
    "user.status_changed": {"did", "status"},
    "user.seen": {"did"},
    "user.erasure_requested": {"did"},
    "credential.issued": {"credential_id", "user_did", "issuer_id", "credential_type",
                          "credential_jwt"},
    "credential.revoked": {"credential_id", "reason"},
    "credential.suspended": {"credential_id"},
    "credential.reinstated": {"credential_id"},
    "credential.expired": {"credential_id"},
    "payment.initiated.v1": {"payment_id", "payer_did", "payee_did", "amount", "currency"},
    "payment.initiated": {"payment_id", "payer_did", "payee_did", "amount"},
    "payment.authorized": {"payment_id"},
    "payment.captured": {"payment_id"},
    "payment.failed": {"payment_id", "failure_reason"},
    "payment.refunded": {"payment_id", "refund_reason"},
    "payment.cancelled": {"payment_id"},
    "auth.login_succeeded": {"did"},
    "auth.login_failed": {"reason"},
}  # fmt: skip


def load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((COMMITTED / f"{name}.schema.json").read_text("utf-8"))
    return schema


def validator(name: str) -> Draft202012Validator:
    """A Draft 2020-12 validator of the committed schema `name`, formats asserted."""
    return Draft202012Validator(load(name), format_checker=Draft202012Validator.FORMAT_CHECKER)


def resolve(root: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].removeprefix("#/$defs/")]
    return schema


def violations(name: str, value: Any) -> list[str]:
    """Where `value` breaks the committed schema `name`, as `.a.b: message` (empty: it conforms).

    A missing required member is reported at its own path (`.event_id: ...`).
    """
    found = []
    for error in validator(name).iter_errors(value):
        path = list(error.absolute_path)
        if error.validator == "required":
            path += [member for member in error.validator_value if member not in error.instance]
        found.append("".join(f".{part}" for part in path) + f": {error.message}")
    return found


@pytest.mark.parametrize("path", sorted(COMMITTED.glob("*.schema.json")), ids=lambda p: p.name)
def test_committed_schemas_are_valid_draft_2020_12(path: Path) -> None:
    """Every committed schema is itself a valid Draft 2020-12 schema (metaschema check)."""
    schema = json.loads(path.read_text("utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_committed_schemas_equal_a_fresh_export(tmp_path: Path) -> None:
    """docs/schemas/ is exactly what `schema export` writes now (regenerate it if this fails)."""
    written = export_schemas(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in COMMITTED.iterdir())
    versions = sum(len(v) for v in event_versions().values())
    assert len(written) == 1 + len(EVENT_TYPES) + versions  # envelope, current, every version
    for event_type, model_versions in event_versions().items():
        current = versioned(event_type, CURRENT_VERSIONS[event_type])
        assert load(current) == load(event_type)  # the unversioned file is the current version
        assert set(model_versions) <= {1, 2}
    for path in written:
        assert (COMMITTED / path.name).read_text("utf-8") == path.read_text("utf-8"), path.name


def test_export_is_deterministic(tmp_path: Path) -> None:
    """Two exports are byte-identical, pretty-printed and end with a newline."""
    first = {p.name: p.read_bytes() for p in export_schemas(tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in export_schemas(tmp_path / "b")}
    assert first == second
    assert all(content.endswith(b"}\n") and b'\n  "' in content for content in first.values())


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
def test_type_schema_requires_the_contract_fields(event_type: str) -> None:
    """Each type's schema fixes event_type and requires the envelope and its bold data fields."""
    schema = load(event_type)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema["required"]) == ENVELOPE_REQUIRED
    assert schema["properties"]["event_type"]["const"] == event_type
    assert schema["properties"]["schema_version"]["const"] == CURRENT_VERSIONS[event_type]
    data = resolve(schema, schema["properties"]["data"])
    assert set(data.get("required", [])) == DATA_REQUIRED[event_type]
    # Unknown data fields are allowed (kept in metadata): any JSON value without U+0000.
    assert data["additionalProperties"] == {"$ref": f"#/$defs/{JSON_VALUE_DEF}"}
    document = json.loads(serialize_event(CURRENT_FACTORIES[event_type]()))
    document["data"]["x_newer_field"] = {"nested": [1, "two", None]}
    assert violations(event_type, document) == []


def test_older_version_schema_requires_its_fields() -> None:
    """payment.initiated.v1 is the v1 contract: schema_version 1, amount and currency apart."""
    schema = load("payment.initiated.v1")
    assert schema["properties"]["schema_version"]["const"] == 1
    data = resolve(schema, schema["properties"]["data"])
    assert set(data["required"]) == DATA_REQUIRED["payment.initiated.v1"]
    assert "reference_id" in data["properties"] and "merchant_reference" not in data["properties"]
    document = json.loads(serialize_event(payment_initiated()))
    assert violations("payment.initiated.v1", document) == []
    assert violations("payment.initiated", document) != []  # a v1 message is no v2 message
    assert violations("envelope", document) == []  # but the envelope accepts both


def test_envelope_schema_is_the_union_by_event_type() -> None:
    """envelope.schema.json is a oneOf over every type, discriminated by event_type."""
    schema = load("envelope")
    assert schema["discriminator"]["propertyName"] == "event_type"
    assert set(schema["discriminator"]["mapping"]) == set(EVENT_TYPES)
    assert len(schema["oneOf"]) == len(EVENT_TYPES)


def test_money_schema_is_a_decimal_string_or_a_number() -> None:
    """Money fields accept a decimal-string pattern or a bounded number, not just "number"."""
    v1 = load("payment.initiated.v1")
    v2 = load("payment.initiated")
    data_v1 = v1["$defs"]["PaymentInitiatedDataV1"]["properties"]
    data_v2 = v2["$defs"]["PaymentInitiatedData"]["properties"]
    amount_v2 = v2["$defs"]["Amount"]["properties"]
    for prop in (data_v1["amount"], data_v1["fee_amount"], data_v1["tax_amount"],
                 amount_v2["value"], data_v2["fee_amount"], data_v2["tax_amount"]):
        text = json.dumps(prop)
        assert '"type": "string"' in text and '"pattern"' in text, prop
        assert '"type": "number"' in text and '"exclusiveMaximum": 10000000000000000' in text
    for amount in (data_v1["amount"], amount_v2["value"]):
        assert amount["anyOf"][1]["minimum"] == 0  # zero is a valid amount (CONTRACT.md §5)
    zero = json.loads(serialize_event(payment_initiated(amount="0")))
    assert violations("payment.initiated.v1", zero) == []
    zero["data"]["amount"] = 0
    assert violations("payment.initiated.v1", zero) == []
    zero = json.loads(serialize_event(payment_initiated_v2(amount="0")))
    assert violations("payment.initiated", zero) == []
    zero["data"]["amount"]["value"] = 0
    assert violations("payment.initiated", zero) == []


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
def test_examples_conform_to_their_schemas(event_type: str) -> None:
    """A valid example of each type conforms to its own schema and to the envelope schema."""
    document = json.loads(serialize_event(CURRENT_FACTORIES[event_type]()))
    assert violations(event_type, document) == []
    assert violations("envelope", document) == []


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d["data"].update(amount="12.345"), ".data.amount"),
        (lambda d: d["data"].update(amount=-1), ".data.amount"),
        (lambda d: d["data"].update(currency="usd"), ".data.currency"),
        (lambda d: d["data"].update(payment_type="ONCE"), ".data.payment_type"),
        (lambda d: d.update(schema_version=2), ".schema_version"),
        (lambda d: d.pop("event_id"), ".event_id"),
    ],
)
def test_schema_refuses_what_the_parser_refuses(
    change: Callable[[dict[str, Any]], object], where: str
) -> None:
    """The schema agrees with parse_event on representative invalid v1 payments."""
    document = json.loads(serialize_event(payment_initiated()))
    change(document)
    assert any(v.startswith(f"{where}:") for v in violations("payment.initiated.v1", document))
    assert violations("envelope", document) != []
    with pytest.raises(InvalidEventError):
        parse_event(json.dumps(document).encode())


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d["data"]["amount"].update(value="12.345"), ".data.amount.value"),
        (lambda d: d["data"]["amount"].update(currency="usd"), ".data.amount.currency"),
        (lambda d: d["data"]["amount"].update(extra=1), ".data.amount"),
        (lambda d: d["data"].update(amount="12.00"), ".data.amount"),
        (lambda d: d.update(schema_version=1), ".data.currency"),  # v1 needs its currency
        (lambda d: d.update(schema_version=3), ".schema_version"),
    ],
)
def test_v2_schema_refuses_what_the_parser_refuses(
    change: Callable[[dict[str, Any]], object], where: str
) -> None:
    """The same for v2: the structured amount, and a version number that does not fit."""
    document = json.loads(serialize_event(payment_initiated_v2()))
    change(document)
    schema = "payment.initiated.v1" if document["schema_version"] == 1 else "payment.initiated"
    assert any(v.startswith(f"{where}:") for v in violations(schema, document)), (
        violations(schema, document))
    assert violations("envelope", document) != []
    with pytest.raises(InvalidEventError):
        parse_event(json.dumps(document).encode())


def test_schema_lengths_match_the_columns() -> None:
    """A too-long email fails the schema as it fails the parser."""
    document = json.loads(serialize_event(user_registered()))
    document["data"]["email"] = "e" * 255
    assert violations("user.registered", document) == []
    document["data"]["email"] = "e" * 256
    assert any(v.startswith(".data.email:") for v in violations("user.registered", document))
    with pytest.raises(InvalidEventError):
        parse_event(json.dumps(document).encode())
