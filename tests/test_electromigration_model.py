"""The electromigration model: Black's equation, Miner's rule, resistance rise, estimation."""

from __future__ import annotations

import math

import numpy
import pytest

from twinloop.errors import TwinError
from twinloop.twins.estimate import ParticleFilter
from twinloop.twins.models.electromigration import Electromigration

HOUR = 3600.0
STRESS = {"current_density": 2.0, "temperature": 150.0}
# Black's MTTF at 2 MA/cm^2 and 150 degC against the reference (10 years = 87600 h at 1 MA/cm^2, 105 degC),
# n = 2, Ea = 0.9 eV, k_B = 8.617333e-5 eV/K:
#   current:     (2 / 1)^-2 = 0.25
#   temperature: Ea / k_B = 0.9 / 8.617333e-5 = 10444.07 K
#                1/378.15 K - 1/423.15 K = 0.00264445 - 0.00236323 = 0.00028122 1/K
#                exp(-10444.07 * 0.00028122) = exp(-2.93713) = 1 / 18.8617
#   MTTF = 87600 h * 0.25 / 18.8617 = 1161.08 h
BLACK_MTTF_H = 1161.08


def hours_to_failure(model: Electromigration, x: dict, u: dict, dt_h: float = 1.0) -> numpy.ndarray:
    """Step a fleet until every unit meets the threshold; each unit's time to failure in hours."""
    ttf = numpy.full(x["damage"].shape, numpy.nan)
    t = 0.0
    while numpy.isnan(ttf).any():
        x = model.next_state(x, u, dt_h * HOUR)
        t += dt_h
        ttf[numpy.isnan(ttf) & model.threshold_met(x)] = t
        assert t < 1e7
    return ttf


def test_time_to_failure_at_constant_stress_is_blacks_mttf() -> None:
    model = Electromigration()
    assert model.mttf_s(2.0, 150.0) / HOUR == pytest.approx(BLACK_MTTF_H, rel=1e-5)
    assert model.mttf_s(1.0, 105.0) / HOUR == pytest.approx(87600.0, rel=1e-12)  # the reference itself
    ttf = hours_to_failure(model, model.initial_state(1), STRESS)
    assert ttf[0] - 1.0 <= BLACK_MTTF_H <= ttf[0]  # within one 1-hour step


def test_damage_adds_up_by_miners_rule_under_varying_stress() -> None:
    model = Electromigration()
    x = model.initial_state(1)
    # 300 h at 2 MA/cm^2, 150 degC (300 / 1161.08 = 0.25838) then 8760 h at the reference
    # (8760 / 87600 = 0.1): d = 0.35838.
    x = model.next_state(x, STRESS, 300 * HOUR)
    x = model.next_state(x, {"current_density": 1.0, "temperature": 105.0}, 8760 * HOUR)
    assert x["damage"][0] == pytest.approx(300 / BLACK_MTTF_H + 0.1, rel=1e-5)


def test_one_long_step_equals_many_short_ones() -> None:
    model = Electromigration()
    x = model.initial_state(1, damage=0.2)
    long = model.next_state(x, STRESS, 500 * HOUR)
    short = x
    for _ in range(5000):
        short = model.next_state(short, STRESS, 0.1 * HOUR)
    assert long["damage"][0] == pytest.approx(short["damage"][0], rel=1e-9)


def test_higher_stress_shortens_life_for_a_fleet_with_different_inputs() -> None:
    model = Electromigration()
    u = {"current_density": numpy.array([2.0, 4.0, 2.0, 2.0, -2.0, 0.0]),
         "temperature": numpy.array([150.0, 150.0, 170.0, 130.0, 150.0, 150.0])}
    x = model.next_state(model.initial_state(6), u, 100 * HOUR)
    base, dense, hot, cool, reversed_, idle = x["damage"]
    assert dense == pytest.approx(4 * base, rel=1e-12)  # n = 2: twice J, a quarter of the life
    assert hot > base > cool
    assert reversed_ == base  # DC wear does not depend on the current's direction
    assert idle == 0.0  # no current, no wear
    assert base == pytest.approx(100 / BLACK_MTTF_H, rel=1e-5)
    assert model.mttf_s(0.0, 150.0) == math.inf


