"""Units through pint: quantities written in scenarios and rig profiles, converted at load.

A scenario may write ``125 degC`` or ``398 K`` against a signal in ``degC``,
``250 ms`` or ``0.25 s`` for a duration; each is converted once, before the run,
and a dimension mismatch is a ``ValueError`` the loader turns into an error
naming file, line and key.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

import pint

_QUANTITY = re.compile(r"^\s*([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)\s*(.*?)\s*$")


@lru_cache(maxsize=1)
def registry() -> pint.UnitRegistry:
    """The one unit registry (building one takes a moment, so it is shared)."""
    return pint.UnitRegistry(cache_folder=None)


def unit(text: str) -> pint.Unit:
    """A unit from its name (``degC``, ``W``, ``mm/s``, ``1`` for dimensionless)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected a unit name such as 'degC', 'W' or '1', got {text!r}")
    try:
        return registry().Unit(text)
    except Exception as err:  # pint raises several kinds (undefined, syntax, tokenize)
        raise ValueError(f"unknown unit {text!r} ({type(err).__name__})") from None


def quantity(value: Any, default_unit: str | None = None) -> pint.Quantity:
    """``"125 degC"``, or a bare number in ``default_unit`` (an error where none is given)."""
    ureg = registry()
    if isinstance(value, bool):
        raise ValueError(f"expected a number or a quantity such as '30 W', got {value!r}")
    if isinstance(value, (int, float)):
        if default_unit is None:
            raise ValueError(f"{value!r} needs a unit (write it as e.g. '{value} s')")
        q = ureg.Quantity(float(value), unit(default_unit))
    elif isinstance(value, str):
        # Number and unit are split here: pint reads "2 degC" as 2 * degC, which offset
        # units refuse.
        m = _QUANTITY.match(value)
        if m is None:
            raise ValueError(f"cannot read {value!r} as a quantity such as '30 W' or '5 min'")
        number, name = float(m.group(1)), m.group(2).strip()
        if not name:
            return quantity(number, default_unit)
        q = ureg.Quantity(number, unit(name))
    else:
        raise ValueError(f"expected a number or a quantity such as '30 W', got {value!r}")
    if not isinstance(q.magnitude, (int, float)) or not math.isfinite(q.magnitude):
        raise ValueError(f"{value!r} is not a finite quantity")
    return q


def convert(value: Any, to: str, default_unit: str | None = None) -> float:
    """``value`` as a float in unit ``to``; a bare number is taken in ``default_unit``."""
    q = quantity(value, default_unit)
    try:
        return float(q.to(unit(to)).magnitude)
    except pint.DimensionalityError:
        raise ValueError(f"{_show(value, default_unit)} is {_dim(q)}, but the signal's unit '{to}' "
                         f"is {_dim(registry().Quantity(1, unit(to)))}") from None


def convert_delta(value: Any, to: str, default_unit: str | None = None) -> float:
    """A difference (a band, a tolerance) in unit ``to``: ``2 degC`` is 2 K, not 275.15 K."""
    q = quantity(value, default_unit)
    zero = registry().Quantity(0, q.units)
    try:
        return float(q.to(unit(to)).magnitude - zero.to(unit(to)).magnitude)
    except pint.DimensionalityError:
        raise ValueError(f"{_show(value, default_unit)} is {_dim(q)}, but the signal's unit '{to}' "
                         f"is {_dim(registry().Quantity(1, unit(to)))}") from None


def rate(value: Any, to: str) -> float:
    """A rate of change (``2 W/s``, ``5 degC/min``) in ``to`` per second."""
    q = quantity(value)
    target = unit(to)
    try:
        zero = registry().Quantity(0, target)
        per_second = registry().Quantity(1, target) - zero  # a delta unit for offset units
        return float(q.to(per_second.units / registry().second).magnitude)
    except pint.DimensionalityError:
        raise ValueError(f"{value!r} is not a rate of '{to}' (expected e.g. '1 {to}/s')") from None


def seconds(value: Any) -> float:
    """A duration in seconds; it must carry a time unit (``250 ms``, ``5 min``, ``2 h``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError(f"a duration needs a unit: write '{value} s', '{value} min' or similar")
    q = quantity(value)
    if not q.check("[time]"):
        raise ValueError(f"expected a duration such as '30 s', '250 ms' or '5 min', got {value!r}")
    s = float(q.to("s").magnitude)
    if s < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return s


def _show(value: Any, default_unit: str | None) -> str:
    return f"'{value} {default_unit}'" if isinstance(value, (int, float)) else repr(value)


def _dim(q: pint.Quantity) -> str:
    dims = str(q.dimensionality)
    return "dimensionless" if dims == "dimensionless" else dims
