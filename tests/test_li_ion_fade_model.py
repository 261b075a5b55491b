"""Li-ion capacity fade twin: Naumann calendar + Wang cycle ageing, exact under any step, filtered."""

from __future__ import annotations

import numpy
import pytest

from twinloop import units
from twinloop.errors import TwinError
from twinloop.twins.estimate import ParticleFilter
from twinloop.twins.models.li_ion_fade import LiIonCapacityFade

HOUR = 3600.0
DAY = 86400.0
WEEK = 7 * DAY
YEAR = 365.25 * DAY
REST_25C = {"temperature": 25.0, "current": 0.0, "soc": 0.5}


def test_calendar_and_cycle_loss_worked_by_hand() -> None:
    model = LiIonCapacityFade()
    new = model.initial_state(1)
    # Calendar, 25 degC (= T_ref, so k_T = 1.2571e-5 s^-0.5), SOC 0.5 (k_SOC = d = 0.60225), one year:
    # 1.2571e-5 * 0.60225 * sqrt(31557600 s) = 7.57088475e-6 * 5617.61515 = 0.0425303.
    x = model.next_state(new, REST_25C, YEAR)
    assert x["cal_loss"][0] == pytest.approx(0.0425303, rel=1e-6)
    assert x["cyc_loss"][0] == 0.0
    # Calendar, 40 degC, SOC 1, 100 days: k_T = 1.2571e-5 * exp(-17126 / 8.314462618 * (1/313.15 - 1/298.15))
    # = 1.2571e-5 * exp(2059.784 * 1.6065862e-4) = 1.2571e-5 * exp(0.3309221) = 1.2571e-5 * 1.3922513;
    # k_SOC = 2.8575 * 0.5^3 + 0.60225 = 0.9594375; sqrt(8640000 s) = 2939.3877;
    # 1.2571e-5 * 1.3922513 * 0.9594375 * 2939.3877 = 0.0493584.
    x = model.next_state(new, {"temperature": 40.0, "current": 0.0, "soc": 1.0}, 100 * DAY)
    assert x["cal_loss"][0] == pytest.approx(0.0493584, rel=1e-6)
    # Cycle, 1C (2.2 A on the 2.2 Ah cell) at 25 degC for 1000 h: throughput 2.2 A * 1000 h / 2 = 1100 Ah;
    # B(1C) = 31630 + (1 - 0.5) / (2 - 0.5) * (21681 - 31630) = 28313.667 (Wang Table 2, linear);
    # exp(-(31700 - 370.3 * 1) / (8.314462618 * 298.15)) = exp(-31329.7 / 2478.95703) = exp(-12.6382586)
    # = 3.2454433e-6; 1100^0.55 = 47.0723605; 28313.667 * 3.2454433e-6 * 47.0723605 = 4.325498 % -> 0.04325498.
    # Calendar meanwhile: 7.57088475e-6 * sqrt(3.6e6 s) = 7.57088475e-6 * 1897.36660 = 0.01436474.
    x = model.next_state(new, {"temperature": 25.0, "current": 2.2, "soc": 0.5}, 1000 * HOUR)
    assert x["cyc_loss"][0] == pytest.approx(0.04325498, rel=1e-6)
    assert x["cal_loss"][0] == pytest.approx(0.01436474, rel=1e-6)
    # Capacity: 2.2 Ah * (1 - 0.04325498 - 0.01436474) = 2.07323662 Ah.
    assert model.output(x, {})["capacity"][0] == pytest.approx(2.07323662, rel=1e-7)
    # At rest, 25 degC, SOC 0.5, a new cell loses 20 % after (0.2 / 7.57088475e-6)^2 s = 6.978e8 s = 22.1 years.
    life = (0.2 / 7.57088475e-6) ** 2
    assert life / YEAR == pytest.approx(22.11, abs=0.01)
    assert not model.threshold_met(model.next_state(new, REST_25C, 0.999 * life))[0]
    assert model.threshold_met(model.next_state(new, REST_25C, 1.001 * life))[0]


