"""The Paris-Erdogan fatigue crack-growth twin model, checked against hand-worked values."""

from __future__ import annotations

import math
import warnings

import numpy
import pytest

from twinloop import units
from twinloop.errors import TwinError
from twinloop.twins.estimate import ParticleFilter
from twinloop.twins.models.crack_growth import ParisCrackGrowth

U = {"stress_range": 100.0, "frequency": 1.0}  # 100 MPa, 1 Hz: one cycle a second

# Hand-worked with the defaults: C = 6.9e-12 m/cycle at dK = 1 MPa*m**0.5, m = 3, Y = 1.12.
# Critical length from K_IC = 50 MPa*m**0.5 at stress_max = 200 MPa:
#   Y * stress_max = 1.12 * 200 = 224 MPa;  50 / 224 = 0.223214;  0.223214^2 = 0.0498246
#   a_c = 0.0498246 / pi = 0.0158597 m = 15.8597 mm  (below a_limit = 25 mm, so it governs)
A_CRIT_MM = 15.8597
# Y * dsigma * sqrt(pi) = 1.12 * 100 * 1.7724539 = 198.5148;  ^3 = 7.823100e6
# beta = C * 7.823100e6 = 5.397939e-5 (m^-0.5 per cycle), so da/dN = beta * a^1.5.
# Paris integral for m = 3 from a0 = 1 mm to a_c:
#   N = (a0^-0.5 - a_c^-0.5) / (0.5 * beta)
#     = (0.001^-0.5 - 0.0158597^-0.5) / (0.5 * 5.397939e-5)
#     = (31.62278 - 7.94059) / 2.6989695e-5 = 23.68219 / 2.6989695e-5 = 877,453 cycles
N_FAIL = 877_453


def test_one_cycle_grows_the_crack_by_paris_da_dn() -> None:
    # At a = 1 mm: dK = 1.12 * 100 * sqrt(pi * 0.001) = 112 * 0.0560499 = 6.27759 MPa*m**0.5
    # dK^3 = 247.388;  da/dN = 6.9e-12 * 247.388 = 1.70698e-9 m = 1.70698e-6 mm per cycle
    model = ParisCrackGrowth()
    x = model.next_state(model.initial_state(1), U, 1.0)
    assert x["crack_length"][0] - 1.0 == pytest.approx(1.70698e-6, rel=1e-4)
    ten_hz = model.next_state(model.initial_state(1), {"stress_range": 100.0, "frequency": 10.0}, 0.1)
    assert ten_hz["crack_length"][0] == pytest.approx(x["crack_length"][0], rel=1e-12)


def test_critical_length_from_fracture_toughness_or_the_limit() -> None:
    assert ParisCrackGrowth().a_crit == pytest.approx(A_CRIT_MM, rel=1e-5)
    # K_IC = 100 doubles K_IC / (Y * stress_max), so a_c would be 4 * 15.86 = 63.4 mm: a_limit 25 mm governs
    assert ParisCrackGrowth(k_ic=100.0).a_crit == 25.0
    assert ParisCrackGrowth(k_ic=100.0).a_fracture == pytest.approx(4 * A_CRIT_MM, rel=1e-5)


def test_cycles_to_failure_match_the_closed_form_paris_integral() -> None:
    model = ParisCrackGrowth()
    assert model.cycles_between(1.0, model.a_crit, 100.0) == pytest.approx(N_FAIL, rel=1e-5)
    # Exactly N_FAIL cycles in one step land on a_c.
    x = model.next_state(model.initial_state(1), {"stress_range": 100.0, "frequency": N_FAIL}, 1.0)
    assert x["crack_length"][0] == pytest.approx(A_CRIT_MM, rel=1e-4)
    # Stepped a thousand cycles at a time, the threshold trips within one step of N_FAIL.
    x, t = model.initial_state(1), 0.0
    while not model.threshold_met(x)[0]:
        x = model.next_state(x, U, 1000.0)
        t += 1000.0
        assert t < 2 * N_FAIL
    assert N_FAIL <= t < N_FAIL + 1000


