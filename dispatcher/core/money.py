"""Amounts: Decimal, at most two places, never negative, written in plain notation (no minus zero, no
exponent). Below the models, so the arrangement's terms (dispatcher.core.arrangements) and the models
both use the one definition."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from typing import Annotated

from pydantic import AfterValidator, Field

_CENTS = Decimal("0.01")
_UNITS = Decimal("1")


def _plain_amount(value: Decimal) -> Decimal:
    """The amount as written in plain notation: "-0.00" is 0.00 (no minus zero in the record, the API or a
    letter), "1E+2" is 100 and "5.000" is 5.00 (past two places only zeros get this far)."""
    if value.same_quantum(_CENTS) or value.same_quantum(_UNITS):  # nearly every amount: ~0.2 µs, not ~0.8
        return value.copy_abs() if value.is_signed() else value  # ge=0 lets only a minus zero be signed
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        value = value.quantize(_UNITS)
    elif isinstance(exponent, int) and exponent < -2:
        value = value.quantize(_CENTS)
    return value.copy_abs() if value.is_zero() else value


_AMOUNT = Field(ge=0, max_digits=14, decimal_places=2)
Money = Annotated[Decimal, _AMOUNT, AfterValidator(_plain_amount)]
# `gt` in the type, before the validator: given on a field of `Money | None` it would follow the validator,
# and reach the JSON schema as an unknown "gt" keyword instead of exclusiveMinimum.
PositiveMoney = Annotated[Decimal, _AMOUNT, Field(gt=0), AfterValidator(_plain_amount)]


def cents(value: Decimal) -> Decimal:
    """The amount cut to whole cents (never rounded up: an offer or an instalment never asks for more)."""
    return value.quantize(_CENTS, rounding=ROUND_DOWN)
