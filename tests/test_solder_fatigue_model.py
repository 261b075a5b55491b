"""The Coffin-Manson / Norris-Landzberg solder-joint fatigue twin model, checked against hand-worked values."""

from __future__ import annotations

import math

import numpy
import pytest

from twinloop import units
from twinloop.errors import TwinError
from twinloop.twins.estimate import ParticleFilter
from twinloop.twins.models.solder_fatigue import SolderJointFatigue, norris_landzberg_af

DAY = 86400.0
# -40/125 degC at 2 cycles/h (the model's reference condition) and a 0/100 degC field cycle once a day.
TEST = {"temperature_swing": 165.0, "cycle_rate": 48.0, "max_temperature": 125.0}
FIELD = {"temperature_swing": 100.0, "cycle_rate": 1.0, "max_temperature": 100.0}

# Norris-Landzberg AF = N_field / N_test with SnPb n = 1.9, q = 1/3, Ea/k = 1414 K:
#   (165 / 100)^1.9:  ln 1.65 = 0.500775, * 1.9 = 0.951473, exp -> 2.58952
#   (1 / 48)^(1/3):   48^(1/3) = 3.63424 -> 0.275161
#   exp(1414 * (1/373.15 - 1/398.15)) = exp(1414 * (0.00267989 - 0.00251162))
#                                     = exp(1414 * 1.68271e-4) = exp(0.237936) = 1.268627
#   AF = 2.58952 * 0.275161 * 1.268627 = 0.903940 (a slow field cycle does a little more damage than
#   a test cycle); in time AF * 48 / 1 = 43.389: one test day stands for 43.4 field days.
AF_SNPB = 0.903940
# SAC (Pan et al. 2005), n = 2.65, q = 0.136, Ea/k = 2185 K:
#   1.65^2.65 = exp(2.65 * 0.500775) = exp(1.327055) = 3.769923
#   (1/48)^0.136 = exp(-0.136 * 3.871201) = exp(-0.526483) = 0.590679
#   exp(2185 * 1.68271e-4) = exp(0.367673) = 1.444369
#   AF = 3.769923 * 0.590679 * 1.444369 = 3.216339
AF_SAC = 3.216339


def days_to_failure(model: SolderJointFatigue, x: dict, u: dict, dt: float) -> numpy.ndarray:
    """Step a fleet until every unit meets the threshold; each unit's time to failure in days."""
    ttf = numpy.full(x["damage"].shape, numpy.nan)
    t = 0.0
    while numpy.isnan(ttf).any():
        x = model.next_state(x, u, dt)
        t += dt
        ttf[numpy.isnan(ttf) & model.threshold_met(x)] = t / DAY
        assert t < 1e5 * DAY
    return ttf


def test_norris_landzberg_acceleration_factor_worked_by_hand() -> None:
    assert norris_landzberg_af(TEST, FIELD) == pytest.approx(AF_SNPB, rel=1e-5)
    assert norris_landzberg_af(TEST, FIELD, in_time=True) == pytest.approx(AF_SNPB * 48, rel=1e-5)
    assert SolderJointFatigue().acceleration_factor(TEST, FIELD) == pytest.approx(AF_SNPB, rel=1e-5)
    sac = SolderJointFatigue(dt_exponent=2.65, freq_exponent=0.136, ea_over_k=2185.0)
    assert sac.acceleration_factor(TEST, FIELD) == pytest.approx(AF_SAC, rel=1e-5)
    assert norris_landzberg_af(FIELD, FIELD) == 1.0
    assert norris_landzberg_af(FIELD, TEST) == pytest.approx(1 / norris_landzberg_af(TEST, FIELD), rel=1e-12)


