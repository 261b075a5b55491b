"""A fleet's outcome: per-group failure-time distribution, failures over time, survivors' health and RUL.

Plain data and NumPy (no Ray), built from every unit's failure step
(``NEVER``: not failed within the horizon) and the survivors' health and
RUL, whichever way the units were stepped (``fleet_shard``) and split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy

from twinloop.twins.fleet_spec import FleetPlan

#: Failure step of a unit that has not failed.
NEVER = numpy.iinfo(numpy.int32).max
QUANTILES = {"p05": 0.05, "p50": 0.50, "p95": 0.95}


def quantile_steps(steps: numpy.ndarray, n: int) -> dict[str, int | None]:
    """Inverted-CDF quantiles (an actual unit's value) of ``n`` failure steps; None where NEVER."""
    if n == 0:
        return {k: None for k in QUANTILES}
    idx = sorted({max(0, math.ceil(q * n) - 1) for q in QUANTILES.values()})
    part = numpy.partition(steps, idx)
    out = {}
    for k, q in QUANTILES.items():
        v = int(part[max(0, math.ceil(q * n) - 1)])
        out[k] = None if v == NEVER else v
    return out


def significant(x: float | None) -> float | None:
    """Six significant digits (None for a missing or infinite value): what a report shows."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.6g}")


def float_quantiles(a: numpy.ndarray) -> dict[str, float | None]:
    if a.size == 0:
        return {k: None for k in QUANTILES}
    qs = numpy.quantile(a, list(QUANTILES.values()), method="inverted_cdf")
    return {k: significant(float(v)) for k, v in zip(QUANTILES, qs)}


@dataclass
class GroupResult:
    """One group's outcome: failure-time distribution, failures over time, survivors at the horizon.

    Failure times are step ends (seconds from the start). A quantile past the
    horizon (fewer units failed than it needs) is None. ``survivor_rul_s``
    extrapolates each survivor's health decline over the last call linearly,
    a cheap estimate, optimistic for wear that accelerates.
    """

    name: str
    model: str
    units: int
    failed: int
    fraction_failed: float
    failure_time_s: dict[str, float | None]
    mean_failure_time_s: float | None  # of the failed units
    bin_width_s: float
    failures_per_bin: list[int]
    survivors: int
    survivor_health: dict[str, float | None]
    survivor_rul_s: dict[str, float | None]


@dataclass
class FleetResult:
    """A fleet's simulated outcome (``outcome()``: depends only on the fleet file) and how the run went."""

    fleet: str
    seed: int
    horizon_s: float
    dt_s: float
    steps: int
    units: int
    array: str
    groups: list[GroupResult]
    notes: list[str]
    shards: int
    wall_s: float
    stepping_s: float
    twin_steps: int
    restarts: int
    events: list[str] = field(default_factory=list)

    @property
    def twin_steps_per_s(self) -> float:
        """Units stepped per second of wall time while the shards stepped (actor start-up not counted)."""
        return self.twin_steps / self.stepping_s if self.stepping_s > 0 else 0.0

    def outcome(self) -> dict[str, Any]:
        """The deterministic part: the same fleet file (seed) gives the same dict, whatever the shards."""
        return {"fleet": self.fleet, "seed": self.seed, "horizon_s": self.horizon_s, "dt_s": self.dt_s,
                "steps": self.steps, "units": self.units, "array": self.array,
                "groups": [vars(g).copy() for g in self.groups], "notes": list(self.notes)}

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: ``outcome()`` plus ``run`` (shards, timings, restarts), which differs from run to run."""
        return {**self.outcome(), "run": {
            "shards": self.shards, "wall_s": round(self.wall_s, 3), "stepping_s": round(self.stepping_s, 3),
            "twin_steps": self.twin_steps, "twin_steps_per_s": round(self.twin_steps_per_s),
            "restarts": self.restarts, "events": list(self.events)}}


def summarise(plan: FleetPlan, parts: list[dict[str, Any]]) -> list[GroupResult]:
    out = []
    for gi, g in enumerate(plan.groups):
        mine = sorted((p for p in parts if p["group"] == gi), key=lambda p: p["start"])
        fail = numpy.full(g.units, NEVER, numpy.int32)
        for p in mine:
            fail[p["start"]:p["stop"]] = p["fail"]
        health = numpy.concatenate([p["health"] for p in mine]) if mine else numpy.zeros(0)
        rul = numpy.concatenate([p["rul"] for p in mine]) if mine else numpy.zeros(0)
        out.append(group_result(plan, gi, fail, health, rul))
    return out


def group_result(plan: FleetPlan, gi: int, fail: numpy.ndarray, health: numpy.ndarray,
                 rul: numpy.ndarray) -> GroupResult:
    """A group's summary from every unit's failure step and the survivors' health and RUL (unit order)."""
    g, dt = plan.groups[gi], plan.dt
    hit = fail[fail != NEVER].astype(numpy.int64)
    n_failed = int(hit.size)
    q = quantile_steps(fail.copy(), g.units)
    bins = numpy.bincount(numpy.minimum(hit * plan.bins // plan.steps, plan.bins - 1),
                          minlength=plan.bins) if n_failed else numpy.zeros(plan.bins, numpy.int64)
    return GroupResult(
        name=g.name, model=g.model, units=g.units, failed=n_failed, fraction_failed=significant(n_failed / g.units),
        failure_time_s={k: None if v is None else significant(v * dt) for k, v in q.items()},
        mean_failure_time_s=significant(int(hit.sum()) * dt / n_failed) if n_failed else None,
        bin_width_s=significant(plan.horizon / plan.bins), failures_per_bin=[int(c) for c in bins],
        survivors=int(health.size), survivor_health=float_quantiles(health), survivor_rul_s=float_quantiles(rul))

