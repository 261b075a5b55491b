"""Power semiconductor module on a heatsink whose die-attach solder fatigues."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

from twinloop.twins.model import Arrays, DegradationModel, Parameter, Signal
from twinloop.twins.xp import array_module

BOLTZMANN_EV = 8.617333262e-5  # eV/K


class PowerModuleThermal(DegradationModel):
    """Junction temperature of a power module whose thermal resistance grows with damage.

    Thermal: first-order RC network, exact discretisation (stable for any dt)::

        R_th = R_jc0 * (1 + D) + R_ca / (1 - fan_loss * (1 - fan))
        T'   = T_ss + (T - T_ss) * exp(-dt / tau),   T_ss = T_amb + P * R_th

    Degradation: die-attach solder fatigue raises the junction-to-case
    resistance, D = dR_jc / R_jc0, at an Arrhenius-accelerated rate
    ``dD/dt = k_ref * exp(Ea/k_B * (1/T_ref - 1/T))`` (creep-dominated solder
    damage; Ea ~0.6 eV, e.g. Lall et al., IEEE Trans. CPMT 2006). End of life is
    a 20 % rise of R_jc, the power-cycling failure criterion of IEC 60749-34 and
    ECPE AQG 324.

    No two modules are alike: the heatsink path ``r_ca`` (thermal interface,
    mounting) and the solder's creep rate ``k_ref`` differ from unit to unit
    (``spread``: lognormal, relative 1 sigma). They are states, so an estimator
    learns each unit's own values instead of trusting the nominal ones. With
    the fan steady, ``r_ca`` and ``damage`` raise the temperature alike and
    the twin's damage stays uncertain; a fan change separates them (the fan
    scales only ``r_ca``).
    """

    name = "power_module_thermal"
    states = {"temperature": "degC", "damage": "1", "r_ca": "K/W", "k_ref": "1/s"}
    state_limits = {"temperature": (-273.15, math.inf), "damage": (0.0, math.inf), "r_ca": (0.0, math.inf),
                    "k_ref": (0.0, math.inf)}
    inputs = {"power": Signal("W", 0.0), "ambient": Signal("degC", 25.0), "fan": Signal("1", 1.0)}
    outputs = {"temperature": Signal("degC")}
    parameters = {
        "r_jc0": Parameter(0.5, "K/W", 0.01, 10.0, "junction-to-case resistance when new"),
        "r_ca": Parameter(0.8, "K/W", 0.01, 10.0, "case-to-ambient resistance, fan running"),
        "fan_loss": Parameter(0.65, "1", 0.0, 0.99, "fraction of heatsink conductance lost with the fan off"),
        "tau": Parameter(30.0, "s", 0.1, 1e5, "thermal time constant"),
        "k_ref": Parameter(2.78e-9, "1/s", 0.0, 1.0, "damage rate at T_ref (20 % in ~20 kh at 100 degC)"),
        "t_ref": Parameter(100.0, "degC", -50.0, 300.0, "reference temperature of k_ref"),
        "ea": Parameter(0.6, "eV", 0.0, 3.0, "activation energy of solder creep"),
        "d_fail": Parameter(0.2, "1", 0.01, 5.0, "relative R_jc rise at end of life"),
    }
    output_noise = {"temperature": 0.1}
    #: Unit-to-unit spread of the per-unit parameters (lognormal, relative 1 sigma): emulators draw
    #: their hidden values from it; the estimator's prior spans +-3 sigma of it.
    spread: ClassVar[dict[str, float]] = {"r_ca": 0.1, "k_ref": 0.3}
    rul_horizon_s = 30 * 3.15e7

    def __init__(self, **params: float) -> None:
        super().__init__(**params)
        p = self.params
        self.prior = {"damage": (0.0, 0.15),
                      **{k: (p[k] * math.exp(-3 * s), p[k] * math.exp(3 * s)) for k, s in self.spread.items()}}
        # Damage's own random walk is the creep law's model error. It is small: each unit's k_ref
        # carries its rate, and a larger walk (2e-4, as before per-unit states) let damage absorb
        # a heat-path error within a few hourly samples and drift off the truth over a year.
        self.process_noise = {"damage": 1e-6}

    def initial_state(self, n: int, xp: Any = None, **overrides: Any) -> Arrays:
        xp = xp or array_module()
        p = self.params
        x = {"temperature": xp.full(n, 25.0), "damage": xp.zeros(n), "r_ca": xp.full(n, p["r_ca"]),
             "k_ref": xp.full(n, p["k_ref"])}
        for key, value in overrides.items():
            x[key] = x[key] * 0 + value
        return x

    def thermal_resistance(self, damage: Any, fan: Any, r_ca: Any = None) -> Any:
        """Junction-to-ambient resistance (K/W) for a damage level, fan state and heatsink path."""
        p = self.params
        r_ca = p["r_ca"] if r_ca is None else r_ca
        return p["r_jc0"] * (1 + damage) + r_ca / (1 - p["fan_loss"] * (1 - fan))

    def next_state(self, x: Arrays, u: Mapping[str, Any], dt: float) -> Arrays:
        p = self.params
        xp = array_module(x["temperature"])
        t, d = x["temperature"], x["damage"]
        t_ss = u["ambient"] + u["power"] * self.thermal_resistance(d, u["fan"], x["r_ca"])
        t_next = t_ss + (t - t_ss) * xp.exp(-dt / p["tau"])
        inv = 1.0 / (p["t_ref"] + 273.15) - 1.0 / (0.5 * (t + t_next) + 273.15)
        rate = x["k_ref"] * xp.exp(p["ea"] / BOLTZMANN_EV * inv)
        return {"temperature": t_next, "damage": d + rate * dt, "r_ca": x["r_ca"], "k_ref": x["k_ref"]}

    def output(self, x: Arrays, u: Mapping[str, Any]) -> Arrays:
        return {"temperature": x["temperature"]}

    def threshold_met(self, x: Arrays) -> Any:
        return x["damage"] >= self.params["d_fail"]

    def health(self, x: Arrays) -> Any:
        xp = array_module(x["damage"])
        return xp.clip(1.0 - x["damage"] / self.params["d_fail"], 0.0, 1.0)
