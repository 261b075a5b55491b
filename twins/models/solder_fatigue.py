"""Solder-joint / die-attach thermal-cycling fatigue (Coffin-Manson, Norris-Landzberg)."""

from __future__ import annotations

import math
from typing import Any, Mapping

from twinloop.errors import TwinError
from twinloop.twins.model import Arrays, DegradationModel, Parameter, Signal
from twinloop.twins.xp import array_module

KELVIN = 273.15
DAY_S = 86400.0
CONDITION = ("temperature_swing", "cycle_rate", "max_temperature")


def norris_landzberg_af(test: Mapping[str, float], field: Mapping[str, float], *, dt_exponent: float = 1.9,
                        freq_exponent: float = 1.0 / 3.0, ea_over_k: float = 1414.0,
                        in_time: bool = False) -> float:
    """Norris-Landzberg acceleration factor of a ``test`` thermal cycle over a ``field`` one.

    Each condition is a mapping with ``temperature_swing`` (K), ``cycle_rate``
    (cycles/day) and ``max_temperature`` (degC), the model's input names::

        AF = N_field / N_test
           = (dT_test / dT_field)^n * (f_field / f_test)^q * exp(Ea/k * (1/T_max,field - 1/T_max,test))

    so one test cycle stands for ``AF`` field cycles. With ``in_time`` the factor
    is in time, ``AF * f_test / f_field``: one test hour stands for that many
    field hours. Defaults are Norris and Landzberg's SnPb values (n = 1.9,
    q = 1/3, Ea/k = 1414 K).
    """
    for which, cond in (("test", test), ("field", field)):
        for key in CONDITION:
            value = cond.get(key)
            low = -KELVIN if key == "max_temperature" else 0.0
            if value is None or not math.isfinite(value) or value <= low:
                raise TwinError(f"acceleration factor: {which} {key}={value!r} must be a finite number > {low:g}")
    af = ((test["temperature_swing"] / field["temperature_swing"]) ** dt_exponent
          * (field["cycle_rate"] / test["cycle_rate"]) ** freq_exponent
          * math.exp(ea_over_k * (1.0 / (field["max_temperature"] + KELVIN)
                                  - 1.0 / (test["max_temperature"] + KELVIN))))
    return af * test["cycle_rate"] / field["cycle_rate"] if in_time else af


