"""Aluminium electrolytic capacitor drying out: ESR rises and capacitance falls."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy

from twinloop.errors import TwinError
from twinloop.twins.model import Arrays, DegradationModel, Parameter, Signal
from twinloop.twins.xp import array_module

HOUR = 3600.0
#: Electrolyte loss is held below this (ESR 100x): beyond the end of life, a bound, not physics.
LOSS_MAX = 0.99
#: Gauss-Legendre nodes and weights on [-1, 1] for the time integral of a step.
_NODES, _WEIGHTS = numpy.polynomial.legendre.leggauss(8)
_NEWTON_STEPS = 12


class ElectrolyticCapacitorAgeing(DegradationModel):
    """Electrolyte loss of an aluminium electrolytic capacitor, seen through ESR and capacitance.

    Degradation: the state is the electrolyte lost, ``e``, as a fraction of the
    initial fill (0 new). It diffuses out through the seal at a rate that
    doubles for every 10 K of core temperature, the manufacturers' life model
    (Nippon Chemi-Con and TDK application notes; Gasperi, "Life prediction
    model for aluminum electrolytic capacitors", IEEE IAS 1996)::

        L(T) = L0 * 2^((T0 - T) / 10)                    life at core temperature T
        de/dt = e_eol / L(T_core)                         so that e reaches e_eol after L(T)
        T_core = T_amb + I^2 * ESR * R_th                 self-heating by the ripple current I

    ``L0`` is the rated life ("endurance") at core temperature ``T0``. Parts of
    one type scatter about it, so the unit's own life is ``life_factor * L(T)``
    (1 nominal): no sensor reads it, so it is a state an estimator draws from
    ``prior`` and learns from the ESR and capacitance trend.

    ESR and capacitance follow the electrolyte left: the oxide area the
    electrolyte still wets shrinks with its volume, so ``C`` falls with it and
    ``ESR`` grows as its inverse (Kulkarni et al., "Physics based electrolytic
    capacitor degradation models for prognostic studies under thermal
    overstress", European Conference of the PHM Society 2012; with ``e``
    linear in time this is the ageing law ``1/ESR(t) = (1 - k t) / ESR(0)`` of
    Lahyani et al., IEEE Trans. Power Electron. 13(6), 1998)::

        ESR = ESR0 / (1 - e),    C = C0 * (1 - kc * e)

    with ``kc = 1`` for C proportional to the electrolyte left.

    End of life is ESR at ``esr_limit`` (2) times its initial value or C down
    by ``c_drop_limit`` (20 %), whichever comes first: the endurance criteria
    of manufacturers' datasheets (capacitance within 20 % of its initial
    value, ESR / tan(delta) within 200 % of the initial specified value). It
    is reached at ``e_eol = min(1 - 1/esr_limit, c_drop_limit / kc)`` (0.2 with
    the defaults: C is the first to go); health is ``1 - e / e_eol``, the
    fraction of life left at a held core temperature.

    Because the ESR heats the core, the rate grows with the loss:
    ``de/dt = a * exp(b / (1 - e))`` with ``a = e_eol / (life_factor * L(T_amb))``
    and ``b = ln2/10 * I^2 * R_th * ESR0``. Over a step with held inputs the
    time to go from ``e`` to ``e'`` is ``integral(exp(-b/(1 - s)) ds, e, e') / a``
    (an exponential integral, no closed inverse); the step solves it for ``e'``
    by Gauss-Legendre quadrature and Newton's method, which approaches the root
    from below because the integral is concave in ``e'``. Without ripple
    (``b = 0``) this is ``e' = e + a * dt`` exactly. So any ``dt`` works: a step
    spanning the whole life lands where many small ones do.

    ESR and C are taken as read at a fixed measurement temperature and
    frequency (ESR0 and C0 are the unit's initial readings there); the ESR's
    own fall with temperature and a voltage derating of life are not modelled.
    """

    name = "electrolytic_capacitor"
    states = {"loss": "1", "life_factor": "1"}
    state_limits = {"loss": (0.0, 1.0), "life_factor": (0.0, math.inf)}
    inputs = {"ambient": Signal("degC", 45.0), "ripple": Signal("A", 1.0)}
    outputs = {"esr": Signal("ohm"), "capacitance": Signal("uF")}
    parameters = {
        "c0": Parameter(1000.0, "uF", 1e-3, 1e7, "capacitance when new"),
        "esr0": Parameter(0.05, "ohm", 1e-4, 100.0, "ESR when new"),
        "rated_life": Parameter(2000.0, "h", 1.0, 1e7, "endurance L0: life at core temperature T0"),
        "rated_temperature": Parameter(105.0, "degC", 20.0, 200.0, "core temperature T0 of the rated life"),
        "r_th": Parameter(25.0, "K/W", 0.0, 1000.0, "thermal resistance core to ambient"),
        "kc": Parameter(1.0, "1", 0.0, 1.0, "capacitance lost per unit of electrolyte lost"),
        "esr_limit": Parameter(2.0, "1", 1.01, 50.0, "end of life: ESR over its initial value"),
        "c_drop_limit": Parameter(0.2, "1", 0.01, 0.9, "end of life: relative capacitance loss"),
    }
    output_noise = {"esr": 5e-4, "capacitance": 5.0}
    rul_horizon_s = 20 * 3.15e7

    def __init__(self, **params: float) -> None:
        super().__init__(**params)
        p = self.params
        if p["kc"] > 0 and p["c_drop_limit"] / p["kc"] >= LOSS_MAX:
            raise TwinError(f"{self.name}: c_drop_limit={p['c_drop_limit']} over kc={p['kc']} is an "
                            f"electrolyte loss of {p['c_drop_limit'] / p['kc']:.3g}, beyond the model's "
                            f"{LOSS_MAX}")
        # Scaled by this instance's end-of-life loss, so they shadow the class-level dicts. A
        # capacitor may join its twin anywhere between new and the end of life.
        self.prior = {"loss": (0.0, self.loss_limit), "life_factor": (0.5, 2.0)}
        self.process_noise = {"loss": 1e-5 * self.loss_limit, "life_factor": 1e-5}

    @property
    def loss_limit(self) -> float:
        """Electrolyte loss at which the first end-of-life criterion is met."""
        p = self.params
        by_esr = 1.0 - 1.0 / p["esr_limit"]
        by_c = p["c_drop_limit"] / p["kc"] if p["kc"] > 0 else math.inf
        return min(by_esr, by_c)

    def life_s(self, core_temperature: Any) -> Any:
        """Seconds from new to end of life of a nominal unit at a held core temperature (degC)."""
        p = self.params
        return p["rated_life"] * HOUR * 2.0 ** ((p["rated_temperature"] - core_temperature) / 10.0)

    def esr(self, loss: Any) -> Any:
        """ESR (ohm) at an electrolyte loss."""
        xp = array_module(loss)
        return self.params["esr0"] / (1.0 - xp.clip(loss, 0.0, LOSS_MAX))

    def core_temperature(self, x: Arrays, u: Mapping[str, Any]) -> Any:
        """Core (hot-spot) temperature, degC: ambient plus the ESR's ripple heating."""
        return u["ambient"] + u["ripple"] ** 2 * self.esr(x["loss"]) * self.params["r_th"]

    def initial_state(self, n: int, xp: Any = None, **overrides: Any) -> Arrays:
        xp = xp or array_module()
        x = {"loss": xp.zeros(n), "life_factor": xp.ones(n)}
        for key, value in overrides.items():
            x[key] = x[key] * 0 + value
        return x

    def next_state(self, x: Arrays, u: Mapping[str, Any], dt: float) -> Arrays:
        p = self.params
        xp = array_module(x["loss"])
        e0 = xp.clip(x["loss"], 0.0, LOSS_MAX)
        # Loss rate a * exp(b / (1 - e)); a * dt is the loss the step would add without ripple heating.
        life = self.life_s(u["ambient"]) * xp.maximum(x["life_factor"], 1e-6)
        adt = dt * self.loss_limit / life
        b = math.log(2.0) / 10.0 * u["ripple"] ** 2 * p["r_th"] * p["esr0"] + 0 * e0
        nodes = 0.5 * (1.0 + xp.asarray(_NODES))[:, None]
        weights = 0.5 * xp.asarray(_WEIGHTS)[:, None]

        def heating(e: Any) -> Any:  # rate / a = exp(b / (1 - e)), bounded to stay finite
            return xp.exp(xp.minimum(b / (1.0 - e), 500.0))

        # Newton on G(e1) = integral(1 / heating, e0, e1) - a*dt, from below (G is concave).
        e1 = xp.minimum(e0 + adt * heating(e0), LOSS_MAX)
        for _ in range(_NEWTON_STEPS):
            h = e1 - e0
            g = h * (weights / heating(e0 + nodes * h)).sum(axis=0) - adt
            e1 = xp.clip(e1 - g * heating(e1), e0, LOSS_MAX)
        return {"loss": e1, "life_factor": x["life_factor"]}

    def output(self, x: Arrays, u: Mapping[str, Any]) -> Arrays:
        p = self.params
        xp = array_module(x["loss"])
        loss = xp.clip(x["loss"], 0.0, LOSS_MAX)
        return {"esr": p["esr0"] / (1.0 - loss), "capacitance": p["c0"] * (1.0 - p["kc"] * loss)}

    def threshold_met(self, x: Arrays) -> Any:
        return x["loss"] >= self.loss_limit

    def health(self, x: Arrays) -> Any:
        xp = array_module(x["loss"])
        return xp.clip(1.0 - x["loss"] / self.loss_limit, 0.0, 1.0)
