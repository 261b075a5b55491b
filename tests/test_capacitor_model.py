"""The electrolytic-capacitor ageing model: 10 K rule, self-heating, end of life, estimation."""

from __future__ import annotations

import math

import numpy
import pytest

from twinloop.errors import TwinError
from twinloop.twins.estimate import ParticleFilter
from twinloop.twins.models.capacitor import ElectrolyticCapacitorAgeing

HOUR = 3600.0


def hours_to_end_of_life(model: ElectrolyticCapacitorAgeing, x: dict, u: dict, dt_h: float) -> numpy.ndarray:
    """Step a fleet until every unit meets the threshold; each unit's time to failure in hours."""
    ttf = numpy.full(x["loss"].shape, numpy.nan)
    t = 0.0
    while numpy.isnan(ttf).any():
        x = model.next_state(x, u, dt_h * HOUR)
        t += dt_h
        ttf[numpy.isnan(ttf) & model.threshold_met(x)] = t
        assert t < 1e7
    return ttf


def test_rated_life_at_rated_temperature_doubles_per_10_kelvin_cooler() -> None:
    model = ElectrolyticCapacitorAgeing()  # L0 = 2000 h at T0 = 105 degC
    # No ripple, so the core sits at ambient: L = L0 * 2^((T0 - T) / 10)
    #   105 degC: 2000 h * 2^0 = 2000 h;  95 degC: 2000 h * 2^1 = 4000 h;  85 degC: 2000 h * 2^2 = 8000 h
    #   115 degC: 2000 h * 2^-1 = 1000 h
    u = {"ambient": numpy.array([105.0, 95.0, 85.0, 115.0]), "ripple": 0.0}
    ttf = hours_to_end_of_life(model, model.initial_state(4), u, dt_h=10.0)
    assert ttf == pytest.approx([2000.0, 4000.0, 8000.0, 1000.0], abs=10.0)  # within one step
    assert model.life_s(95.0) / HOUR == pytest.approx(4000.0, rel=1e-12)


def test_ripple_heats_the_core_through_the_esr_and_shortens_life() -> None:
    model = ElectrolyticCapacitorAgeing()
    u = {"ambient": 90.0, "ripple": 2.0}
    # T_core = T_amb + I^2 * ESR * R_th = 90 + 2^2 * 0.05 ohm * 25 K/W = 90 + 5 = 95 degC when new;
    # at the end of life (loss 0.2) ESR = 0.05 / (1 - 0.2) = 0.0625 ohm: 90 + 4 * 0.0625 * 25 = 96.25 degC.
    new, worn = model.initial_state(1), model.initial_state(1, loss=0.2)
    assert model.core_temperature(new, u)[0] == pytest.approx(95.0, rel=1e-12)
    assert model.core_temperature(worn, u)[0] == pytest.approx(96.25, rel=1e-12)
    # So the life lies between L(96.25) = 4000 h * 2^-0.125 = 3668 h and L(95) = 4000 h, and is the
    # integral of 1 / rate: (L0 / e_eol) * integral of 2^((T_core(e) - T0) / 10)^-1 de over [0, 0.2].
    e = numpy.linspace(0.0, 0.2, 200_001)
    core = 90.0 + 4.0 * 0.05 / (1.0 - e) * 25.0
    inverse_rate_h = 2000.0 / 0.2 * 2.0 ** ((105.0 - core) / 10.0)
    life_h = float(((inverse_rate_h[1:] + inverse_rate_h[:-1]) / 2 * numpy.diff(e)).sum())
    assert 3668.0 < life_h < 4000.0
    ttf = hours_to_end_of_life(model, new, u, dt_h=1.0)
    assert ttf[0] == pytest.approx(life_h, abs=1.0)


def test_one_long_step_equals_many_short_ones_with_self_heating() -> None:
    model = ElectrolyticCapacitorAgeing()
    u = {"ambient": 85.0, "ripple": 3.0}  # 11 K of self-heating, growing with the ESR
    x = model.initial_state(1, loss=0.05)
    long = model.next_state(x, u, 3000 * HOUR)
    short = x
    for _ in range(3000):
        short = model.next_state(short, u, HOUR)
    assert 0.1 < long["loss"][0] < 0.3
    assert long["loss"][0] == pytest.approx(short["loss"][0], rel=1e-9)


def test_higher_stress_shortens_life_for_a_fleet_with_different_inputs() -> None:
    model = ElectrolyticCapacitorAgeing()
    u = {"ambient": numpy.array([60.0, 70.0, 60.0, 60.0]), "ripple": numpy.array([1.0, 1.0, 3.0, 0.0])}
    cool, hot, rippled, quiet = hours_to_end_of_life(model, model.initial_state(4), u, dt_h=100.0)
    assert hot < cool < quiet and rippled < cool
    # Without ripple: 2000 h * 2^((105 - 60) / 10) = 2000 * 2^4.5 = 45255 h.
    assert quiet == pytest.approx(45255.0, abs=100.0)


