"""Interconnect wearing out by electromigration: voids grow and its resistance rises."""

from __future__ import annotations

import math
from typing import Any, Mapping

from twinloop.twins.model import Arrays, DegradationModel, Parameter, Signal
from twinloop.twins.xp import array_module

BOLTZMANN_EV = 8.617333262e-5  # eV/K
KELVIN = 273.15
HOUR = 3600.0


class Electromigration(DegradationModel):
    """Electromigration damage of a metal line or via, seen through its resistance.

    Life under a held current density ``J`` and metal temperature ``T`` is
    Black's equation (J. R. Black, "Electromigration - a brief survey and some
    recent results", IEEE Trans. Electron Devices 16(4), 1969), written
    against a reference stress instead of the prefactor ``A``::

        MTTF(J, T) = A * J^-n * exp(Ea / (k_B T))
                   = mttf_ref * (J / J_ref)^-n * exp(Ea / k_B * (1/T - 1/T_ref))

    Under varying stress the damage ``d`` (0 new, 1 failed) adds up the
    fractions of life spent, Miner's rule::

        d' = d + dt / (life_factor * MTTF(J, T))

    exact for inputs held over a step, so one long step equals many short
    ones. ``J`` is the DC (average) current density; its sign does not matter
    and no current means no wear (healing under reversed current is not
    modelled). ``life_factor`` (1 nominal) is the unit's own life relative to
    Black's median: electromigration lives scatter lognormally (sigma of ln t
    ~0.2-0.5) and no sensor reads it, so it is a state an estimator draws from
    ``prior`` and learns from the resistance trend.

    Output: the line's resistance, which rises as voids take up its cross
    section, with the metal's temperature coefficient::

        R = R0 * (1 + tcr * (T - 25 degC)) * (1 + r_rise * d)

    Failure is a prescribed relative resistance rise ``r_rise`` (10 % here;
    20 % is the other common choice) at the same temperature, the JEDEC
    definition of electromigration failure behind Black's equation
    (JEP119A, "estimated time to failure"; JESD202), reached at ``d = 1``;
    health is ``1 - d``. With the defaults (Cu, n = 2, Ea = 0.9 eV) a line at
    1 MA/cm^2 and 105 degC lasts ``mttf_ref``, 10 years.
    """

    name = "electromigration"
    states = {"damage": "1", "life_factor": "1"}
    state_limits = {"damage": (0.0, math.inf), "life_factor": (0.0, math.inf)}
    inputs = {"current_density": Signal("MA/cm^2", 1.0), "temperature": Signal("degC", 105.0)}
    outputs = {"resistance": Signal("ohm")}
    parameters = {
        "mttf_ref": Parameter(87600.0, "h", 1e-3, 1e9, "median life at J_ref and T_ref"),
        "j_ref": Parameter(1.0, "MA/cm^2", 1e-6, 1e3, "current density of the reference life"),
        "t_ref": Parameter(105.0, "degC", -55.0, 500.0, "temperature of the reference life"),
        "n": Parameter(2.0, "1", 0.5, 5.0, "current-density exponent (2: void nucleation limited)"),
        "ea": Parameter(0.9, "eV", 0.1, 2.0, "activation energy (Cu ~0.8-1.0 eV, Al ~0.5-0.7 eV)"),
        "r0": Parameter(100.0, "ohm", 1e-6, 1e9, "resistance of the new line at 25 degC"),
        "tcr": Parameter(3.9e-3, "1/K", 0.0, 0.01, "temperature coefficient of resistance at 25 degC"),
        "r_rise": Parameter(0.1, "1", 1e-3, 10.0, "failure: relative resistance rise (JEDEC criterion)"),
    }
    #: A four-wire reading's repeatability plus the line temperature's uncertainty (0.1 ohm is
    #: ~0.25 K at 100 ohm and 3.9e-3/K), which also keeps a precise reading from collapsing the cloud.
    output_noise = {"resistance": 0.1}
    #: The life factor's random walk lets the cloud move to the unit's own rate: sized for lives of
    #: hundreds to thousands of hours (accelerated tests), 1.2 % of life factor per sqrt(hour).
    process_noise = {"damage": 2e-6, "life_factor": 2e-4}
    prior = {"damage": (0.0, 1.0), "life_factor": (0.4, 2.5)}
    rul_horizon_s = 20 * 3.15e7

    def mttf_s(self, current_density: Any, temperature: Any) -> Any:
        """Black's median time to failure, seconds, of a new line at a held stress (inf with no current)."""
        rate = self.damage_rate(current_density, temperature)
        xp = array_module(rate)
        return xp.where(rate > 0, 1.0 / xp.maximum(rate, 1e-300), xp.inf)

    def damage_rate(self, current_density: Any, temperature: Any) -> Any:
        """1 / MTTF, per second, of a median line at current density (MA/cm^2) and temperature (degC)."""
        p = self.params
        xp = array_module(current_density, temperature)
        j = xp.abs(current_density) / p["j_ref"]
        inv = 1.0 / xp.maximum(temperature + KELVIN, 1.0) - 1.0 / (p["t_ref"] + KELVIN)
        return j ** p["n"] * xp.exp(-p["ea"] / BOLTZMANN_EV * inv) / (p["mttf_ref"] * HOUR)

    def initial_state(self, n: int, xp: Any = None, **overrides: Any) -> Arrays:
        xp = xp or array_module()
        x = {"damage": xp.zeros(n), "life_factor": xp.ones(n)}
        for key, value in overrides.items():
            x[key] = x[key] * 0 + value
        return x

    def next_state(self, x: Arrays, u: Mapping[str, Any], dt: float) -> Arrays:
        xp = array_module(x["damage"], x["life_factor"])
        rate = self.damage_rate(u["current_density"], u["temperature"]) / xp.maximum(x["life_factor"], 1e-6)
        return {"damage": x["damage"] + rate * dt, "life_factor": x["life_factor"]}

    def output(self, x: Arrays, u: Mapping[str, Any]) -> Arrays:
        p = self.params
        thermal = 1.0 + p["tcr"] * (u["temperature"] - 25.0)
        return {"resistance": p["r0"] * thermal * (1.0 + p["r_rise"] * x["damage"])}

    def threshold_met(self, x: Arrays) -> Any:
        return x["damage"] >= 1.0

    def health(self, x: Arrays) -> Any:
        xp = array_module(x["damage"])
        return xp.clip(1.0 - x["damage"], 0.0, 1.0)
