"""Kubernetes resource quantities ("500m", "1.5Gi", "2e3") as exact numbers (pure).

The same grammar as the apiserver's `resource.Quantity`: a signed decimal number, then a
binary suffix (Ki … Ei), a decimal suffix (n u m k M G T P E) or a decimal exponent (e3).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))((?:[KMGTPE]i)|[numkMGTPE]?|[eE][+-]?[0-9]+)$")


class BadQuantity(ValueError):
    """Not a Kubernetes quantity."""


def parse_quantity(value: str | int | float) -> Decimal:
    """`value` as an exact number of base units (cores, bytes, devices)."""
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY.match(value.strip())
    if not match:
        raise BadQuantity(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 256Mi, 2)")
    number, suffix = match.groups()
    try:
        base = Decimal(number)
        if suffix in _BINARY:
            return base * _BINARY[suffix]
        if suffix in _DECIMAL:
            return base * _DECIMAL[suffix]
        return base * Decimal(10) ** int(suffix[1:])
    except InvalidOperation as err:
        raise BadQuantity(f"{value!r} is not a Kubernetes quantity") from err