def test_a_short_lived_unit_ages_faster_by_its_life_factor() -> None:
    model = ElectrolyticCapacitorAgeing()
    x = model.initial_state(2, life_factor=numpy.array([1.0, 0.5]))
    ttf = hours_to_end_of_life(model, x, {"ambient": 95.0, "ripple": 0.0}, dt_h=10.0)
    assert ttf == pytest.approx([4000.0, 2000.0], abs=10.0)


def test_outputs_threshold_and_health_follow_the_electrolyte_loss() -> None:
    model = ElectrolyticCapacitorAgeing()
    x = model.initial_state(2, loss=numpy.array([0.0, 0.2]))
    out = model.output(x, model.default_inputs())
    # ESR = 0.05 / (1 - 0.2) = 0.0625 ohm; C = 1000 uF * (1 - 0.2) = 800 uF: the 20 % criterion.
    assert out["esr"] == pytest.approx([0.05, 0.0625], rel=1e-12)
    assert out["capacitance"] == pytest.approx([1000.0, 800.0], rel=1e-12)
    assert model.loss_limit == pytest.approx(0.2)
    assert list(model.threshold_met(x)) == [False, True]
    assert list(model.health(x)) == [1.0, 0.0]


@pytest.mark.parametrize(("kc", "loss_limit"), [(1.0, 0.2), (0.3, 0.5)])
def test_end_of_life_is_the_first_of_esr_doubled_or_capacitance_down_20_percent(kc: float,
                                                                                 loss_limit: float) -> None:
    # kc = 1: C = C0 (1 - e) is down 20 % at e = 0.2 while ESR = ESR0 / 0.8 is 1.25 x.
    # kc = 0.3: ESR = ESR0 / (1 - e) doubles at e = 0.5, when C is down only 0.3 * 0.5 = 15 %.
    model = ElectrolyticCapacitorAgeing(kc=kc)
    assert model.loss_limit == pytest.approx(loss_limit)
    loss = numpy.arange(0.00025, 0.7, 0.0005)  # never exactly on the limit
    x = model.initial_state(loss.size, loss=loss)
    out = model.output(x, model.default_inputs())
    by_outputs = (out["esr"] >= 2.0 * 0.05) | (out["capacitance"] <= 0.8 * 1000.0)
    failed = model.threshold_met(x)
    assert numpy.array_equal(failed, by_outputs)
    assert 0 < failed.sum() < failed.size
    health = model.health(x)
    assert numpy.all(health[failed] == 0.0) and numpy.all((0.0 < health[~failed]) & (health[~failed] <= 1.0))
    assert numpy.all(numpy.diff(health) <= 0)


def test_bad_parameters_raise_naming_the_parameter() -> None:
    with pytest.raises(TwinError, match="rated_life=-1.0 h is outside"):
        ElectrolyticCapacitorAgeing(rated_life=-1)
    with pytest.raises(TwinError, match="esr_limit=1.0 1 is outside"):
        ElectrolyticCapacitorAgeing(esr_limit=1.0)
    with pytest.raises(TwinError, match="c_drop_limit=0.5 over kc=0.5"):
        ElectrolyticCapacitorAgeing(c_drop_limit=0.5, kc=0.5)
    with pytest.raises(TwinError, match="unknown parameter"):
        ElectrolyticCapacitorAgeing(colour=1)


@pytest.mark.parametrize(("loss", "life_factor", "seed"), [(0.05, 1.0, 0), (0.02, 0.6, 1), (0.1, 1.5, 2)])
def test_filter_recovers_hidden_loss_and_rul_from_noisy_esr_and_capacitance(
        loss: float, life_factor: float, seed: int) -> None:
    model = ElectrolyticCapacitorAgeing()
    u = {"ambient": 85.0, "ripple": 2.0}  # core ~90 degC: ~5700 h of rated life when new
    x = model.initial_state(1, loss=loss, life_factor=life_factor)
    rng = numpy.random.default_rng(seed)
    pf = ParticleFilter(ElectrolyticCapacitorAgeing(), 1000, seed=seed)
    sample_h = 12.0
    for k in range(200):  # 100 days
        if k:
            x = model.next_state(x, u, sample_h * HOUR)
        y = model.output(x, u)
        pf.update(k * sample_h * HOUR, u, {"esr": float(y["esr"][0]) + rng.normal(0.0, 5e-4),
                                           "capacitance": float(y["capacitance"][0]) + rng.normal(0.0, 5.0)})
    est = pf.estimate()
    assert est["loss"] == pytest.approx(float(x["loss"][0]), abs=0.003)
    assert est["health"] == pytest.approx(1.0 - float(x["loss"][0]) / 0.2, abs=0.02)
    assert est["life_factor"] == pytest.approx(life_factor, rel=0.2)
    # True RUL: step the true unit on to its end of life.
    rest = x
    true_rul = 0.0
    while not model.threshold_met(rest)[0]:
        rest = model.next_state(rest, u, HOUR)
        true_rul += HOUR
    rul = pf.predict_rul(u)
    assert rul["rul_p50_s"] == pytest.approx(true_rul, rel=0.25)
    assert rul["rul_p05_s"] <= rul["rul_p50_s"] <= rul["rul_p95_s"]
    assert math.isfinite(rul["rul_p95_s"])
