"""Power semiconductor module on a heatsink whose die-attach solder fatigues."""

from __future__ import annotations

from typing import Any, Mapping

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
    a 20 % rise of R_th, the power-cycling failure criterion of IEC 60749-34 and
    ECPE AQG 324.
    """

    name = "power_module_thermal"
    states = {"temperature": "degC", "damage": "1"}
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
    process_noise = {"damage": 2e-4}
    prior = {"damage": (0.0, 0.15)}
    rul_horizon_s = 30 * 3.15e7

    def initial_state(self, n: int, xp: Any = None, **overrides: Any) -> Arrays:
        xp = xp or array_module()
        x = {"temperature": xp.full(n, 25.0), "damage": xp.zeros(n)}
        for key, value in overrides.items():
            x[key] = x[key] * 0 + value
        return x

    def thermal_resistance(self, damage: Any, fan: Any) -> Any:
        """Junction-to-ambient resistance (K/W) for a damage level and fan state."""
        p = self.params
        return p["r_jc0"] * (1 + damage) + p["r_ca"] / (1 - p["fan_loss"] * (1 - fan))

    def next_state(self, x: Arrays, u: Mapping[str, Any], dt: float) -> Arrays:
        p = self.params
        xp = array_module(x["temperature"])
        t, d = x["temperature"], x["damage"]
        t_ss = u["ambient"] + u["power"] * self.thermal_resistance(d, u["fan"])
        t_next = t_ss + (t - t_ss) * xp.exp(-dt / p["tau"])
        inv = 1.0 / (p["t_ref"] + 273.15) - 1.0 / (0.5 * (t + t_next) + 273.15)
        rate = p["k_ref"] * xp.exp(p["ea"] / BOLTZMANN_EV * inv)
        return {"temperature": t_next, "damage": d + rate * dt}

    def output(self, x: Arrays, u: Mapping[str, Any]) -> Arrays:
        return {"temperature": x["temperature"]}

    def threshold_met(self, x: Arrays) -> Any:
        return x["damage"] >= self.params["d_fail"]

    def health(self, x: Arrays) -> Any:
        xp = array_module(x["damage"])
        return xp.clip(1.0 - x["damage"] / self.params["d_fail"], 0.0, 1.0)