def test_one_long_step_equals_many_short_ones() -> None:
    model = LiIonCapacityFade()
    x = model.initial_state(3, cal_loss=numpy.array([0.0, 0.02, 0.05]), cyc_loss=numpy.array([0.0, 0.03, 0.01]),
                            k=numpy.array([1.0, 0.8, 1.3]))
    u = {"temperature": numpy.array([25.0, 35.0, 45.0]), "current": numpy.array([0.0, 2.2, 6.6]),
         "soc": numpy.array([0.5, 0.8, 0.2])}
    long = model.next_state(x, u, 1000 * HOUR)
    short = x
    for _ in range(1000):
        short = model.next_state(short, u, HOUR)
    for key in ("cal_loss", "cyc_loss"):
        numpy.testing.assert_allclose(long[key], short[key], rtol=1e-9, atol=0)
    assert numpy.all(long["cal_loss"] > x["cal_loss"])
    assert long["cyc_loss"][0] == 0.0 and numpy.all(long["cyc_loss"][1:] > x["cyc_loss"][1:])


def test_loss_done_carries_over_when_the_stress_changes() -> None:
    model = LiIonCapacityFade()
    new = model.initial_state(1)
    hot, cool = dict(REST_25C, temperature=45.0), REST_25C
    hot_then_cool = model.next_state(model.next_state(new, hot, YEAR), cool, YEAR)
    two_cool = model.next_state(new, cool, 2 * YEAR)
    two_hot = model.next_state(new, hot, 2 * YEAR)
    assert two_cool["cal_loss"][0] < hot_then_cool["cal_loss"][0] < two_hot["cal_loss"][0]
    # The cool year starts from the equivalent age of the hot year's loss: sqrt(t_eq + 1 year) at the cool rate.
    rate = 7.57088475e-6
    t_eq = (model.next_state(new, hot, YEAR)["cal_loss"][0] / rate) ** 2
    assert hot_then_cool["cal_loss"][0] == pytest.approx(rate * (t_eq + YEAR) ** 0.5, rel=1e-6)


def test_hotter_and_faster_cycling_fade_faster() -> None:
    model = LiIonCapacityFade()
    x = model.initial_state(3)
    by_temperature = model.next_state(x, {"temperature": numpy.array([15.0, 25.0, 45.0]), "current": 1.1}, YEAR)
    assert numpy.all(numpy.diff(by_temperature["cal_loss"]) > 0)
    assert numpy.all(numpy.diff(by_temperature["cyc_loss"]) > 0)
    by_current = model.next_state(x, {"temperature": 25.0, "current": numpy.array([0.55, 2.2, 8.8])}, 1000 * HOUR)
    assert numpy.all(numpy.diff(by_current["cyc_loss"]) > 0)
    assert by_current["cal_loss"][0] == by_current["cal_loss"][2]  # calendar ageing does not see the current
    # Per Ah too at the extremes of Wang's data: 1100 Ah at 10C fade more than at C/2.
    per_ah = model.next_state(model.initial_state(2), {"temperature": 25.0, "current": numpy.array([1.1, 22.0])},
                              numpy.array([2000.0, 100.0]) * HOUR)
    assert per_ah["cyc_loss"][1] > 1.5 * per_ah["cyc_loss"][0]
    # Full SOC ages faster in storage than empty.
    by_soc = model.next_state(model.initial_state(2), dict(REST_25C, soc=numpy.array([0.1, 1.0])), YEAR)
    assert by_soc["cal_loss"][1] > 2 * by_soc["cal_loss"][0]


