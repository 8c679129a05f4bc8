"""The committed JSON Schemas (docs/schemas/) match the models and CONTRACT.md §3.

`jsonschema` is not a dependency, so a small checker below covers the keywords our schemas use
($ref, anyOf, oneOf, type, const, enum, required, properties, lengths, pattern, bounds).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from finpass_pipeline.events import EVENT_TYPES, serialize_event
from finpass_pipeline.jsonschema_export import export_schemas
from tests.factories import FACTORIES, payment_initiated, user_registered

COMMITTED = Path(__file__).resolve().parent.parent / "docs" / "schemas"

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
    "credential.issued": {"credential_id", "user_did", "issuer_id", "credential_type",
                          "credential_jwt"},
    "credential.revoked": {"credential_id", "reason"},
    "credential.suspended": {"credential_id"},
    "credential.reinstated": {"credential_id"},
    "credential.expired": {"credential_id"},
    "payment.initiated": {"payment_id", "payer_did", "payee_did", "amount", "currency"},
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


def resolve(root: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].removeprefix("#/$defs/")]
    return schema


_TYPES: dict[str, Any] = {
    "string": str, "object": dict, "array": list, "boolean": bool, "null": type(None),
    "integer": int, "number": (int, float),
}  # fmt: skip


def violations(
    root: dict[str, Any], schema: dict[str, Any], value: Any, path: str = ""
) -> list[str]:
    """What in `value` breaks `schema`, for the keywords these schemas use (empty: it conforms)."""
    schema = resolve(root, schema)
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema["oneOf"]
        results = [violations(root, option, value, path) for option in options]
        return [] if any(not r for r in results) else [f"{path}: matches no variant: {results}"]
    found = []
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        is_bool = isinstance(value, bool)
        if not any(isinstance(value, _TYPES[k]) and (k == "boolean" or not is_bool) for k in kinds):
            return [f"{path}: not {kinds}"]
    if "const" in schema and value != schema["const"]:
        found.append(f"{path}: not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{path}: not one of {schema['enum']}")
    if isinstance(value, str):
        if len(value) > schema.get("maxLength", len(value)):
            found.append(f"{path}: longer than {schema['maxLength']}")
        if len(value) < schema.get("minLength", 0):
            found.append(f"{path}: shorter than {schema['minLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            found.append(f"{path}: does not match {schema['pattern']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            found.append(f"{path}: below minimum")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            found.append(f"{path}: not above exclusiveMinimum")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            found.append(f"{path}: not below exclusiveMaximum")
    if isinstance(value, dict):
        found += [f"{path}.{name}: required" for name in schema.get("required", [])
                  if name not in value]  # fmt: skip
        for name, item in value.items():
            if name in schema.get("properties", {}):
                found += violations(root, schema["properties"][name], item, f"{path}.{name}")
    return found


def test_committed_schemas_equal_a_fresh_export(tmp_path: Path) -> None:
    """docs/schemas/ is exactly what `schema export` writes now (regenerate it if this fails)."""
    written = export_schemas(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in COMMITTED.iterdir())
    assert len(written) == len(EVENT_TYPES) + 1
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
    assert schema["properties"]["schema_version"]["const"] == 1
    data = resolve(schema, schema["properties"]["data"])
    assert set(data.get("required", [])) == DATA_REQUIRED[event_type]
    assert data["additionalProperties"] is True


def test_envelope_schema_is_the_union_by_event_type() -> None:
    """envelope.schema.json is a oneOf over every type, discriminated by event_type."""
    schema = load("envelope")
    assert schema["discriminator"]["propertyName"] == "event_type"
    assert set(schema["discriminator"]["mapping"]) == set(EVENT_TYPES)
    assert len(schema["oneOf"]) == len(EVENT_TYPES)


def test_money_schema_is_a_decimal_string_or_a_number() -> None:
    """Money fields accept a decimal-string pattern or a bounded number, not just "number"."""
    schema = load("payment.initiated")
    data = schema["$defs"]["PaymentInitiatedData"]["properties"]
    for name in ("amount", "fee_amount", "tax_amount"):
        text = json.dumps(data[name])
        assert '"type": "string"' in text and '"pattern"' in text, name
        assert '"type": "number"' in text and '"exclusiveMaximum": 10000000000000000' in text, name
    assert data["amount"]["anyOf"][1]["exclusiveMinimum"] == 0


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
def test_examples_conform_to_their_schemas(event_type: str) -> None:
    """A valid example of each type conforms to its own schema and to the envelope schema."""
    document = json.loads(serialize_event(FACTORIES[event_type]()))
    assert violations(load(event_type), load(event_type), document) == []
    assert violations(load("envelope"), load("envelope"), document) == []


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
def test_schema_refuses_what_the_parser_refuses(change: Any, where: str) -> None:
    """The schema agrees with parse_event on representative invalid payments."""
    schema = load("payment.initiated")
    document = json.loads(serialize_event(payment_initiated()))
    change(document)
    assert any(v.startswith(where) for v in violations(schema, schema, document))


def test_schema_lengths_match_the_columns() -> None:
    """A too-long email fails the schema as it fails the parser."""
    schema = load("user.registered")
    document = json.loads(serialize_event(user_registered()))
    document["data"]["email"] = "e" * 256
    assert any(v.startswith(".data.email") for v in violations(schema, schema, document))