def test_a_short_lived_line_fails_by_its_life_factor() -> None:
    model = Electromigration()
    x = model.initial_state(2, life_factor=numpy.array([1.0, 0.5]))
    ttf = hours_to_failure(model, x, STRESS)
    assert ttf == pytest.approx([BLACK_MTTF_H, BLACK_MTTF_H / 2], abs=1.0)


def test_resistance_threshold_and_health() -> None:
    model = Electromigration()
    x = model.initial_state(3, damage=numpy.array([0.0, 0.5, 1.0]))
    # R = R0 * (1 + tcr * (T - 25)) * (1 + 0.1 * d) at 150 degC: 100 * (1 + 0.0039 * 125) = 148.75 ohm new,
    # 148.75 * 1.05 = 156.1875 ohm half-way, 148.75 * 1.1 = 163.625 ohm at failure (the 10 % rise).
    out = model.output(x, STRESS)["resistance"]
    assert out == pytest.approx([148.75, 156.1875, 163.625], rel=1e-12)
    assert list(model.threshold_met(x)) == [False, False, True]
    assert list(model.health(x)) == [1.0, 0.5, 0.0]
    damage = numpy.arange(0.0005, 1.5, 0.001)  # never exactly on the limit
    x = model.initial_state(damage.size, damage=damage)
    rise = model.output(x, STRESS)["resistance"] / 148.75 - 1.0
    failed = model.threshold_met(x)
    assert numpy.array_equal(failed, rise >= 0.1)
    assert 0 < failed.sum() < failed.size
    health = model.health(x)
    assert numpy.all(health[failed] == 0.0) and numpy.all(health[~failed] > 0.0)


def test_bad_parameters_raise_naming_the_parameter() -> None:
    with pytest.raises(TwinError, match="ea=5.0 eV is outside"):
        Electromigration(ea=5)
    with pytest.raises(TwinError, match="mttf_ref=0.0 h is outside"):
        Electromigration(mttf_ref=0)
    with pytest.raises(TwinError, match="r_rise=-0.1 1 is outside"):
        Electromigration(r_rise=-0.1)
    with pytest.raises(TwinError, match="unknown parameter"):
        Electromigration(alpha=1)


@pytest.mark.parametrize(("damage", "life_factor", "seed"), [(0.1, 1.0, 0), (0.4, 0.7, 1), (0.0, 1.8, 2)])
def test_filter_recovers_hidden_damage_and_rul_from_noisy_resistance(
        damage: float, life_factor: float, seed: int) -> None:
    model = Electromigration()
    x = model.initial_state(1, damage=damage, life_factor=life_factor)
    rng = numpy.random.default_rng(seed)
    pf = ParticleFilter(Electromigration(), 1000, seed=seed)
    for k in range(300):  # hourly readings; the line's temperature swings 140-160 degC
        u = {"current_density": 2.0, "temperature": 150.0 + 10.0 * math.sin(k / 10.0)}
        if k:
            x = model.next_state(x, u, HOUR)
        resistance = float(model.output(x, u)["resistance"][0]) + rng.normal(0.0, 0.05)
        pf.update(k * HOUR, u, {"resistance": resistance})
    est = pf.estimate()
    assert est["damage"] == pytest.approx(float(x["damage"][0]), abs=0.01)
    assert est["health"] == pytest.approx(1.0 - float(x["damage"][0]), abs=0.01)
    assert est["life_factor"] == pytest.approx(life_factor, rel=0.15)
    true_rul_h = (1.0 - float(x["damage"][0])) * life_factor * BLACK_MTTF_H
    rul = pf.predict_rul(STRESS)
    assert rul["rul_p50_s"] / HOUR == pytest.approx(true_rul_h, rel=0.15)
    assert rul["rul_p05_s"] <= rul["rul_p50_s"] <= rul["rul_p95_s"]