def test_life_at_reference_and_field_conditions() -> None:
    model = SolderJointFatigue()
    # At the reference condition N_f = cycles_ref = 2000 cycles = 2000 / 48 = 41.667 days.
    assert model.cycles_to_failure(TEST) == pytest.approx(2000.0, rel=1e-12)
    # In the field N_f = 2000 * AF = 2000 * 0.903940 = 1807.88 cycles, at one a day 1807.88 days.
    assert model.cycles_to_failure(FIELD) == pytest.approx(2000 * AF_SNPB, rel=1e-5)
    ttf = days_to_failure(model, model.initial_state(1), TEST, DAY / 48)  # one cycle a step
    assert ttf[0] == pytest.approx(2000 / 48, abs=1 / 48 + 1e-9)
    ttf = days_to_failure(model, model.initial_state(1), FIELD, DAY)
    assert 1807 <= ttf[0] <= 1809
    # One cycle at the reference: D = 1 / 2000 = 5e-4 exactly (Miner), a unit at half life: 1 / 1000.
    one = model.next_state(model.initial_state(2, life_factor=numpy.array([1.0, 0.5])), TEST, DAY / 48)
    numpy.testing.assert_allclose(one["damage"], [5e-4, 1e-3], rtol=1e-12)


def test_thermal_resistance_rise_by_hand() -> None:
    # phi_f = 1 - 1 / 1.2 = 1/6;  rise = 100 * (D/6) / (1 - D/6) = 100 * D / (6 - D)
    # D = 0: 0 %;  D = 0.5: 50 / 5.5 = 9.0909 %;  D = 1: 100 / 5 = 20 %;  D = 3: 300 / 3 = 100 %
    model = SolderJointFatigue()
    x = model.initial_state(4, damage=numpy.array([0.0, 0.5, 1.0, 3.0]))
    numpy.testing.assert_allclose(model.output(x, FIELD)["rth_rise"], [0.0, 9.090909, 20.0, 100.0], rtol=1e-6)
    # rise_fail = 50 %: phi_f = 1 - 1/1.5 = 1/3, at D = 1: (1/3) / (2/3) = 50 %
    assert SolderJointFatigue(rise_fail=50.0).output(model.initial_state(1, damage=1.0), FIELD)["rth_rise"][0] == \
        pytest.approx(50.0, rel=1e-12)


def test_one_long_step_equals_many_short_ones() -> None:
    model = SolderJointFatigue()
    x = model.initial_state(2, damage=numpy.array([0.0, 0.4]), life_factor=numpy.array([1.0, 0.7]))
    long = model.next_state(x, FIELD, 400 * DAY)
    short = x
    for _ in range(4000):
        short = model.next_state(short, FIELD, 0.1 * DAY)
    assert numpy.all(long["damage"] > x["damage"])
    numpy.testing.assert_allclose(long["damage"], short["damage"], rtol=1e-9)


def test_harsher_cycles_shorten_life_and_no_cycling_does_no_damage() -> None:
    model = SolderJointFatigue()
    u = {"temperature_swing": numpy.array([100.0, 200.0, 100.0, 100.0, 0.0, 100.0]),
         "cycle_rate": numpy.array([1.0, 1.0, 1.0, 8.0, 1.0, 0.0]),
         "max_temperature": numpy.array([100.0, 100.0, 150.0, 100.0, 100.0, 100.0])}
    x = model.next_state(model.initial_state(6), u, 100 * DAY)
    base, double_swing, hot, fast, still, stopped = x["damage"]
    assert double_swing == pytest.approx(base * 2 ** 1.9, rel=1e-12)  # 2^1.9 = 3.7321 times the damage
    assert hot > base  # hotter peak, shorter life
    # 8 times the rate: 8 times the cycles, each doing 8^(-1/3) = 1/2 less damage: 8 / 2 = 4 times
    assert fast == pytest.approx(4 * base, rel=1e-12)
    assert still == 0.0 and stopped == 0.0
    # A fleet steps like its units one by one.
    for i in range(6):
        alone = model.next_state(model.initial_state(1), {k: float(v[i]) for k, v in u.items()}, 100 * DAY)
        assert alone["damage"][0] == x["damage"][i]