def test_paris_exponent_two_grows_exponentially() -> None:
    # m = 2: da/dN = C * (Y dsigma)^2 * pi * a, so a = a0 * exp(beta N) with
    # beta = 6.9e-12 * 198.5148^2 = 6.9e-12 * 39408.14 = 2.719162e-7 per cycle;
    # 1e6 cycles from 1 mm: a = exp(0.2719162) = 1.312477 mm.
    x = ParisCrackGrowth(m=2.0).next_state(ParisCrackGrowth(m=2.0).initial_state(1), U, 1e6)
    assert x["crack_length"][0] == pytest.approx(1.312477, rel=1e-6)
    # The m != 2 form is continuous through m = 2 (no cancellation for m a hair off 2).
    for m in (2.0 - 1e-9, 2.0 + 1e-9):
        near = ParisCrackGrowth(m=m)
        assert near.next_state(near.initial_state(1), U, 1e6)["crack_length"][0] == pytest.approx(1.312477, rel=1e-6)
        assert near.health(near.initial_state(1, crack_length=4.0))[0] == pytest.approx(
            ParisCrackGrowth(m=2.0).health(near.initial_state(1, crack_length=4.0))[0], rel=1e-6)


@pytest.mark.parametrize("m", [1.5, 2.0, 3.0, 4.5])
def test_one_long_step_equals_many_short_ones(m: float) -> None:
    model = ParisCrackGrowth(m=m, c=6.9e-12 * 10 ** (3 - m) / 2)  # C rescaled so each m grows a few mm
    x = model.initial_state(2, crack_length=numpy.array([1.0, 3.0]))
    long = model.next_state(x, U, 2e5)
    short = x
    for _ in range(1000):
        short = model.next_state(short, U, 200.0)
    assert numpy.all(long["crack_length"] > x["crack_length"])
    numpy.testing.assert_allclose(long["crack_length"], short["crack_length"], rtol=1e-9)


def test_higher_stress_shortens_life_by_the_paris_exponent() -> None:
    model = ParisCrackGrowth()
    # N goes with dsigma^-m: twice the stress range, 2^3 = 8 times fewer cycles.
    assert model.cycles_between(1.0, 10.0, 200.0) == pytest.approx(model.cycles_between(1.0, 10.0, 100.0) / 8,
                                                                   rel=1e-12)
    x = model.initial_state(3)
    u = {"stress_range": numpy.array([100.0, 200.0, 50.0]), "frequency": 1.0}
    ttf = numpy.full(3, numpy.nan)
    t = 0.0
    while numpy.isnan(ttf).any():
        x = model.next_state(x, u, 500.0)
        t += 500.0
        ttf[numpy.isnan(ttf) & model.threshold_met(x)] = t
    assert ttf[1] == pytest.approx(N_FAIL / 8, abs=500) and ttf[2] == pytest.approx(8 * N_FAIL, abs=500)


def test_fleet_with_different_inputs_matches_units_stepped_alone() -> None:
    model = ParisCrackGrowth()
    stress = numpy.array([80.0, 120.0, 100.0, 150.0, -20.0])
    freq = numpy.array([1.0, 5.0, 0.0, 2.0, 3.0])
    x = model.initial_state(5, crack_length=numpy.array([1.0, 2.0, 4.0, 0.0, 3.0]))
    fleet = model.next_state(x, {"stress_range": stress, "frequency": freq}, 3600.0)
    for i in range(5):
        alone = model.next_state(model.initial_state(1, crack_length=x["crack_length"][i]),
                                 {"stress_range": float(stress[i]), "frequency": float(freq[i])}, 3600.0)
        assert fleet["crack_length"][i] == alone["crack_length"][0]
    assert fleet["crack_length"][0] > 1.0 and fleet["crack_length"][1] > 2.0
    # No cycles, no crack, or no tension: no growth.
    assert fleet["crack_length"][2] == 4.0 and fleet["crack_length"][3] == 0.0 and fleet["crack_length"][4] == 3.0


