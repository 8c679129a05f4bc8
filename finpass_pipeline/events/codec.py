"""The event contract (CONTRACT.md §1-3): models, the `Event` union and the wire codec.

`parse_event` turns a Kafka message value into one of the `Event` models or raises
`InvalidEventError` with a one-line reason (the dead-letter reason); `serialize_event` is its
inverse. The models live in `events.models`, money in `events.money`, topics and keys in
`events.routing`; import all of it from the package, `finpass_pipeline.events`.

Compatibility is additive: unknown envelope fields are ignored, unknown `data` fields are kept
(`EventData.extra_fields()`), unknown `actor` fields are ignored. A change that is not additive is
a new `schema_version` of the type: the wire union (`WireEvent`) accepts every version, and
`upcast` turns an older one into the current model (`Event`), the only one the consumer applies.
`finpass-pipeline schema check` (`events.compat`) guards the versions already published.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Final, Union, get_args

import jiter
from pydantic import Discriminator, Field, Tag, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from finpass_pipeline.events.models import (
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
from finpass_pipeline.events.money import MONEY_ERROR, MONEY_FIELDS, MONEY_TOTAL, explain
from finpass_pipeline.events.wire_types import (
    NO_NUL,
    TIMESTAMP_PATTERN,
    VERSION_TAGS,
    schema_version_of,
    version_tag,
)

MAX_EVENT_BYTES = 1_048_576
"""A message value larger than this is invalid (and goes to the dead-letter topic)."""


# --- the union and the codec -------------------------------------------------------------------

CurrentEvent = (
    UserRegistered
    | UserKycVerified
    | UserStatusChanged
    | UserSeen
    | UserErasureRequested
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
    | LoginFailed
)

Event = Annotated[CurrentEvent, Field(discriminator="event_type")]
"""Any valid event in the current version of its type; `event_type` selects the model."""

EVENT_TYPES: dict[str, type[EventBase]] = {
    cls.model_fields["event_type"].default: cls for cls in get_args(CurrentEvent)
}
"""`event_type` string -> the current model class, in contract order."""

OLDER_VERSIONS: dict[str, dict[int, type[EventBase]]] = {
    "payment.initiated": {1: PaymentInitiatedV1},
}
"""Versions still accepted besides the current one, by type and `schema_version`."""

CURRENT_VERSIONS: dict[str, int] = {
    event_type: schema_version_of(model) for event_type, model in EVENT_TYPES.items()
}
"""`event_type` -> the `schema_version` of its current model (what our producers send)."""


def _any_version(event_type: str, current: type[EventBase]) -> Any:
    # A type with older versions is a union of them, told apart by `schema_version`.
    older = OLDER_VERSIONS.get(event_type)
    if not older:
        return current
    versions = {**older, CURRENT_VERSIONS[event_type]: current}
    choices = tuple(Annotated[m, Tag(f"v{v}")] for v, m in sorted(versions.items()))
    allowed = " or ".join(str(v) for v in sorted(versions))
    return Annotated[Union[choices], Discriminator(  # noqa: UP007 (built at run time)
        version_tag, custom_error_type="schema_version",
        custom_error_message=f"must be the number {allowed}")]


WireEvent: Any = Annotated[
    Union[tuple(_any_version(t, m) for t, m in EVENT_TYPES.items())],  # noqa: UP007
    Field(discriminator="event_type"),
]
"""Any valid event in any supported version: what the wire may carry (built from `Event` and
`OLDER_VERSIONS`, so a type added to one is on the wire too)."""

EVENT_ADAPTER: TypeAdapter[EventBase] = TypeAdapter(WireEvent)
"""Validates and serialises any version; prefer `parse_event`, which also reads JSON money
exactly and upcasts."""


def event_versions() -> dict[str, dict[int, type[EventBase]]]:
    """Every accepted (type, version) -> model, in contract order and version order."""
    return {event_type: {**OLDER_VERSIONS.get(event_type, {}), CURRENT_VERSIONS[event_type]: model}
            for event_type, model in EVENT_TYPES.items()}


def upcast(event: EventBase) -> Event:
    """The current version of a valid event (itself when it is current)."""
    if isinstance(event, PaymentInitiatedV1):
        return event.upcast()
    return event  # type: ignore[return-value]  # every other wire model is current


SCHEMA_RULE: Final = "schema"
"""`InvalidEventError.rule` of a refusal the exported JSON Schemas make too."""

SEMANTIC_RULES: Final[dict[str, str]] = {
    "byte-order-mark": "The message starts with a byte-order mark (RFC 8259 §8.1).",
    "duplicate-member": "A JSON object has the same member name twice.",
    "json-text": "The bytes are not UTF-8 JSON text (empty, NaN or Infinity literals), a string "
    "escapes a lone surrogate, or a number is beyond the double range (1e400).",
    "nesting-depth": "Objects and arrays nest more than 200 levels inside the message's object "
    "(anywhere, even in ignored fields).",
    "timestamp-range": "A timestamp in years 0001-9999 as written leaves them in UTC "
    "(9999-12-31T23:59:59-01:00).",
    "message-size": f"The message is larger than {MAX_EVENT_BYTES:,} bytes.",
    "money-spelling": "A money JSON number is written with more than two decimal places "
    "(`12.500`); JSON Schema sees only the value.",
    "money-total": "`amount + fee_amount + tax_amount` of `payment.initiated` is 10^16 or more.",
    "key": "The Kafka key is missing or differs from the subject's id (CONTRACT.md §1, §5).",
    "event-id-reused": "The `event_id` was applied before with different content.",
    "database": "PostgreSQL refused this event's rows (bisection pinned the error on it).",
}
"""Every reason the consumer refuses a message that the exported JSON Schemas accept, by rule
name. docs/events.md's semantic table lists exactly these; a test keeps the two equal. (State
transitions and uniqueness across rows are not refusals: they are applied as REJECTED audit
rows.)"""


class InvalidEventError(Exception):
    """A message that is not a valid event. It goes to the dead-letter topic and table with
    `reason`; the partition keeps flowing. Retrying it cannot help."""

    def __init__(self, reason: str, rule: str = SCHEMA_RULE) -> None:
        super().__init__(reason)
        self.reason = reason
        """One line naming the field and the rule, e.g. `data.amount: more than two decimal
        places`."""
        self.rule = rule
        """`SCHEMA_RULE` when the exported schemas refuse it too, else a `SEMANTIC_RULES` key."""


_BOM = b"\xef\xbb\xbf"
TIMESTAMP_RE = re.compile(TIMESTAMP_PATTERN)


def parse_event(raw: bytes) -> Event:
    """Validate a message value and return its event in the current version (`upcast`); raise
    `InvalidEventError` if invalid."""
    return upcast(parse_wire(raw))


def parse_wire(raw: bytes) -> EventBase:
    """Validate a message value and return its event model in the version it was sent in; raise
    `InvalidEventError` if invalid.

    jiter parses the text (refusing duplicate member names, lone surrogates and deep nesting, which
    the pydantic-core JSON reader lets through), then pydantic-core validates the Python objects
    natively. Money sent as a JSON number with a fraction is read again from the text as a
    `Decimal` first (the rare path; see `finpass_pipeline.events.money`).
    """
    if not raw:
        raise InvalidEventError("empty message", "json-text")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEventError(
            f"message is {len(raw)} bytes, larger than the limit of {MAX_EVENT_BYTES}",
            "message-size",
        )
    if raw.startswith(_BOM):
        raise InvalidEventError("message starts with a byte-order mark", "byte-order-mark")
    try:
        # Keys only in jiter's string cache: values (ids, hashes) rarely repeat (-0.7 µs).
        document = jiter.from_json(raw, catch_duplicate_keys=True, allow_inf_nan=False,
                                   cache_mode="keys")
    except ValueError as e:
        raise _not_json(raw, str(e)) from None
    data = document.get("data") if isinstance(document, dict) else None
    if (isinstance(data, dict) and document.get("event_type") == "payment.initiated"
            and _has_float_money(data)):
        _read_money_exactly(data, jiter.from_json(raw, float_mode="decimal")["data"])
    try:
        event = EVENT_ADAPTER.validate_python(document)
    except ValidationError as e:
        raise _invalid(raw, e.errors(include_url=False)) from None
    # U+0000 in a declared string fails its pattern above; free-form values (metadata, unknown
    # data fields) need a walk, and JSON can only carry a NUL escaped, so look for that first.
    if b"\\u0000" in raw:
        _refuse_nul(event)
    # jiter reads a number beyond the double range as inf, which would be stored as null. Only
    # free-form values can hold one (money is re-read exactly; ignored fields are not stored).
    # (`__dict__`, not getattr: a missing attribute costs 2 µs through BaseModel.__getattr__.)
    free = [event.data.__pydantic_extra__, event.data.__dict__.get("metadata")]
    if any(free) and _has_infinity(free):
        raise InvalidEventError("a number is beyond the double range", "json-text")
    return event


def _has_float_money(data: dict[str, Any]) -> bool:
    # Money as a JSON number with a fraction (`12.5`): v1 `amount`, v2 `amount.value`, fees.
    amount = data.get("amount")
    return (any(type(data.get(name)) is float for name in MONEY_FIELDS)
            or (type(amount) is dict and type(amount.get("value")) is float))


def _read_money_exactly(data: dict[str, Any], exact: dict[str, Any]) -> None:
    for name in MONEY_FIELDS:
        value = data.get(name)
        if type(value) is float:
            data[name] = exact[name]
        elif name == "amount" and type(value) is dict and type(value.get("value")) is float:
            value["value"] = exact[name]["value"]


def _has_infinity(value: Any) -> bool:
    if isinstance(value, float):
        return math.isinf(value)
    if isinstance(value, dict):
        return any(_has_infinity(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_infinity(v) for v in value)
    return False


def _not_json(raw: bytes, error: str) -> InvalidEventError:
    try:
        raw.decode()
    except UnicodeDecodeError as e:
        return InvalidEventError(f"not UTF-8: invalid byte at offset {e.start}", "json-text")
    if error.startswith("Detected duplicate key"):
        return InvalidEventError(f"duplicate member name: {error}", "duplicate-member")
    if error.startswith("recursion limit exceeded"):
        return InvalidEventError(f"nested too deep: {error}", "nesting-depth")
    if "surrogate" in error or "hex escape" in error:
        return InvalidEventError(f"not valid Unicode text: {error}", "json-text")
    return InvalidEventError(f"not JSON: {error}", "json-text")


def serialize_event(event: EventBase) -> bytes:
    """Compact UTF-8 JSON of `event`: money as strings, times in UTC with `Z`, nulls kept.

    `parse_event(serialize_event(e)) == e` for every valid event.
    """
    return event.model_dump_json().encode()


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


def invalid_event(error: ValidationError, raw: bytes = b"") -> InvalidEventError:
    """The `InvalidEventError` (one-line reason, rule) for a validation error of `Event` or one
    of its models; `raw` is the message, when there is one."""
    return _invalid(raw, error.errors(include_url=False))


def _invalid(raw: bytes, errors: list[ErrorDetails]) -> InvalidEventError:
    first = errors[0]
    rule = SCHEMA_RULE
    if first["type"] == MONEY_TOTAL:
        rule = "money-total"
    elif first["type"] == "string_pattern_mismatch" and first.get("ctx", {}).get(
        "pattern"
    ) == NO_NUL:
        first = {**first, "msg": "NUL character (\\u0000) not allowed"}
    elif first["type"] == "timestamp" and _beyond_utc_range(first["input"]):
        rule = "timestamp-range"
    elif first["type"] in ("model_type", "dict_type") and first["loc"]:
        # pydantic says "a valid dictionary or instance of Amount": speak JSON, and say why a
        # v1 amount fails in v2 (the most likely mistake of a producer upgrading).
        why = "must be a JSON object"
        if first["loc"][-1] == "amount" and "v2" in first["loc"]:
            why += " {value, currency} in schema_version 2"
        first = {**first, "msg": why}
    elif first["type"] == MONEY_ERROR:
        why = explain(first["input"])
        first = {**first, "msg": why}
        if why.endswith("(as written)"):
            rule = "money-spelling"
    return InvalidEventError(_reason(raw, [first, *errors[1:]]), rule)


def _beyond_utc_range(value: Any) -> bool:
    # Valid as written (pattern and calendar) but outside 0001-9999 once converted to UTC.
    if not isinstance(value, str) or not TIMESTAMP_RE.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False  # Feb 30 and the like: the schema's date-time format refuses those too
    return value[:4] in ("0001", "9999")


def _reason(raw: bytes, errors: list[ErrorDetails]) -> str:
    first = errors[0]
    kind, location = first["type"], first["loc"]
    if not location:
        if kind in ("dict_type", "model_attributes_type"):
            got = _JSON_KINDS.get(raw.lstrip()[:1], "a number")
            return f"not a JSON object: the message is {got}"
        if kind == "union_tag_not_found":
            return "missing event_type"
        if kind == "union_tag_invalid":
            return f"unknown event_type {first.get('ctx', {}).get('tag')!r}"
    if location and location[0] in EVENT_TYPES:
        location = location[1:]  # the union's tag, not part of the document
        if location and location[0] in VERSION_TAGS:
            location = location[1:]  # the version's tag, likewise
        elif not location and kind == "schema_version":
            location = ("schema_version",)
    reason = f"{'.'.join(str(part) for part in location) or 'event'}: {first['msg']}"
    if len(errors) > 1:
        more = len(errors) - 1
        reason += f" (and {more} more error{'s' if more > 1 else ''})"
    return reason
