"""What a twin at the ``twin`` and ``intelligent`` maturity levels may do to its device.

A ``twin`` closes the loop: it narrows the range a setpoint may take so that
its own prediction of a quantity stays within a limit over a horizon
(``Keep``). It never writes outside the limits the scenario declared
(``WriteLimit``). An ``intelligent`` twin also decides on its remaining
useful life: when a RUL quantile falls below a declared limit it derates the
device (lowers a setpoint's ceiling for the rest of the run) or raises a
maintenance request (``Decision``). Each decision fires once.

The twin only returns bands and requests; the runner applies them through the
rig and records them as events, so a run shows what the twin did and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy

from twinloop.twins.model import Arrays, DegradationModel
from twinloop.twins.xp import array_module, to_numpy

#: Setpoint values tried across a write's declared range when keeping a prediction within a limit.
CANDIDATES = 41
#: Cloud members the keep prediction runs on (an equally weighted resample of the filter's cloud).
MEMBERS = 200
#: Steps of the keep prediction over its horizon.
STEPS = 40


@dataclass(frozen=True)
class WriteLimit:
    """A setpoint the twin may move, and the range (in the signal's unit) the scenario allows it."""

    low: float
    high: float


@dataclass(frozen=True)
class Keep:
    """Hold the twin's ``quantile`` prediction of ``quantity``, ``horizon_s`` ahead, below/above ``limit`` via ``write``."""

    quantity: str
    limit: float
    direction: str  # "below" or "above"
    write: str
    horizon_s: float
    quantile: float = 0.95


@dataclass(frozen=True)
class Decision:
    """When the ``rul`` quantile (p05, p50, p95) falls below ``below_s``: derate and/or request maintenance."""

    rul: str
    below_s: float
    derate: dict[str, float] = field(default_factory=dict)
    maintenance: str | None = None


@dataclass(frozen=True)
class Policy:
    """Everything a twin may do to its device; empty at the ``model`` and ``shadow`` levels."""

    writes: dict[str, WriteLimit] = field(default_factory=dict)
    keep: tuple[Keep, ...] = ()
    decide: tuple[Decision, ...] = ()
    every_s: float | None = None

    def __bool__(self) -> bool:
        return bool(self.keep or self.decide)


def keep_band(model: DegradationModel, x: Arrays, inputs: Mapping[str, float], keep: Keep,
              limit: WriteLimit, target: float) -> tuple[float, float, bool, float]:
    """The setpoint band around ``target`` whose prediction keeps ``keep.quantity`` within its limit.

    ``x`` is an equally weighted cloud. Every member is stepped deterministically
    over the horizon under each of ``CANDIDATES`` setpoints spread across
    ``limit`` in one array call (members x candidates as the model's unit
    axis); a setpoint is safe when the ``keep.quantile`` of the members'
    value of the quantity at the end of the horizon (where the setpoint takes
    it; the present value, which no setpoint changes, is not judged) is within
    the limit. Returns
    (low, high, feasible, worst): the contiguous run of safe setpoints nearest
    ``target``; with none safe, the least unsafe setpoint as a one-point band,
    ``feasible`` False. ``worst`` is the predicted quantile at the band's
    point nearest ``target``.
    """
    xp = array_module(*x.values())
    n = next(iter(x.values())).shape[0]
    grid = numpy.linspace(limit.low, limit.high, CANDIDATES)
    reps = {k: xp.tile(v, CANDIDATES) for k, v in x.items()}            # candidate-major
    u: dict[str, Any] = {k: float(v) for k, v in inputs.items()}
    u[keep.write] = xp.repeat(xp.asarray(grid), n)
    sign = 1.0 if keep.direction == "below" else -1.0
    dt = keep.horizon_s / STEPS
    for _ in range(STEPS):
        reps = model.next_state(reps, u, dt)
    per = to_numpy(sign * _quantity(model, reps, u, keep.quantity)).reshape(CANDIDATES, n)
    predicted = sign * numpy.quantile(per, keep.quantile, axis=1)         # back in the quantity's sign
    safe = sign * predicted <= sign * keep.limit
    target = min(max(target, limit.low), limit.high)
    nearest = int(numpy.argmin(numpy.abs(grid - target)))
    if not safe.any():
        best = int(numpy.argmin(sign * predicted))
        return float(grid[best]), float(grid[best]), False, float(predicted[best])
    idx = numpy.flatnonzero(safe)
    anchor = int(idx[numpy.argmin(numpy.abs(idx - nearest))])
    lo = hi = anchor
    while lo > 0 and safe[lo - 1]:
        lo -= 1
    while hi < CANDIDATES - 1 and safe[hi + 1]:
        hi += 1
    low = limit.low if lo == 0 else float(grid[lo])
    high = limit.high if hi == CANDIDATES - 1 else float(grid[hi])
    at = int(numpy.clip(nearest, lo, hi))
    return low, high, True, float(predicted[at])


def _quantity(model: DegradationModel, x: Arrays, u: Mapping[str, Any], name: str) -> Any:
    """A model output (what a sensor would read) or, failing that, a state."""
    if name in model.outputs:
        return model.output(x, u)[name]
    return x[name]


def rul_seconds(value: float | None) -> float:
    """A RUL percentile as seconds, beyond-horizon (None) as infinity, for comparisons."""
    return math.inf if value is None else float(value)
