"""Decimal helpers shared by billing, exports and pages: currencies' minor units, plain text."""

from __future__ import annotations

from decimal import Decimal

# ISO 4217 minor units where they are not 2.
MINOR_UNITS = {"JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "BHD": 3, "KWD": 3, "OMR": 3}


def minor_unit(currency: str) -> Decimal:
    """The smallest amount of `currency` an invoice shows: Decimal("0.01") for USD."""
    return Decimal(1).scaleb(-MINOR_UNITS.get(currency, 2))


def plain(value: Decimal) -> str:
    """3.5000 -> "3.5", 1E+6 -> "1000000", 0E-12 -> "0": what a person would write, not the
    column's scale or scientific notation."""
    return format(value.normalize(), "f")
