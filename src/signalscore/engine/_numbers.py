"""Number helpers: exact sums and the textual form of numbers in ``matchedValue``."""

from __future__ import annotations

import math
from collections.abc import Iterable

#: Floats with an integral value and a magnitude below this are printed as integers ("874",
#: not "874.0"); beyond it ``repr`` is used ("1e+16"), so a huge float never turns into a
#: long run of digits that it does not really have.
_INTEGRAL_FLOAT_LIMIT = 1e16

#: Largest magnitude up to which every integer is exactly representable as a float.
EXACT_INT_LIMIT = 2**53


def format_number(value: int | float) -> str:
    """Format a number for ``matchedValue``: integers without ``.0``, other floats as ``repr``."""
    if type(value) is int:
        return str(value)
    if isinstance(value, int):  # an int subclass other than bool (bools never reach here)
        return str(int(value))
    value = float(value)
    if value.is_integer() and -_INTEGRAL_FLOAT_LIMIT < value < _INTEGRAL_FLOAT_LIMIT:
        return str(int(value))
    return repr(value)


def exact_sum(points: Iterable[int | float]) -> int | float:
    """Sum points without depending on their order.

    All ``int`` → the exact ``int`` sum (so JSON keeps showing ``10``, not ``10.0``); otherwise
    ``math.fsum``, the correctly rounded sum of the exact values.
    """
    items = list(points)
    if all(type(p) is int for p in items):
        return sum(items)
    return math.fsum(items)