def test_health_is_the_life_fraction_left_and_threshold_is_a_crit() -> None:
    model = ParisCrackGrowth()
    a = numpy.linspace(0.5, 20.0, 10_001)
    x = model.initial_state(a.size, crack_length=a)
    failed = model.threshold_met(x)
    assert numpy.array_equal(failed, a >= model.a_crit) and 0 < failed.sum() < failed.size
    health = model.health(x)
    assert health[0] == 1.0 and model.health(model.initial_state(1))[0] == 1.0  # new
    assert numpy.all(health[failed] == 0.0) and numpy.all(health[~failed] > 0.0)
    assert numpy.all(numpy.diff(health) <= 0)
    # Half the cycles (N_FAIL / 2 = 438,726.5) leave half the life at any stress:
    # a^-0.5 = 31.62278 - 0.5 * 23.68219 = 19.78168 -> a = 1 / 19.78168^2 = 2.5555e-3 m
    half = model.next_state(model.initial_state(1), U, N_FAIL / 2)
    assert half["crack_length"][0] == pytest.approx(2.5555, rel=1e-4)
    assert model.health(half)[0] == pytest.approx(0.5, abs=1e-5)


def test_growth_past_the_asymptote_is_capped_not_nan() -> None:
    model = ParisCrackGrowth()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = model.next_state(model.initial_state(2, crack_length=numpy.array([1.0, 10.0])), U, 10 * N_FAIL)
    assert numpy.all(x["crack_length"] == model.a_cap)
    assert model.threshold_met(x).all() and numpy.all(model.health(x) == 0.0)


def test_bad_parameters_raise_twin_error_naming_them() -> None:
    with pytest.raises(TwinError, match="parameter m=0.5 1 is outside"):
        ParisCrackGrowth(m=0.5)
    with pytest.raises(TwinError, match="parameter c=-1.0 m is outside"):
        ParisCrackGrowth(c=-1)
    with pytest.raises(TwinError, match="parameter k_ic=0.0 MPa\\*m\\*\\*0.5 is outside"):
        ParisCrackGrowth(k_ic=0.0)
    with pytest.raises(TwinError, match="critical crack length 15.86 mm .* must be above a0=20.0 mm"):
        ParisCrackGrowth(a0=20.0)
    with pytest.raises(TwinError, match="unknown parameter"):
        ParisCrackGrowth(colour=1.0)


def test_units_are_understood_by_pint() -> None:
    model = ParisCrackGrowth
    names = [*model.states.values(), *(s.unit for s in model.inputs.values()),
             *(s.unit for s in model.outputs.values()), *(p.unit for p in model.parameters.values())]
    for name in names:
        units.unit(name)
    assert units.convert(2.5, "mm", "mm") == 2.5
    assert units.convert("1 GPa", "MPa") == 1000.0


@pytest.mark.parametrize(("c_factor", "a_start", "seed"), [(1.0, 1.0, 0), (2.0, 1.5, 1), (0.5, 3.0, 2)])
def test_filter_recovers_crack_and_hidden_coefficient(c_factor: float, a_start: float, seed: int) -> None:
    model = ParisCrackGrowth()
    c_true = c_factor * model.params["c"]
    truth = model.initial_state(1, crack_length=a_start, c=c_true)
    life = model.cycles_between(a_start, model.a_crit, 100.0, c=c_true)  # seconds at 1 Hz
    rng = numpy.random.default_rng(seed)
    pf = ParticleFilter(ParisCrackGrowth(), 2000, seed=seed)
    dt, t = life / 100, 0.0
    pf.update(t, U, {"crack_length": truth["crack_length"][0] + rng.normal(0, 0.05)})
    while t < 0.7 * life:
        truth = model.next_state(truth, U, dt)
        t += dt
        pf.update(t, U, {"crack_length": truth["crack_length"][0] + rng.normal(0, 0.05)})
    est = pf.estimate()
    assert est["crack_length"] == pytest.approx(truth["crack_length"][0], abs=0.1)  # two sensor sigmas
    assert est["c"] == pytest.approx(c_true, rel=0.15)
    assert est["health"] == pytest.approx(float(model.health(truth)[0]), abs=0.03)
    rul = pf.predict_rul(U)
    assert rul["rul_p50_s"] == pytest.approx(life - t, rel=0.2)
    assert rul["rul_p05_s"] <= rul["rul_p50_s"] <= rul["rul_p95_s"]
