"""Money on the wire (CONTRACT.md §2, §5): exact decimals that fit `DECIMAL(18,2)`, never rounded.

A money field accepts a decimal string (`"1250.00"`) or a JSON number with at most two decimal
places *as written* (`12.5`, `100`, `0`). Zero is a valid amount. It refuses, with a reason naming
the rule (`explain`): more than two decimal places, a sign, NaN or Infinity, and anything that
does not fit `DECIMAL(18,2)` (10^16 or more). In a string, trailing zeros beyond the second place
carry no value (`"12.500"` is 12.50), so they are not an error; in a JSON number they are, because
the contract speaks of the number as written (a rule JSON Schema cannot state: see the README's
semantic table).

Validation is native (pydantic-core) for strings and integers, the hot path. A JSON number with
a fraction is read by `events.parse_event` from the message text as a `Decimal` (a binary float
would already have lost digits) and checked by `exact_decimal`, a Python function: the rare path.
The value keeps the scale it was given (`"1250.00"` stays `"1250.00"`, `100` stays `"100"`) and is
serialised to JSON as a string. In Python, a `float` is refused: its digits are not the sender's.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError
from pydantic_core import core_schema as cs

MONEY_LIMIT = Decimal(10) ** 16
"""Exclusive upper bound of a `DECIMAL(18,2)` column: 16 integer digits."""

MONEY_FIELDS = ("amount", "fee_amount", "tax_amount")
"""The `data` fields that hold money."""

_CENT = Decimal("0.01")
_UNIT = Decimal(1)
_MAX_TEXT = 40

# The spelling the fast path needs no function for: no leading zeros, at most two places.
_PLAIN_PATTERN = r"^(0|[1-9][0-9]{0,15})(\.[0-9]{1,2})?$"
# Every accepted string; the decimal places and the 10^16 bound are in the pattern.
STRING_PATTERN = r"^0*[0-9]{1,16}(\.[0-9]{1,2}0*)?$"
_DECIMAL_TEXT = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
_NOT_FINITE_TEXT = frozenset({"nan", "snan", "inf", "infinity"})

MONEY_ERROR = "money"
"""Error type of a refused money value; `explain(value)` gives the reason."""

MONEY_SPELLING = "money_spelling"
"""Error type of a JSON number written with more than two decimal places (e.g. `12.500`)."""


def _error(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


def _normalise(amount: Decimal) -> Decimal:
    exponent = int(amount.as_tuple().exponent)  # an int: the value is finite
    if exponent < -2:
        amount = amount.quantize(_CENT)  # only zeros are dropped: "12.500" is 12.50
    elif exponent > 0:
        amount = amount.quantize(_UNIT)  # 1E+2 -> 100, so it serialises as plain digits
    return amount.copy_abs()  # -0 -> 0; negatives never get here


def _range_problem(amount: Decimal) -> str | None:
    if not amount.is_finite():
        return "must be a finite number, not NaN or Infinity"
    if amount < 0:
        return "must not be negative"
    if amount >= MONEY_LIMIT:
        return "must be less than 10^16 (it must fit DECIMAL(18,2))"
    return None


def exact_decimal(amount: Decimal) -> Decimal:
    """Validate a JSON number read exactly (or a Python `Decimal`): at most two places as
    written, finite, not negative, less than 10^16."""
    problem = _range_problem(amount)
    if problem is not None:
        raise _error(MONEY_ERROR, problem)
    if int(amount.as_tuple().exponent) < -2:
        raise _error(MONEY_SPELLING, "more than two decimal places (as written)")
    return _normalise(amount)


def explain(value: Any) -> str:
    """Why `value` is not money: the reason a dead letter gives (only called on refusal)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        return "must be a decimal string or a JSON number"
    if isinstance(value, float):
        return "a float is not exact: pass a decimal string or a Decimal"
    if isinstance(value, str):
        if len(value) > _MAX_TEXT:
            return f"must be at most {_MAX_TEXT} characters"
        if value.strip().lstrip("+-").lower() in _NOT_FINITE_TEXT:
            return "must be a finite number, not NaN or Infinity"
        if not _DECIMAL_TEXT.fullmatch(value):
            return "must be a decimal string like '1250.00'"
        if value[0] in "+-":
            return "must not be negative" if value[0] == "-" else "must not have a sign"
        amount = Decimal(value)
    else:
        amount = Decimal(value)
    problem = _range_problem(amount)
    if problem is not None:
        return problem
    if int(amount.as_tuple().exponent) < -2 and amount.quantize(_CENT) != amount:
        return "more than two decimal places"
    if isinstance(value, Decimal):
        return "more than two decimal places (as written)"
    return "must be a decimal string or a JSON number"


class _MoneySchema:
    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> cs.CoreSchema:
        plain = cs.chain_schema([cs.str_schema(pattern=_PLAIN_PATTERN), cs.decimal_schema()])
        padded = cs.chain_schema(
            [
                cs.str_schema(pattern=STRING_PATTERN, max_length=_MAX_TEXT),
                cs.no_info_after_validator_function(_normalise, cs.decimal_schema()),
            ]
        )
        integer = cs.chain_schema(
            [cs.int_schema(strict=True, ge=0, lt=10**16), cs.decimal_schema()]
        )
        branches: list[cs.CoreSchema | tuple[cs.CoreSchema, str]] = [plain, padded, integer]
        exact = cs.no_info_after_validator_function(exact_decimal, cs.is_instance_schema(Decimal))
        options: dict[str, Any] = {
            "custom_error_type": MONEY_ERROR,
            "custom_error_message": "not a valid amount of money",
        }
        return cs.json_or_python_schema(
            json_schema=cs.union_schema(branches, mode="left_to_right", **options),
            python_schema=cs.union_schema([*branches, exact], mode="left_to_right", **options),
            serialization=cs.plain_serializer_function_ser_schema(
                _to_text, return_schema=cs.str_schema(), when_used="json"
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: cs.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "description": "Money, zero or more: a decimal string, or a JSON number with at most "
            "two decimal places as written; less than 10^16.",
            "anyOf": [
                {"type": "string", "pattern": STRING_PATTERN, "maxLength": _MAX_TEXT},
                {"type": "number", "minimum": 0, "exclusiveMaximum": 10**16, "multipleOf": 0.01},
            ],
        }


def _to_text(amount: Decimal) -> str:
    return format(amount, "f")


Money = Annotated[Decimal, _MoneySchema]
"""An amount of money, zero or more (`amount`, `fee_amount`, `tax_amount`)."""

MONEY_TOTAL = "money_total_too_large"
"""Error type of a payment whose amount + fee + tax does not fit `DECIMAL(18,2)`."""


def check_total(amount: Decimal, *others: Decimal | None) -> None:
    """Refuse a sum (e.g. `payments.total_amount`) that would not fit `DECIMAL(18,2)`."""
    total = amount + sum((other for other in others if other is not None), Decimal(0))
    if total >= MONEY_LIMIT:
        raise _error(
            MONEY_TOTAL,
            "amount + fee_amount + tax_amount must be less than 10^16 (total_amount is "
            "DECIMAL(18,2))",
        )
