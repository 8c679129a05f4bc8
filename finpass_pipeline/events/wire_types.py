"""Field types of the wire contract (CONTRACT.md §2 and §5), each defined once for both truths.

Every type here carries two faces built from the same constants: a pydantic-core schema that
`parse_event` validates with (natively, no Python callback on the hot path) and the JSON Schema
that `schema export` publishes. Keeping the pattern, the bounds and the lengths in one place is
what makes "the exported schemas and the consumer accept exactly the same messages" checkable:
`tests/unit/test_wire_validity.py` generates messages from the exported schemas and mutations the
contract forbids, and compares.

- `Timestamp`: RFC 3339 `date-time` with `T`, seconds and an offset (`Z` or `±HH:MM`), in years
  0001-9999 after conversion to UTC; held as an aware `datetime` in UTC. Up to nine fractional
  digits are accepted; Python keeps six (microseconds), so the rest are truncated.
- `Uuid`: the canonical lower-case 8-4-4-4-12 spelling only.
- `TextN` / `RequiredN`: a string of at most N characters (at least one for `Required`) without
  U+0000 (PostgreSQL cannot store it); `Did`, `Jwt` likewise.
- `JsonObject`: a JSON object (free-form `metadata`) with no U+0000 in any key or string.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar
from uuid import UUID

from pydantic import BaseModel, GetCoreSchemaHandler, GetJsonSchemaHandler, StringConstraints
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema as cs

NO_NUL = r"^[^\u0000]*$"
"""Pattern of every string: PostgreSQL text cannot hold U+0000."""

DID_MAX_LENGTH = 500
"""Characters in a DID. 4 bytes each at most, so a DID (2,000 bytes) fits a btree index entry
(2,704 bytes), alone or next to a timestamp, in every index that holds one."""

TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
"""RFC 3339 §5.6 `date-time`, upper-case `T` and `Z`, no leap second (Python cannot hold one)."""

UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
"""The canonical spelling of a UUID: the one the Kafka key must repeat byte for byte."""

EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def _text(max_length: int, *, min_length: int = 0) -> StringConstraints:
    return StringConstraints(min_length=min_length, max_length=max_length, pattern=NO_NUL)


# `text(n)` of the module docstring, spelt out as aliases so type checkers see `str`.
Text45 = Annotated[str, _text(45)]
Text50 = Annotated[str, _text(50)]
Text100 = Annotated[str, _text(100)]
Text255 = Annotated[str, _text(255)]
Text500 = Annotated[str, _text(500)]
Required100 = Annotated[str, _text(100, min_length=1)]
Required255 = Annotated[str, _text(255, min_length=1)]
Required500 = Annotated[str, _text(500, min_length=1)]
Required1000 = Annotated[str, _text(1000, min_length=1)]
Did = Annotated[str, _text(DID_MAX_LENGTH, min_length=1)]
"""A required DID (see `DID_MAX_LENGTH`)."""

JWT_MAX_LENGTH = 65_536
"""Characters in `credential_jwt` (a `TEXT` column, not indexed: it is hashed)."""

Jwt = Annotated[str, _text(JWT_MAX_LENGTH, min_length=1)]


def _utc(value: datetime) -> datetime:
    # Safe: the bounds above were checked in UTC, so the conversion cannot overflow.
    return value.astimezone(UTC)


class _TimestampSchema:
    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> cs.CoreSchema:
        bounded = cs.datetime_schema(tz_constraint="aware", ge=EARLIEST, le=LATEST)
        from_text = cs.chain_schema([cs.str_schema(pattern=TIMESTAMP_PATTERN), bounded])
        return cs.no_info_after_validator_function(
            _utc,
            cs.json_or_python_schema(
                json_schema=from_text,
                python_schema=cs.union_schema(
                    [
                        cs.datetime_schema(
                            strict=True, tz_constraint="aware", ge=EARLIEST, le=LATEST
                        ),
                        from_text,
                    ],
                    custom_error_type="timestamp",
                    custom_error_message=(
                        "must be an RFC 3339 date-time with T, seconds and an offset, "
                        "in years 0001-9999 (UTC)"
                    ),
                ),
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: cs.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "format": "date-time",
            "pattern": TIMESTAMP_PATTERN,
            "description": "RFC 3339 date-time with T, seconds and an offset; years 0001-9999 "
            "after conversion to UTC.",
        }


Timestamp = Annotated[datetime, _TimestampSchema]
"""An RFC 3339 timestamp with an offset, held as an aware datetime in UTC."""


class _UuidSchema:
    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> cs.CoreSchema:
        from_text = cs.chain_schema([cs.str_schema(pattern=UUID_PATTERN), cs.uuid_schema()])
        return cs.json_or_python_schema(
            json_schema=from_text,
            python_schema=cs.union_schema(
                [cs.is_instance_schema(UUID), from_text],
                custom_error_type="uuid_canonical",
                custom_error_message="must be a UUID in canonical lower-case 8-4-4-4-12 form",
            ),
            serialization=cs.simple_ser_schema("uuid"),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: cs.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "uuid", "pattern": UUID_PATTERN}


Uuid = Annotated[UUID, _UuidSchema]
"""A UUID in its canonical lower-case spelling."""


class _SchemaVersionSchema:
    """`schema_version` fixed to one number: a new version of a type is a new model."""

    version: ClassVar[int] = 1

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> cs.CoreSchema:
        # JSON Schema's `const: 1` is the number 1, which 1.0 also spells; `true` and "1" are not.
        n = cls.version
        return cs.no_info_after_validator_function(
            int,
            cs.union_schema(
                [cs.int_schema(strict=True, ge=n, le=n), cs.float_schema(strict=True, ge=n, le=n)],
                custom_error_type="schema_version",
                custom_error_message=f"must be the number {n}",
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: cs.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"const": cls.version, "type": "integer"}


class _SchemaVersion2Schema(_SchemaVersionSchema):
    version = 2


SchemaVersion = Annotated[int, _SchemaVersionSchema]
"""`schema_version`: the number 1 (the first version of every type)."""

SchemaVersion2 = Annotated[int, _SchemaVersion2Schema]
"""`schema_version`: the number 2 (`payment.initiated` v2)."""


def schema_version_of(model: type[BaseModel]) -> int:
    """The `schema_version` an event model is fixed to (1, or 2 for `SchemaVersion2`)."""
    for item in model.model_fields["schema_version"].metadata:
        if isinstance(item, type) and issubclass(item, _SchemaVersionSchema):
            return item.version
    raise TypeError(f"{model.__name__}.schema_version is not a SchemaVersion")


def version_tag(value: Any) -> str | None:
    """The version of a type with several (`"v1"`, `"v2"`), for pydantic's union of them: the
    number as JSON spells it (1 or 1.0, never `true` or "1"), or None (refused)."""
    version = (value.get("schema_version") if isinstance(value, dict)
               else getattr(value, "schema_version", None))
    if type(version) is int or type(version) is float:
        return _VERSION_TAGS.get(version)
    return None


_VERSION_TAGS: dict[float, str] = {1: "v1", 2: "v2"}
VERSION_TAGS = frozenset(_VERSION_TAGS.values())
"""Tags `version_tag` gives: they appear in validation error locations, which omit them."""


JSON_VALUE_DEF = "JsonValueNoNul"
"""Name in `$defs` of the JSON value without U+0000 (free-form metadata and unknown fields)."""

JSON_VALUE_PLACEHOLDER: dict[str, Any] = {"$comment": JSON_VALUE_DEF}
"""Where a model's JSON Schema means `JSON_VALUE_SCHEMA`. pydantic cannot hold a `$ref` it did
not make, so `jsonschema_export` replaces this with `{"$ref": "#/$defs/JsonValueNoNul"}` and adds
the definition (recursive, hence not inlined)."""

JSON_VALUE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": NO_NUL},
        {"type": ["number", "boolean", "null"]},
        {"type": "array", "items": {"$ref": f"#/$defs/{JSON_VALUE_DEF}"}},
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": {"$ref": f"#/$defs/{JSON_VALUE_DEF}"},
        },
    ]
}
"""Any JSON value whose strings and member names hold no U+0000 (they end up in `jsonb`)."""


class _JsonObjectSchema:
    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> cs.CoreSchema:
        # The NUL rule on nested values is checked by `events.parse_event` (one walk, only when
        # the message holds an escaped U+0000), not here.
        return cs.dict_schema(keys_schema=cs.str_schema(), values_schema=cs.any_schema())

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: cs.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": JSON_VALUE_PLACEHOLDER,
        }


JsonObject = Annotated[dict[str, Any], _JsonObjectSchema]
"""A free-form JSON object (`metadata`)."""
