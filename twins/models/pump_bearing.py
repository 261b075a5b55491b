"""Centrifugal pump whose rolling bearing wears; vibration severity tracks the wear."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

from twinloop.errors import TwinError
from twinloop.twins.model import Arrays, DegradationModel, Parameter, Signal
from twinloop.twins.xp import array_module


class PumpBearingWear(DegradationModel):
    """Bearing wear of a pump, seen through its RMS vibration velocity.

    Degradation: a dimensionless wear ``w`` (0 new) grows at a rate set by
    speed and load and accelerates with the wear already done, the usual
    exponential-like bearing degradation path (spalls grow, clearances open)::

        dw/dt = k * (speed / n_nom)^p * (load / load_nom) * (1 + g * w)

    For inputs held over a step this has an exact solution, so any ``dt`` is
    stable::

        w' = w + (w + 1/g) * expm1(g * r * dt),   r = k * (speed / n_nom)^p * (load / load_nom)

    The rate coefficient ``k`` differs from bearing to bearing and no sensor
    reads it, so it is a state: an estimator draws it from ``prior`` (a band
    around the parameter ``k``) and learns it from the vibration trend.

    Output: RMS vibration velocity ``v = v0 + c * w`` (mm/s) while the pump
    turns, 0 when it stands still. End of life is ``v >= vibration_limit``,
    7.1 mm/s, the zone C/D boundary of ISO 10816-1 for class II machines
    (15-75 kW), reached at ``w_fail = (vibration_limit - v0) / c`` (1 with the
    defaults); health is ``1 - w / w_fail``. A new bearing at nominal speed and
    load gets there in ``ln(1 + g * w_fail) / (g * k)``, ~200 h with the defaults.

    Load is in percent of the pump's rated load. It enters linearly, a
    simplification: ISO 281 bearing life goes with the load cubed.
    """

    name = "pump_bearing"
    states = {"wear": "1", "k": "1/s"}
    state_limits = {"wear": (0.0, math.inf), "k": (0.0, math.inf)}
    inputs = {"speed": Signal("rpm", 1480.0), "load": Signal("%", 100.0)}
    outputs = {"vibration": Signal("mm/s")}
    parameters = {
        "k": Parameter(6.4e-7, "1/s", 1e-12, 1e-2, "nominal wear rate of a new bearing at nominal speed and load"),
        "p": Parameter(1.0, "1", 0.0, 5.0, "speed exponent of the wear rate (1: constant wear per revolution)"),
        "g": Parameter(3.0, "1", 0.0, 100.0, "acceleration: the wear rate is (1 + g * w) times a new bearing's"),
        "nominal_speed": Parameter(1480.0, "rpm", 1.0, 1e5, "speed of the wear-rate reference"),
        "nominal_load": Parameter(100.0, "%", 1e-3, 1e3, "load of the wear-rate reference"),
        "v0": Parameter(1.0, "mm/s", 0.0, 50.0, "vibration of a new bearing"),
        "c": Parameter(6.1, "mm/s", 1e-3, 1e3, "vibration added per unit of wear"),
        "vibration_limit": Parameter(7.1, "mm/s", 0.1, 100.0, "end of life (ISO 10816-1 class II zone D)"),
    }
    output_noise = {"vibration": 0.05}
    #: The unit's own ``k`` relative to the parameter: uniform prior, and its random walk (per
    #: sqrt(second)), which keeps resampled particles from collapsing onto a few values of ``k``.
    k_prior: ClassVar[tuple[float, float]] = (0.3, 3.0)
    k_walk: ClassVar[float] = 2e-4
    rul_horizon_s = 2000 * 3600.0

    def __init__(self, **params: float) -> None:
        super().__init__(**params)
        p = self.params
        if p["vibration_limit"] <= p["v0"]:
            raise TwinError(f"{self.name}: vibration_limit={p['vibration_limit']} mm/s must be above "
                            f"v0={p['v0']} mm/s")
        # Scaled by this instance's k and end-of-life wear, so they shadow the class-level dicts.
        # A bearing may join its twin anywhere between new and the limit.
        self.prior = {"wear": (0.0, self.wear_limit),
                      "k": (self.k_prior[0] * p["k"], self.k_prior[1] * p["k"])}
        self.process_noise = {"wear": 1e-5 * self.wear_limit, "k": self.k_walk * p["k"]}

    @property
    def wear_limit(self) -> float:
        """Wear at which vibration reaches ``vibration_limit``."""
        p = self.params
        return (p["vibration_limit"] - p["v0"]) / p["c"]

    def initial_state(self, n: int, xp: Any = None, **overrides: Any) -> Arrays:
        xp = xp or array_module()
        x = {"wear": xp.zeros(n), "k": xp.full(n, self.params["k"])}
        for key, value in overrides.items():
            x[key] = x[key] * 0 + value
        return x

    def wear_rate(self, k: Any, u: Mapping[str, Any]) -> Any:
        """Wear rate (1/s) of a new bearing (w = 0) under inputs ``u``."""
        p = self.params
        xp = array_module(k)
        speed = xp.maximum(u["speed"] / p["nominal_speed"], 0.0)
        load = xp.maximum(u["load"] / p["nominal_load"], 0.0)
        return k * speed ** p["p"] * load

    def next_state(self, x: Arrays, u: Mapping[str, Any], dt: float) -> Arrays:
        xp = array_module(x["wear"])
        g, w = self.params["g"], x["wear"]
        r = self.wear_rate(x["k"], u)
        w_next = w + (w + 1.0 / g) * xp.expm1(g * r * dt) if g > 0 else w + r * dt
        return {"wear": w_next, "k": x["k"]}

    def output(self, x: Arrays, u: Mapping[str, Any]) -> Arrays:
        p = self.params
        xp = array_module(x["wear"])
        return {"vibration": xp.where(xp.asarray(u["speed"]) > 0, p["v0"] + p["c"] * x["wear"], 0.0)}

    def threshold_met(self, x: Arrays) -> Any:
        p = self.params
        return p["v0"] + p["c"] * x["wear"] >= p["vibration_limit"]

    def health(self, x: Arrays) -> Any:
        xp = array_module(x["wear"])
        return xp.clip(1.0 - x["wear"] / self.wear_limit, 0.0, 1.0)
