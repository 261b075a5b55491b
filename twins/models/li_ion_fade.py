"""Capacity fade of a graphite/LiFePO4 Li-ion cell: calendar plus cycle ageing."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

from twinloop.errors import TwinError
from twinloop.twins.model import Arrays, DegradationModel, Parameter, Signal
from twinloop.twins.xp import array_module

GAS_CONSTANT = 8.314462618  # J/(mol K), CODATA 2018
ZERO_CELSIUS = 273.15  # K
#: Wang et al. 2011, Table 2: the pre-exponential factor B (% per Ah^z) fitted at each C-rate.
WANG_B: tuple[tuple[float, float], ...] = ((0.5, 31630.0), (2.0, 21681.0), (6.0, 12934.0), (10.0, 15512.0))


class LiIonCapacityFade(DegradationModel):
    """Capacity of a Li-ion cell fading with storage time and with charge throughput.

    The relative capacity loss is the sum of a calendar and a cycle part, each a
    state (fractions of rated capacity), both scaled by the cell's own rate
    factor ``k`` (1 nominal; a state an estimator learns, as cells differ)::

        Q_cal = k * k_T(T) * k_SOC(SOC) * t^0.5
        k_T   = cal_k_ref * exp(-cal_ea / R * (1/T - 1/cal_t_ref))
        k_SOC = cal_soc_c * (SOC - 0.5)^3 + cal_soc_d

    is the calendar model of Naumann et al., "Analysis and modeling of calendar
    aging of a commercial LiFePO4/graphite cell", J. Energy Storage 17 (2018)
    153-169 (Sony/Murata US26650FTC1; t in s, cal_k_ref = 1.2571e-5 s^-0.5,
    Ea = 17126 J/mol, T_ref = 25 degC, c = 2.8575, d = 0.60225: 4.3 % in a year at
    25 degC and 50 % SOC), and::

        Q_cyc = k * cycle_factor * B(C) / 100 * exp(-(cyc_ea - cyc_c_rate_ea * C) / (R T)) * Ah^z

    is the cycle-life model of Wang et al., "Cycle-life model for graphite-LiFePO4
    cells", J. Power Sources 196 (2011) 3942-3948, its C-rate form (2.2 Ah cells;
    cyc_ea = 31700 J/mol, cyc_c_rate_ea = 370.3 J/mol per C, z = 0.55; B in % per
    Ah^z, Table 2: 31630 at C/2, 21681 at 2C, 12934 at 6C, 15512 at 10C, linear
    in between and constant beyond). The C-rate is ``C = |current| / capacity``;
    ``Ah`` is Wang's throughput, cycles x DOD x capacity, here half the charge
    moved either way, ``integral |current| dt / 2``, scaled to Wang's cell by
    ``cyc_ref_capacity / capacity`` (so a throughput in equivalent full cycles
    ages any cell alike).

    Wang's cells aged in time while they cycled, so his fit holds some calendar
    loss too; adding Naumann's calendar term counts it twice, a little, during
    cycling. The two papers measured different LFP cells: take the defaults as a
    plausible LFP cell, not a datasheet.

    Both laws are ``f(stress) * g(age)``, so each step starts from the age that
    gives the present loss under the present stress (the equivalent or "virtual"
    time by which such laws are applied under changing stress)::

        Q_cal' = a * sqrt((Q_cal / a)^2 + dt),          a = k * k_T * k_SOC
        Q_cyc' = b * ((Q_cyc / b)^(1/z) + dAh)^z,        b = k * cycle_factor * B(C) / 100 * exp(...)

    Under constant inputs one long step equals many short ones exactly; when the
    stress changes, loss already done carries over at the new rate.

    Inputs: cell temperature (degC), current (A, the mean absolute current over the
    step; its sign is ignored) and the mean state of charge ``soc`` (0-1, optional:
    0.5 unless given). Output: the capacity ``capacity * (1 - Q_cal - Q_cyc)`` (Ah).

    End of life: the capacity falls to ``eol_fraction`` (80 %) of rated, the
    end-of-life criterion of the USABC Electric Vehicle Battery Test Procedures
    Manual (rev. 2, 1996), usual for Li-ion cells in vehicles and storage.
    Health is ``1 - (Q_cal + Q_cyc) / (1 - eol_fraction)``, clipped to [0, 1].
    """

    name = "li_ion_capacity_fade"
    states = {"cal_loss": "1", "cyc_loss": "1", "k": "1"}
    state_limits = {"cal_loss": (0.0, 1.0), "cyc_loss": (0.0, 1.0), "k": (0.0, math.inf)}
    inputs = {"temperature": Signal("degC", 25.0), "current": Signal("A", 0.0), "soc": Signal("1", 0.5)}
    outputs = {"capacity": Signal("Ah")}
    parameters = {
        "capacity": Parameter(2.2, "Ah", 1e-3, 1e5, "rated (new) capacity"),
        "eol_fraction": Parameter(0.8, "1", 0.5, 0.99, "end of life: this fraction of rated capacity left"),
        "cal_k_ref": Parameter(1.2571e-5, "s**-0.5", 0.0, 1e-2, "calendar loss rate at cal_t_ref and SOC 0.5 "
                                                                "(times cal_soc_d)"),
        "cal_ea": Parameter(17126.0, "J/mol", 0.0, 2e5, "activation energy of calendar ageing"),
        "cal_t_ref": Parameter(25.0, "degC", -40.0, 100.0, "reference temperature of cal_k_ref"),
        "cal_soc_c": Parameter(2.8575, "1", 0.0, 100.0, "calendar SOC factor, cubic coefficient"),
        "cal_soc_d": Parameter(0.60225, "1", 0.0, 100.0, "calendar SOC factor at SOC 0.5"),
        "cyc_ea": Parameter(31700.0, "J/mol", 0.0, 2e5, "activation energy of cycle ageing"),
        "cyc_c_rate_ea": Parameter(370.3, "J/mol", 0.0, 1e4, "drop of cyc_ea per unit of C-rate"),
        "cyc_z": Parameter(0.55, "1", 0.1, 1.5, "throughput exponent"),
        "cycle_factor": Parameter(1.0, "1", 0.0, 100.0, "multiplies Wang's B(C)"),
        "cyc_ref_capacity": Parameter(2.2, "Ah", 1e-3, 1e5, "capacity of the cells Wang's Ah are counted on"),
    }
    output_noise = {"capacity": 0.005}
    #: Range of the cell's own rate factor ``k`` an estimator starts from, and its random walk
    #: (per sqrt(second)), which keeps resampled particles from collapsing onto a few values.
    k_prior: ClassVar[tuple[float, float]] = (0.5, 2.0)
    k_walk: ClassVar[float] = 2e-5
    rul_horizon_s = 30 * 3.15576e7

    def __init__(self, **params: float) -> None:
        super().__init__(**params)
        p = self.params
        if p["cal_soc_d"] - p["cal_soc_c"] / 8.0 <= 0.0:
            raise TwinError(f"{self.name}: cal_soc_d={p['cal_soc_d']} must exceed cal_soc_c / 8 = "
                            f"{p['cal_soc_c'] / 8.0:.6g}, or the calendar SOC factor is not positive at SOC 0")
        # Scaled by this instance's end-of-life loss, so they shadow the class-level dicts.
        # A cell may join its twin anywhere up to half way to end of life.
        half = 0.5 * self.loss_limit
        self.prior = {"cal_loss": (0.0, half), "cyc_loss": (0.0, half), "k": self.k_prior}
        self.process_noise = {"cal_loss": 2e-8, "cyc_loss": 2e-8, "k": self.k_walk}

    @property
    def loss_limit(self) -> float:
        """Relative capacity loss at end of life."""
        return 1.0 - self.params["eol_fraction"]

    def initial_state(self, n: int, xp: Any = None, **overrides: Any) -> Arrays:
        """New cells (no loss) with the nominal rate factor ``k = 1``."""
        xp = xp or array_module()
        x = {"cal_loss": xp.zeros(n), "cyc_loss": xp.zeros(n), "k": xp.ones(n)}
        for key, value in overrides.items():
            x[key] = x[key] * 0 + value
        return x

    def calendar_rate(self, u: Mapping[str, Any], xp: Any) -> Any:
        """``k_T * k_SOC`` (s^-0.5): calendar loss of a nominal cell is this times sqrt(t)."""
        p = self.params
        t = xp.asarray(u["temperature"], dtype=float) + ZERO_CELSIUS
        soc = xp.clip(xp.asarray(u.get("soc", 0.5), dtype=float), 0.0, 1.0)
        k_t = p["cal_k_ref"] * xp.exp(-p["cal_ea"] / GAS_CONSTANT * (1.0 / t - 1.0 / (p["cal_t_ref"] + ZERO_CELSIUS)))
        return k_t * (p["cal_soc_c"] * (soc - 0.5) ** 3 + p["cal_soc_d"])

    def wang_b(self, c_rate: Any, xp: Any) -> Any:
        """Wang's pre-exponential factor B (% per Ah^z) at a C-rate (Table 2, interpolated)."""
        rates = xp.asarray([r for r, _ in WANG_B])
        values = xp.asarray([b for _, b in WANG_B])
        return xp.interp(c_rate, rates, values)

    def cycle_rate(self, u: Mapping[str, Any], xp: Any) -> Any:
        """Cycle loss (fraction) of a nominal cell per (Wang-cell Ah)^z under inputs ``u``."""
        p = self.params
        t = xp.asarray(u["temperature"], dtype=float) + ZERO_CELSIUS
        c_rate = xp.abs(xp.asarray(u["current"], dtype=float)) / p["capacity"]
        arrhenius = xp.exp(-(p["cyc_ea"] - p["cyc_c_rate_ea"] * c_rate) / (GAS_CONSTANT * t))
        return p["cycle_factor"] * self.wang_b(c_rate, xp) / 100.0 * arrhenius

    def next_state(self, x: Arrays, u: Mapping[str, Any], dt: float) -> Arrays:
        p = self.params
        xp = array_module(x["cal_loss"])
        k = x["k"]
        # Calendar: Q = a sqrt(t)  ->  t_eq = (Q / a)^2.
        a = k * self.calendar_rate(u, xp)
        safe_a = xp.where(a > 0, a, 1.0)
        cal = xp.where(a > 0, a * xp.sqrt((x["cal_loss"] / safe_a) ** 2 + dt), x["cal_loss"])
        # Cycle: Q = b Ah^z  ->  Ah_eq = (Q / b)^(1/z); this step adds |I| dt / 2 (one way), in Wang-cell Ah.
        z = p["cyc_z"]
        b = k * self.cycle_rate(u, xp)
        d_ah = xp.abs(xp.asarray(u["current"], dtype=float)) * dt / 7200.0 * (p["cyc_ref_capacity"] / p["capacity"])
        grows = (b > 0) & (d_ah > 0)
        safe_b = xp.where(grows, b, 1.0)
        cyc = xp.where(grows, safe_b * ((x["cyc_loss"] / safe_b) ** (1.0 / z) + d_ah) ** z, x["cyc_loss"])
        return {"cal_loss": cal, "cyc_loss": cyc, "k": k}

    def loss(self, x: Arrays) -> Any:
        """Total relative capacity loss."""
        return x["cal_loss"] + x["cyc_loss"]

    def output(self, x: Arrays, u: Mapping[str, Any]) -> Arrays:
        return {"capacity": self.params["capacity"] * (1.0 - self.loss(x))}

    def threshold_met(self, x: Arrays) -> Any:
        return self.loss(x) >= self.loss_limit

    def health(self, x: Arrays) -> Any:
        xp = array_module(x["cal_loss"])
        return xp.clip(1.0 - self.loss(x) / self.loss_limit, 0.0, 1.0)