def test_health_and_threshold_agree_with_the_rise_criterion() -> None:
    model = SolderJointFatigue()
    x = model.initial_state(10_001, damage=numpy.linspace(0.0, 1.5, 10_001))
    failed = model.threshold_met(x)
    assert numpy.array_equal(failed, model.output(x, FIELD)["rth_rise"] >= 20.0 - 1e-9)
    assert 0 < failed.sum() < failed.size
    health = model.health(x)
    assert health[0] == 1.0 and numpy.all(health[failed] == 0.0) and numpy.all(health[~failed] > 0.0)
    assert numpy.all(numpy.diff(health) <= 0)


def test_bad_parameters_and_conditions_raise_twin_error_naming_them() -> None:
    with pytest.raises(TwinError, match="parameter freq_exponent=1.0 1 is outside"):
        SolderJointFatigue(freq_exponent=1.0)
    with pytest.raises(TwinError, match="parameter cycles_ref=0.0 1 is outside"):
        SolderJointFatigue(cycles_ref=0.0)
    with pytest.raises(TwinError, match="parameter rise_fail=-5.0 % is outside"):
        SolderJointFatigue(rise_fail=-5.0)
    with pytest.raises(TwinError, match="unknown parameter"):
        SolderJointFatigue(colour=1.0)
    with pytest.raises(TwinError, match="field temperature_swing=0.0 must be a finite number > 0"):
        norris_landzberg_af(TEST, dict(FIELD, temperature_swing=0.0))
    with pytest.raises(TwinError, match="test max_temperature=-300.0 must be a finite number > -273.15"):
        norris_landzberg_af(dict(TEST, max_temperature=-300.0), FIELD)
    with pytest.raises(TwinError, match="test cycle_rate=None"):
        norris_landzberg_af({"temperature_swing": 165.0, "max_temperature": 125.0}, FIELD)


def test_units_are_understood_by_pint() -> None:
    model = SolderJointFatigue
    names = [*model.states.values(), *(s.unit for s in model.inputs.values()),
             *(s.unit for s in model.outputs.values()), *(p.unit for p in model.parameters.values())]
    for name in names:
        units.unit(name)
    assert units.convert("2 1/h", "1/day") == pytest.approx(48.0)  # 2 cycles/h is 48 a day
    assert units.convert_delta("165 delta_degC", "K") == pytest.approx(165.0)


@pytest.mark.parametrize(("life_factor", "damage", "seed"), [(1.0, 0.0, 0), (0.6, 0.1, 1), (1.6, 0.3, 2)])
def test_filter_recovers_damage_and_hidden_life_factor(life_factor: float, damage: float, seed: int) -> None:
    model = SolderJointFatigue()
    truth = model.initial_state(1, damage=damage, life_factor=life_factor)
    life = (1 - damage) * life_factor * 2000 / 48 * DAY  # seconds left at the reference condition
    rng = numpy.random.default_rng(seed)
    pf = ParticleFilter(SolderJointFatigue(), 2000, seed=seed)
    dt, t = life / 100, 0.0

    def measure() -> dict[str, float]:
        return {"rth_rise": float(model.output(truth, TEST)["rth_rise"][0]) + rng.normal(0, 0.5)}

    pf.update(t, TEST, measure())
    while t < 0.7 * life:
        truth = model.next_state(truth, TEST, dt)
        t += dt
        pf.update(t, TEST, measure())
    est = pf.estimate()
    assert est["damage"] == pytest.approx(truth["damage"][0], abs=0.05)  # 1 %-point of R_th rise, 2 sigma
    assert est["life_factor"] == pytest.approx(life_factor, rel=0.15)  # prior spans 0.5 to 2
    assert est["health"] == pytest.approx(1 - truth["damage"][0], abs=0.05)
    rul = pf.predict_rul(TEST)
    assert rul["rul_p50_s"] == pytest.approx(life - t, rel=0.3)
    assert rul["rul_p05_s"] <= rul["rul_p50_s"] <= rul["rul_p95_s"]
    assert math.isfinite(rul["rul_p95_s"])