class SolderJointFatigue(DegradationModel):
    """Thermal-cycling fatigue of a solder joint or die attach, seen through its R_th rise.

    Cycles to failure by Coffin-Manson with the Norris-Landzberg frequency and
    peak-temperature terms (K. C. Norris and A. H. Landzberg, "Reliability of
    controlled collapse interconnections", IBM J. Res. Dev. 13(3):266-271, 1969),
    written relative to a reference condition where ``cycles_ref`` cycles were
    measured, so no constant carries odd units::

        N_f = cycles_ref * (dT / dT_ref)^-n * (f / f_ref)^q * exp(Ea/k * (1/T_max - 1/T_max,ref))

    Defaults are Norris and Landzberg's SnPb values: n = 1.9, q = 1/3, Ea/k =
    1414 K (0.122 eV), f in cycles/day, T_max in K; the reference is the common
    -40/125 degC test at 2 cycles/h (dT 165 K, 48 cycles/day, T_max 125 degC)
    with 2000 cycles to failure. For SAC (SnAgCu) joints set n = 2.65, q = 0.136,
    Ea/k = 2185 K (N. Pan et al., "An acceleration model for Sn-Ag-Cu solder
    joint reliability under various thermal cycle conditions", SMTA
    International 2005). The model is meant for 1 to ~100 cycles/day.

    Damage by Miner's rule: ``D`` (0 new) gains the cycles of a step over N_f::

        D' = D + (f * dt) / (life_factor * N_f)

    exact for inputs held over the step, so any ``dt`` is stable. It is computed
    as ``dt * f^(1-q) * f_ref^q * ...``, so a stopped cycle (f = 0 or dT = 0)
    does no damage. ``life_factor`` (1 nominal) scales this unit's life: joints
    scatter widely (Weibull slopes of ~5-10) and no sensor reads it, so it is a
    state an estimator draws from ``prior`` and learns from the damage trend.

    Output: the relative rise of junction-to-case thermal resistance, in %,
    ``rth_rise = 100 * (R_th / R_th0 - 1)``. Cracks from the joint's edge
    detach a fraction ``phi = phi_f * D`` of its area (constant crack growth per
    cycle, as in Darveaux's model; initiation is lumped into D), and heat flows
    through the rest: ``R_th / R_th0 = 1 / (1 - phi)``. ``phi_f`` makes the rise
    ``rise_fail`` at D = 1: 20 %, the power-cycling end-of-life criterion of
    IEC 60749-34 and ECPE AQG 324, so ``phi_f = 1 - 1/1.2 = 1/6`` and
    ``rth_rise = 100 * D / (6 - D)`` with the defaults. End of life is D >= 1
    (the rise reaches ``rise_fail``); health is ``1 - D``.
    """

    name = "solder_joint_fatigue"
    states = {"damage": "1", "life_factor": "1"}
    state_limits = {"damage": (0.0, math.inf), "life_factor": (0.0, math.inf)}
    inputs = {"temperature_swing": Signal("K", 100.0), "cycle_rate": Signal("1/day", 1.0),
              "max_temperature": Signal("degC", 100.0)}
    outputs = {"rth_rise": Signal("%")}
    parameters = {
        "cycles_ref": Parameter(2000.0, "1", 1.0, 1e10, "cycles to failure at the reference condition"),
        "dt_ref": Parameter(165.0, "K", 0.1, 1000.0, "temperature swing of the reference condition"),
        "f_ref": Parameter(48.0, "1/day", 1e-3, 1e6, "cycle rate of the reference condition"),
        "tmax_ref": Parameter(125.0, "degC", -200.0, 1000.0, "peak temperature of the reference condition"),
        "dt_exponent": Parameter(1.9, "1", 0.1, 10.0, "Coffin-Manson exponent n of the swing"),
        "freq_exponent": Parameter(1.0 / 3.0, "1", 0.0, 0.99, "Norris-Landzberg frequency exponent q"),
        "ea_over_k": Parameter(1414.0, "K", 0.0, 1e5, "activation energy over Boltzmann's constant"),
        "rise_fail": Parameter(20.0, "%", 0.1, 1000.0, "R_th rise at end of life (IEC 60749-34, AQG 324)"),
    }
    #: Repeatability of an R_th measurement (junction temperature by a TSEP), in % of R_th0.
    output_noise = {"rth_rise": 0.5}
    process_noise = {"damage": 2e-6, "life_factor": 1e-5}
    prior = {"damage": (0.0, 1.0), "life_factor": (0.5, 2.0)}
    rul_horizon_s = 30 * 3.15e7

    def __init__(self, **params: float) -> None:
        super().__init__(**params)
        self.phi_fail = 1.0 - 1.0 / (1.0 + self.params["rise_fail"] / 100.0)

    def initial_state(self, n: int, xp: Any = None, **overrides: Any) -> Arrays:
        xp = xp or array_module()
        x = {"damage": xp.zeros(n), "life_factor": xp.ones(n)}
        for key, value in overrides.items():
            x[key] = x[key] * 0 + value
        return x

    def cycles_to_failure(self, u: Mapping[str, Any], life_factor: Any = 1.0) -> Any:
        """N_f (cycles) of a new joint under a thermal cycle ``u`` (the model's input names)."""
        p = self.params
        xp = array_module(life_factor, *(u[k] for k in CONDITION))
        return p["cycles_ref"] * life_factor * self._cycle_term(xp, u) ** -1 * (
            xp.maximum(u["cycle_rate"], 0.0) / p["f_ref"]) ** p["freq_exponent"]

    def _cycle_term(self, xp: Any, u: Mapping[str, Any]) -> Any:
        """``(dT / dT_ref)^n * exp(-Ea/k * (1/T_max - 1/T_max,ref))``: damage per cycle, frequency aside."""
        p = self.params
        swing = xp.maximum(u["temperature_swing"], 0.0) / p["dt_ref"]
        t_max = xp.maximum(u["max_temperature"] + KELVIN, 1.0)
        return swing ** p["dt_exponent"] * xp.exp(-p["ea_over_k"] * (1.0 / t_max - 1.0 / (p["tmax_ref"] + KELVIN)))

    def acceleration_factor(self, test: Mapping[str, float], field: Mapping[str, float],
                            in_time: bool = False) -> float:
        """Norris-Landzberg AF (N_field / N_test) with this model's exponents; see ``norris_landzberg_af``."""
        p = self.params
        return norris_landzberg_af(test, field, dt_exponent=p["dt_exponent"], freq_exponent=p["freq_exponent"],
                                   ea_over_k=p["ea_over_k"], in_time=in_time)

    def next_state(self, x: Arrays, u: Mapping[str, Any], dt: float) -> Arrays:
        p = self.params
        xp = array_module(x["damage"], x["life_factor"])
        q = p["freq_exponent"]
        f = xp.maximum(u["cycle_rate"], 0.0)
        # cycles / N_f with the frequency powers merged: f dt (f_ref / f)^q = dt f^(1-q) f_ref^q
        per_cycles_ref = (dt / DAY_S) * f ** (1.0 - q) * p["f_ref"] ** q * self._cycle_term(xp, u)
        life = p["cycles_ref"] * xp.maximum(x["life_factor"], 1e-6)
        return {"damage": x["damage"] + per_cycles_ref / life, "life_factor": x["life_factor"]}

    def output(self, x: Arrays, u: Mapping[str, Any]) -> Arrays:
        xp = array_module(x["damage"])
        phi = xp.clip(self.phi_fail * x["damage"], 0.0, 0.999)
        return {"rth_rise": 100.0 * phi / (1.0 - phi)}

    def threshold_met(self, x: Arrays) -> Any:
        return x["damage"] >= 1.0

    def health(self, x: Arrays) -> Any:
        xp = array_module(x["damage"])
        return xp.clip(1.0 - x["damage"], 0.0, 1.0)
