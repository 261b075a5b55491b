"""Fatigue crack growth by the Paris-Erdogan law; a crack gauge reads the crack length."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

from twinloop.errors import TwinError
from twinloop.twins.model import Arrays, DegradationModel, Parameter, Signal
from twinloop.twins.xp import array_module

M_PER_MM = 1e-3


class ParisCrackGrowth(DegradationModel):
    """A through-thickness fatigue crack growing under cyclic stress (Paris regime).

    Paris-Erdogan law (P. Paris and F. Erdogan, "A critical analysis of crack
    propagation laws", J. Basic Eng. 85(4):528-534, 1963)::

        da/dN = C * dK^m,   dK = Y * dsigma * sqrt(pi * a)

    with ``a`` in m, ``dsigma`` in MPa, so ``dK`` is in MPa*m**0.5 and ``C`` is the
    growth per cycle (m) at dK = 1 MPa*m**0.5 (the usual SI convention, as in
    ASTM E647). Defaults are Barsom and Rolfe's upper bound for ferrite-pearlite
    steels, C = 6.9e-12 m/cycle, m = 3.0 (J. M. Barsom and S. T. Rolfe,
    "Fracture and Fatigue Control in Structures", 2nd ed., Prentice-Hall 1987),
    and Y = 1.12, an edge crack in a wide plate. The geometry factor is held
    constant; the Paris law covers the mid-range of dK (no threshold, no
    load-ratio effect).

    Cycles in a step are ``N = f * dt`` (f in Hz). With ``beta = C * (Y * dsigma *
    sqrt(pi))^m`` the law is ``da/dN = beta * a^(m/2)``, which integrates exactly
    for inputs held over the step, so one long step equals many short ones::

        m != 2:  a'^(1-m/2) = a^(1-m/2) + (1 - m/2) * beta * N
        m == 2:  a' = a * exp(beta * N)

    computed as ``a' = a * exp(log1p(e * beta * N * a^-e) / e)``, ``e = 1 - m/2``,
    which stays accurate for m near 2. For m > 2 the bracket reaches 0 after
    finitely many cycles (unstable growth); the crack is then reported at
    ``a_cap`` (1000 times the critical length), far beyond failure.

    End of life is the critical crack length ``a_c``, the smaller of the fracture
    length at the peak stress ``stress_max`` and ``a_limit`` (a ligament or
    inspection limit)::

        a_c = min(a_limit, (K_IC / (Y * stress_max))^2 / pi)

    Health is the fraction of the life from ``a0`` to ``a_c`` still left, in
    cycles at any constant stress range (beta cancels)::

        health = (a^e - a_c^e) / (a0^e - a_c^e)     (ln(a_c / a) / ln(a_c / a0) at m = 2)

    ``C`` scatters from specimen to specimen (a factor of ~2-3 either way) and no
    sensor reads it, so each unit's own ``C`` is a state, like the bearing's ``k``:
    an estimator draws it from ``prior`` and learns it from the growth rate.

    Output: the crack length a crack gauge reads (mm), e.g. by electric potential
    drop or compliance (ASTM E647), with ``output_noise`` 0.05 mm.
    """

    name = "paris_crack_growth"
    states = {"crack_length": "mm", "c": "m"}
    state_limits = {"crack_length": (0.0, math.inf), "c": (0.0, math.inf)}
    inputs = {"stress_range": Signal("MPa", 100.0), "frequency": Signal("Hz", 1.0)}
    outputs = {"crack_length": Signal("mm")}
    parameters = {
        "c": Parameter(6.9e-12, "m", 1e-16, 1e-6, "Paris coefficient: growth per cycle at dK = 1 MPa*m**0.5"),
        "m": Parameter(3.0, "1", 1.0, 10.0, "Paris exponent"),
        "y": Parameter(1.12, "1", 0.1, 5.0, "geometry factor Y (1.12: edge crack in a wide plate)"),
        "a0": Parameter(1.0, "mm", 1e-3, 1e3, "crack length of a new unit (initial flaw)"),
        "k_ic": Parameter(50.0, "MPa*m**0.5", 0.1, 1e4, "fracture toughness K_IC"),
        "stress_max": Parameter(200.0, "MPa", 1e-3, 1e5, "peak stress of the load cycle, for fracture"),
        "a_limit": Parameter(25.0, "mm", 1e-3, 1e4, "largest crack tolerated regardless of fracture"),
    }
    output_noise = {"crack_length": 0.05}
    #: The unit's own C relative to the parameter: uniform prior, and its random walk (per sqrt(second)).
    c_prior: ClassVar[tuple[float, float]] = (0.3, 3.0)
    c_walk: ClassVar[float] = 1e-4
    rul_horizon_s = 3.15e7

    def __init__(self, **params: float) -> None:
        super().__init__(**params)
        p = self.params
        if self.a_crit <= p["a0"]:
            raise TwinError(f"{self.name}: critical crack length {self.a_crit:.4g} mm (min of a_limit and "
                            f"(k_ic / (y * stress_max))^2 / pi) must be above a0={p['a0']} mm")
        self.a_cap = 1e3 * self.a_crit
        # Scaled by this instance's C and critical length, so they shadow the class-level dicts.
        self.prior = {"crack_length": (0.0, self.a_crit),
                      "c": (self.c_prior[0] * p["c"], self.c_prior[1] * p["c"])}
        self.process_noise = {"crack_length": 1e-5 * self.a_crit, "c": self.c_walk * p["c"]}

    @property
    def a_fracture(self) -> float:
        """Crack length (mm) at which K reaches K_IC under ``stress_max``."""
        p = self.params
        return (p["k_ic"] / (p["y"] * p["stress_max"])) ** 2 / math.pi / M_PER_MM

    @property
    def a_crit(self) -> float:
        """Critical crack length a_c (mm): end of life."""
        return min(self.params["a_limit"], self.a_fracture)

    def initial_state(self, n: int, xp: Any = None, **overrides: Any) -> Arrays:
        xp = xp or array_module()
        x = {"crack_length": xp.full(n, self.params["a0"]), "c": xp.full(n, self.params["c"])}
        for key, value in overrides.items():
            x[key] = x[key] * 0 + value
        return x

    def beta(self, c: Any, stress_range: Any) -> Any:
        """``C * (Y * dsigma * sqrt(pi))^m``: da/dN = beta * a^(m/2), a in m."""
        p = self.params
        xp = array_module(c)
        ds = xp.maximum(stress_range, 0.0)
        return c * (p["y"] * ds * math.sqrt(math.pi)) ** p["m"]

    def cycles_between(self, a_from: float, a_to: float, stress_range: float, c: float | None = None) -> float:
        """Cycles for the crack to grow from ``a_from`` to ``a_to`` (mm) at a constant stress range."""
        e = 1.0 - self.params["m"] / 2.0
        beta = float(self.beta(self.params["c"] if c is None else c, stress_range))
        lo, hi = a_from * M_PER_MM, a_to * M_PER_MM
        if e == 0.0:
            return math.log(hi / lo) / beta
        return (hi ** e - lo ** e) / (e * beta)

    def next_state(self, x: Arrays, u: Mapping[str, Any], dt: float) -> Arrays:
        xp = array_module(x["crack_length"], x["c"])
        e = 1.0 - self.params["m"] / 2.0
        a = x["crack_length"]
        cycles = xp.maximum(u["frequency"], 0.0) * dt
        bn = self.beta(x["c"], u["stress_range"]) * cycles
        grows = a > 0  # no crack, no growth
        a_pos = xp.where(grows, a, 1.0)
        if e == 0.0:
            log_ratio = bn + 0.0 * a_pos
            blown = a_pos < 0  # never
        else:
            z = e * bn * (a_pos * M_PER_MM) ** (-e)
            blown = z <= -1.0  # unstable growth within the step (m > 2 only)
            log_ratio = xp.log1p(xp.where(blown, 0.0, z)) / e
        log_ratio = xp.minimum(log_ratio, math.log(self.a_cap) - xp.log(a_pos))
        a_next = xp.where(blown, self.a_cap, a_pos * xp.exp(log_ratio))
        return {"crack_length": xp.where(grows, a_next, a), "c": x["c"]}

    def output(self, x: Arrays, u: Mapping[str, Any]) -> Arrays:
        return {"crack_length": x["crack_length"]}

    def threshold_met(self, x: Arrays) -> Any:
        return x["crack_length"] >= self.a_crit

    def health(self, x: Arrays) -> Any:
        p = self.params
        xp = array_module(x["crack_length"])
        e = 1.0 - p["m"] / 2.0
        a = xp.maximum(x["crack_length"], p["a0"])
        ac = self.a_crit
        if e == 0.0:
            h = xp.log(ac / a) / math.log(ac / p["a0"])
        else:  # (a^e - ac^e) / (a0^e - ac^e), written to stay accurate for m near 2
            h = xp.expm1(e * xp.log(a / ac)) / math.expm1(e * math.log(p["a0"] / ac))
        return xp.clip(h, 0.0, 1.0)
