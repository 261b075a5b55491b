"""Li-ion cell discharge: NASA progpy's equivalent-circuit battery model, in twinloop's array form."""

from __future__ import annotations

import math
from typing import Any, Mapping

from twinloop.errors import TwinError
from twinloop.twins.model import Arrays, DegradationModel, Parameter, Signal
from twinloop.twins.xp import array_module


class BatteryCircuit(DegradationModel):
    """Voltage and temperature of a discharging Li-ion cell; failure is end of discharge.

    The equivalent-circuit model of Daigle & Sankararaman ("Advanced methods for
    determining prediction uncertainty in model-based prognostics with application
    to planetary rovers", PHM Society Annual Conference 2013, pp. 262-274), which
    NASA progpy 1.9.0 ships as ``progpy.models.BatteryCircuit``; same states,
    equations, default parameters and Euler integration, so the two give the same
    trajectory and end-of-discharge (EOD) time for the same load and step. (The
    electrochemistry model it simplifies is Daigle & Kulkarni, "Electrochemistry-
    based battery modeling for prognostics", PHM 2013.) Written from the equations;
    no progpy code is used.

    States: cell temperature ``tb`` (K), charge ``qb`` on the bulk capacitor Cb,
    and charges ``qcp``, ``qcs`` on the two R-C pairs (C). Input: discharge current
    ``i`` (A, positive discharging). With ``SOC = (CMax - qMax + qb) / CMax``::

        Cb  = Cbp0 SOC^3 + Cbp1 SOC^2 + Cbp2 SOC + Cbp3        (bulk capacitance, F)
        Rcp = Rcp0 + Rcp1 exp(Rcp2 (1 - SOC))                  (grows as the cell empties)
        Vb = qb / Cb,  Vcp = qcp / Ccp,  Vcs = qcs / Cs
        v  = Vb - Vcp - Vcs                                    (terminal voltage, output)
        ib = i + v / Rp                                        (parasitic leak through Rp)
        dqb/dt  = -ib
        dqcp/dt = ib - Vcp / Rcp
        dqcs/dt = ib - Vcs / Rs
        dtb/dt  = (ha (Ta - tb) + hcp Vcp^2 / Rcp + hcs Vcs^2 / Rs) / Jt

    (The step is arranged for fewer array passes than progpy's, so states agree
    with progpy's to about 1e-15 relative and end-of-discharge times exactly in
    the suite's comparisons.) Outputs are the temperature ``t = tb`` and the
    voltage ``v``.

    Integration is forward Euler, ``x' = x + dx/dt * dt`` followed by progpy's
    state limits ``tb, qb >= 0``. Euler is unstable for steps above twice the
    fastest R-C time constant (``Rcp Ccp`` ~1.03 s with the defaults), so a step
    longer than ``max_step`` (1 s) is taken as ``ceil(dt / max_step)`` equal Euler
    substeps: a step of at most ``max_step`` is exactly one progpy Euler step, and
    the coarse steps of RUL prediction stay stable.

    Failure: end of discharge, ``v < VEOD`` (3.0 V). A full cell at a constant
    2 A reaches it after 3803 s with 1 s steps (progpy: the same). Health is
    progpy's EOD event state, ``min(SOC, (v - VEOD) / VDropoff)`` clipped to
    [0, 1]: 1 when full, 0 once the voltage is below ``VEOD``.

    progpy's ``V0`` and ``Cb0`` are left out: its equations never read them.
    """

    name = "battery_circuit"
    states = {"tb": "K", "qb": "C", "qcp": "C", "qcs": "C"}
    state_limits = {"tb": (0.0, math.inf), "qb": (0.0, math.inf)}
    inputs = {"i": Signal("A", 0.0)}
    outputs = {"t": Signal("K"), "v": Signal("V")}
    parameters = {
        "qMax": Parameter(7856.3254, "C", 1.0, 1e7, "charge of the bulk capacitor when full"),
        "CMax": Parameter(7777.0, "C", 1.0, 1e7, "usable charge (SOC 0 at qb = qMax - CMax)"),
        "Rp": Parameter(1e4, "ohm", 1.0, 1e9, "parasitic (self-discharge) resistance"),
        "VEOD": Parameter(3.0, "V", 0.5, 5.0, "end-of-discharge voltage"),
        "VDropoff": Parameter(0.1, "V", 1e-3, 2.0, "voltage band above VEOD over which health falls to 0"),
        "Cbp0": Parameter(-230.0, "F", -1e6, 1e6, "bulk capacitance, SOC^3 coefficient"),
        "Cbp1": Parameter(1.2, "F", -1e6, 1e6, "bulk capacitance, SOC^2 coefficient"),
        "Cbp2": Parameter(2079.9, "F", -1e6, 1e6, "bulk capacitance, SOC coefficient"),
        "Cbp3": Parameter(27.055726, "F", -1e6, 1e6, "bulk capacitance, constant term"),
        "Rs": Parameter(0.0538926, "ohm", 1e-6, 100.0, "series R-C pair resistance"),
        "Cs": Parameter(234.387, "F", 1e-3, 1e6, "series R-C pair capacitance"),
        "Rcp0": Parameter(0.0697776, "ohm", 1e-6, 100.0, "concentration-polarisation resistance, constant part"),
        "Rcp1": Parameter(1.50528e-17, "ohm", 0.0, 100.0, "concentration-polarisation resistance, scale of the "
                                                           "exponential part"),
        "Rcp2": Parameter(37.223, "1", 0.0, 100.0, "concentration-polarisation resistance, exponent per unit "
                                                   "of discharged SOC"),
        "Ccp": Parameter(14.8223, "F", 1e-3, 1e6, "concentration-polarisation capacitance"),
        "Ta": Parameter(292.1, "K", 200.0, 400.0, "ambient temperature (and a new unit's cell temperature)"),
        "Jt": Parameter(800.0, "J/K", 1e-3, 1e7, "heat capacity of the cell"),
        "ha": Parameter(0.5, "W/K", 0.0, 1e3, "heat transfer coefficient to ambient"),
        "hcp": Parameter(19.0, "1", 0.0, 1e3, "fraction of the Rcp loss heating the cell"),
        "hcs": Parameter(1.0, "1", 0.0, 1e3, "fraction of the Rs loss heating the cell"),
        "max_step": Parameter(1.0, "s", 1e-4, 2.0, "longest Euler step; longer steps are split"),
    }
    output_noise = {"t": 0.2, "v": 0.01}
    rul_horizon_s = 6 * 3600.0

    def __init__(self, **params: float) -> None:
        super().__init__(**params)
        p = self.params
        tau = min(p["Rcp0"] * p["Ccp"], p["Rs"] * p["Cs"])
        if p["max_step"] >= 2.0 * tau:
            raise TwinError(f"{self.name}: max_step={p['max_step']} s must be below twice the fastest R-C time "
                            f"constant, {2.0 * tau:.4g} s, or Euler steps diverge")
        socs = [k / 100 for k in range(101)]
        if min(self._cb(s) for s in socs) <= 0.0:
            raise TwinError(f"{self.name}: the bulk capacitance Cbp0 SOC^3 + Cbp1 SOC^2 + Cbp2 SOC + Cbp3 "
                            f"must be positive for SOC in [0, 1] (Cbp0={p['Cbp0']}, Cbp1={p['Cbp1']}, "
                            f"Cbp2={p['Cbp2']}, Cbp3={p['Cbp3']})")
        # Depend on this instance's charge and ambient, so they shadow the class-level dicts:
        # a cell may join its twin at any state of charge, a little off ambient.
        self.prior = {"qb": (p["qMax"] - p["CMax"], p["qMax"]), "tb": (p["Ta"] - 2.0, p["Ta"] + 10.0)}
        self.process_noise = {"tb": 1e-3, "qb": 1e-4 * p["CMax"]}

    def _cb(self, soc: Any) -> Any:
        p = self.params
        return ((p["Cbp0"] * soc + p["Cbp1"]) * soc + p["Cbp2"]) * soc + p["Cbp3"]  # Horner form

    def soc(self, x: Arrays) -> Any:
        """State of charge, progpy's ``(CMax - qMax + qb) / CMax`` (0 at qb = qMax - CMax)."""
        p = self.params
        return (p["CMax"] - p["qMax"] + x["qb"]) / p["CMax"]

    def voltage(self, x: Arrays) -> Any:
        """Terminal voltage ``Vb - Vcp - Vcs`` (V)."""
        p = self.params
        return x["qb"] / self._cb(self.soc(x)) - x["qcp"] / p["Ccp"] - x["qcs"] / p["Cs"]

    def initial_state(self, n: int, xp: Any = None, **overrides: Any) -> Arrays:
        """Full cells at rest at ambient temperature (progpy's default ``x0``)."""
        xp = xp or array_module()
        p = self.params
        x = {"tb": xp.full(n, p["Ta"]), "qb": xp.full(n, p["qMax"]), "qcp": xp.zeros(n), "qcs": xp.zeros(n)}
        for key, value in overrides.items():
            x[key] = x[key] * 0 + value
        return x

    def _euler(self, x: Arrays, i: Any, dt: float) -> Arrays:
        """One Euler step of progpy's ``dx``, with fewer array passes (Horner form, shared terms).

        The same equations as the class docstring; rounding differs from
        progpy's operation order by about 1e-16 relative per step.
        """
        p = self.params
        xp = array_module(x["qb"])
        qb, qcp, qcs, tb = x["qb"], x["qcp"], x["qcs"], x["tb"]
        vcs = qcs / p["Cs"]
        vcp = qcp / p["Ccp"]
        soc = (p["CMax"] - p["qMax"] + qb) / p["CMax"]
        cb = self._cb(soc)
        rcp = xp.exp(p["Rcp2"] * (1 - soc))
        rcp *= p["Rcp1"]
        rcp += p["Rcp0"]
        ib = qb / cb
        ib -= vcp
        ib -= vcs                      # terminal voltage v
        ib /= p["Rp"]
        ib += i                        # ib = i + v / Rp
        tb_dot = (p["ha"] * (p["Ta"] - tb) + (p["hcs"] / p["Rs"]) * vcs * vcs + p["hcp"] * vcp * vcp / rcp) / p["Jt"]
        return {"tb": xp.maximum(tb + tb_dot * dt, 0.0),
                "qb": xp.maximum(qb - ib * dt, 0.0),
                "qcp": qcp + (ib - vcp / rcp) * dt,
                "qcs": qcs + (ib - vcs / p["Rs"]) * dt}

    def next_state(self, x: Arrays, u: Mapping[str, Any], dt: float) -> Arrays:
        n = max(1, math.ceil(dt / self.params["max_step"]))
        h = dt / n
        for _ in range(n):
            x = self._euler(x, u["i"], h)
        return x

    def output(self, x: Arrays, u: Mapping[str, Any]) -> Arrays:
        return {"t": x["tb"] * 1.0, "v": self.voltage(x)}

    def threshold_met(self, x: Arrays) -> Any:
        return self.voltage(x) < self.params["VEOD"]

    def health(self, x: Arrays) -> Any:
        p = self.params
        xp = array_module(x["qb"])
        by_voltage = (self.voltage(x) - p["VEOD"]) / p["VDropoff"]
        return xp.clip(xp.minimum(self.soc(x), by_voltage), 0.0, 1.0)
