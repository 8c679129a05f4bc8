"""Money on the wire (CONTRACT.md §2): exact decimals that fit `DECIMAL(18,2)`, never rounded.

A money field accepts a decimal string (`"1250.00"`) or a JSON number that is exact (`12.5`,
`100`). It rejects, with a reason naming the rule: more than two decimal places, a negative value,
NaN or Infinity, and anything that does not fit `DECIMAL(18,2)` (i.e. 10^16 or more). Trailing
zeros beyond the second place carry no value (`"12.500"` is 12.50), so they are not an error.

The value keeps the scale it was given (`"1250.00"` stays `"1250.00"`, `100` stays `"100"`) and is
serialised to JSON as a string. In Python, a `float` is refused: it is a binary approximation, and
its digits are not the digits the sender meant.

JSON numbers need care: pydantic-core parses a JSON number with a fraction into a binary float
before any validator sees it (`9999999999999999.99` arrives as `1e16`). In JSON mode a money
validator that meets a float therefore reports `JSON_NUMBER_NEEDS_EXACT_PARSE` instead of guessing;
`events.parse_event` then reads those numbers from the text as `Decimal`s and validates again with
them in the context (`EXACT_JSON_NUMBERS`).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, ValidationInfo, WithJsonSchema
from pydantic_core import PydanticCustomError

MONEY_LIMIT = Decimal(10) ** 16
"""Exclusive upper bound of a `DECIMAL(18,2)` column: 16 integer digits."""

MONEY_FIELDS = ("amount", "fee_amount", "tax_amount")
"""The `data` fields that hold money."""

JSON_NUMBER_NEEDS_EXACT_PARSE = "money_json_number"
"""Error type raised in JSON mode when a money field arrived as a JSON number with a fraction."""

EXACT_JSON_NUMBERS = "exact_json_numbers"
"""Validation-context key: {money field name: the `Decimal` read from that JSON number's text}."""

_CENT = Decimal("0.01")
_UNIT = Decimal(1)
# A sign is allowed by the syntax only so that "-5.00" is reported as negative, not as malformed.
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_PLAIN_TEXT = re.compile(r"(?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,2})?")
_NOT_FINITE_TEXT = frozenset({"nan", "snan", "inf", "infinity"})

# JSON Schema of the values accepted; the decimal places and the 10^16 bound are in the pattern.
_STRING_PATTERN = r"^0*[0-9]{1,16}(\.[0-9]{1,2}0*)?$"


def _error(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(f"money_{kind}", message)


def _to_decimal(value: Any, info: ValidationInfo) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str):
        if _DECIMAL_TEXT.fullmatch(value):
            return Decimal(value)
        if value.strip().lstrip("+-").lower() in _NOT_FINITE_TEXT:
            raise _error("not_finite", "must be a finite number, not NaN or Infinity")
        raise _error("syntax", "must be a decimal string like '1250.00'")
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)  # JSON integers arrive as exact Python ints
    if isinstance(value, float):
        if info.mode == "json":
            exact = (info.context or {}).get(EXACT_JSON_NUMBERS, {}).get(info.field_name)
            if isinstance(exact, Decimal):
                return exact
            raise PydanticCustomError(
                JSON_NUMBER_NEEDS_EXACT_PARSE,
                "a JSON number here must be read exactly: parse the message with parse_event()",
            )
        raise _error("float", "a float is not exact: pass a decimal string or a Decimal")
    raise _error("type", "must be a decimal string or a JSON number")


def _validate(value: Any, info: ValidationInfo, *, positive: bool) -> Decimal:
    if isinstance(value, str) and _PLAIN_TEXT.fullmatch(value):
        # Hot path: this syntax alone proves finite, non-negative, < 10^16, at most two places.
        amount = Decimal(value)
        if positive and not amount:
            raise _error("not_positive", "must be greater than zero")
        return amount
    amount = _to_decimal(value, info)
    if not amount.is_finite():
        raise _error("not_finite", "must be a finite number, not NaN or Infinity")
    if amount < 0:
        raise _error("negative", "must not be negative")
    if positive and amount == 0:
        raise _error("not_positive", "must be greater than zero")
    if amount >= MONEY_LIMIT:
        raise _error("too_large", "must be less than 10^16 (it must fit DECIMAL(18,2))")
    exponent = int(amount.as_tuple().exponent)  # an int, not 'n'/'F': the value is finite
    if exponent < -2:
        cents = amount.quantize(_CENT)
        if cents != amount:
            raise _error("scale", "more than two decimal places")
        amount = cents  # only zeros were dropped: "12.500" is 12.50
    elif exponent > 0:
        amount = amount.quantize(_UNIT)  # 1E+2 -> 100, so it serialises as plain digits
    return amount.copy_abs()  # -0.00 -> 0.00; negatives were refused above


def _positive(value: Any, info: ValidationInfo) -> Decimal:
    return _validate(value, info, positive=True)


def _non_negative(value: Any, info: ValidationInfo) -> Decimal:
    return _validate(value, info, positive=False)


def _to_text(amount: Decimal) -> str:
    return format(amount, "f")


def _schema(description: str, number_bound: str) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "description": description,
            "anyOf": [
                {"type": "string", "pattern": _STRING_PATTERN},
                {"type": "number", number_bound: 0, "exclusiveMaximum": 10**16},
            ],
        }
    )


PositiveMoney = Annotated[
    Decimal,
    PlainValidator(_positive),
    PlainSerializer(_to_text, return_type=str, when_used="json"),
    _schema(
        "Money greater than zero: a decimal string or an exact JSON number, at most two decimal "
        "places, less than 10^16.",
        "exclusiveMinimum",
    ),
]
"""An amount that must be > 0 (`payment.initiated` `amount`)."""

Money = Annotated[
    Decimal,
    PlainValidator(_non_negative),
    PlainSerializer(_to_text, return_type=str, when_used="json"),
    _schema(
        "Money, zero or more: a decimal string or an exact JSON number, at most two decimal "
        "places, less than 10^16.",
        "minimum",
    ),
]
"""An amount that may be zero but not negative (`fee_amount`, `tax_amount`)."""


def check_total(amount: Decimal, *others: Decimal | None) -> None:
    """Refuse a sum (e.g. `payments.total_amount`) that would not fit `DECIMAL(18,2)`."""
    total = amount + sum((other for other in others if other is not None), Decimal(0))
    if total >= MONEY_LIMIT:
        raise _error(
            "total_too_large",
            "amount + fee_amount + tax_amount must be less than 10^16 (total_amount is "
            "DECIMAL(18,2))",
        )