def test_health_is_one_new_and_zero_at_80_percent_capacity() -> None:
    for eol, limit in ((0.8, 0.2), (0.7, 0.3)):
        model = LiIonCapacityFade(eol_fraction=eol)
        loss = numpy.linspace(0.0, 0.4, 4001)
        x = model.initial_state(loss.size, cal_loss=loss / 2, cyc_loss=loss / 2)
        capacity = model.output(x, {})["capacity"]
        failed = model.threshold_met(x)
        assert model.loss_limit == pytest.approx(limit, rel=1e-12)
        assert numpy.array_equal(failed, loss >= model.loss_limit)
        assert 0 < failed.sum() < failed.size
        assert numpy.all(capacity[failed] <= eol * 2.2 + 1e-12) and numpy.all(capacity[~failed] > eol * 2.2 - 1e-12)
        health = model.health(x)
        assert health[0] == 1.0 and numpy.all(health[failed] == 0.0) and numpy.all(health[~failed] > 0.0)
        assert health[numpy.searchsorted(loss, limit / 2)] == pytest.approx(0.5, abs=1e-3)
        assert numpy.all(numpy.diff(health) <= 0)


@pytest.mark.parametrize(("params", "words"), [
    ({"cal_ea": -1.0}, r"cal_ea=-1.0 J/mol is outside"),
    ({"eol_fraction": 1.0}, r"eol_fraction=1.0 1 is outside"),
    ({"cyc_z": 0.0}, r"cyc_z=0.0 1 is outside"),
    ({"capacity": 0.0}, r"capacity=0.0 Ah is outside"),
    ({"cal_soc_d": 0.3}, r"cal_soc_d=0.3 must exceed cal_soc_c / 8"),
    ({"colour": 1.0}, "unknown parameter"),
])
def test_bad_parameters_raise_twin_error_naming_them(params: dict, words: str) -> None:
    with pytest.raises(TwinError, match=words):
        LiIonCapacityFade(**params)


def test_units_are_ones_twinloop_reads() -> None:
    model = LiIonCapacityFade
    for unit in [*model.states.values(), *(s.unit for s in (*model.inputs.values(), *model.outputs.values())),
                 *(p.unit for p in model.parameters.values())]:
        units.unit(unit)
    assert units.convert(50, "1", "%") == 0.5  # a rig's SOC in percent arrives as the fraction the model takes


def true_rul_s(model: LiIonCapacityFade, x: dict, u: dict) -> float:
    """Time to end of life under constant inputs, to within a day (steps are exact)."""
    t = 0.0
    while not model.threshold_met(x)[0]:
        x = model.next_state(x, u, DAY)
        t += DAY
    return t


@pytest.mark.parametrize(("k", "cal0", "cyc0", "seed"), [(1.0, 0.0, 0.0, 0), (1.5, 0.03, 0.02, 1),
                                                         (0.7, 0.01, 0.04, 2)])
def test_filter_recovers_the_hidden_fade_from_noisy_capacity_checks(k: float, cal0: float, cyc0: float,
                                                                    seed: int) -> None:
    model = LiIonCapacityFade()
    cell = model.initial_state(1, k=k, cal_loss=cal0, cyc_loss=cyc0)
    u = {"temperature": 30.0, "current": 0.3, "soc": 0.6}  # ~1.5 cycles a day in a warm enclosure
    rng = numpy.random.default_rng(seed)
    pf = ParticleFilter(LiIonCapacityFade(), 1000, seed=seed)
    for week in range(53):  # a capacity check a week for a year, 0.005 Ah noise
        if week:
            cell = model.next_state(cell, u, WEEK)
        pf.update(week * WEEK, u, {"capacity": float(model.output(cell, u)["capacity"][0]) + rng.normal(0, 0.005)})
    est = pf.estimate()
    true_loss = float(model.loss(cell)[0])
    assert est["cal_loss"] + est["cyc_loss"] == pytest.approx(true_loss, abs=0.003)
    assert est["health"] == pytest.approx(1 - true_loss / 0.2, abs=0.02)
    assert est["k"] == pytest.approx(k, rel=0.15)
    rul = pf.predict_rul(u)
    assert rul["rul_p05_s"] <= rul["rul_p50_s"] <= rul["rul_p95_s"]
    assert rul["rul_p50_s"] == pytest.approx(true_rul_s(model, cell, u), rel=0.25)
