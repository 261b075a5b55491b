"""The equivalent-circuit battery twin (progpy's BatteryCircuit): discharge, EOD, health, filtering."""

from __future__ import annotations

import math
import warnings

import numpy
import pytest

from twinloop import units
from twinloop.errors import TwinError
from twinloop.twins.estimate import ParticleFilter
from twinloop.twins.models.battery import BatteryCircuit

DT = 1.0
#: EOD of a full cell at a constant 2 A with 1 s Euler steps (progpy 1.9.0's simulate_to_threshold
#: with dt=1 gives 3803 s too).
EOD_2A_S = 3803.0


def example_load(t: float) -> float:
    """progpy's example discharge profile (examples/sim.py): 2, 1, 4, 2 then 3 A."""
    return 2.0 if t < 600 else 1.0 if t < 900 else 4.0 if t < 1800 else 2.0 if t < 3000 else 3.0


def discharge(model: BatteryCircuit, load, x: dict | None = None, dt: float = DT,
              output: str = "v") -> tuple[float, list[float]]:
    """Euler steps (load at mid-step, as progpy) until EOD; the EOD time and an output after each step."""
    x = model.initial_state(1) if x is None else x
    t, values = 0.0, []
    while not model.threshold_met(x)[0]:
        x = model.next_state(x, {"i": load(t + dt / 2)}, dt)
        t += dt
        values.append(float(model.output(x, {})[output][0]))
        assert t < 1e5
    return t, values


def test_first_step_worked_by_hand_and_eod_at_2_amps() -> None:
    model = BatteryCircuit()
    x = model.initial_state(1)
    # Full cell: SOC 1, Cb = -230 + 1.2 + 2079.9 + 27.055726 = 1878.155726 F, v = 7856.3254 / 1878.155726 = 4.183 V.
    assert model.output(x, {"i": 0.0})["v"][0] == pytest.approx(4.183, rel=1e-9)
    assert model.health(x)[0] == 1.0
    # One 1 s step at 2 A: ib = 2 + 4.183 / 1e4 = 2.0004183 A leaves qb = 7856.3254 - 2.0004183 = 7854.3249817 C and
    # puts ib * 1 s on both R-C pairs; SOC = (7777 - 7856.3254 + 7854.3249817) / 7777 = 0.99974278, where
    # Cb = -230 SOC^3 + 1.2 SOC^2 + 2079.9 SOC + 27.055726 = 1877.79755 F, so
    # v = 7854.3249817 / 1877.79755 - 2.0004183 / 14.8223 - 2.0004183 / 234.387 = 4.0392378 V.
    # The cell starts at ambient with no R-C voltage, so its temperature has not moved yet.
    x = model.next_state(x, {"i": 2.0}, 1.0)
    assert x["qb"][0] == pytest.approx(7854.3249817, rel=1e-10)
    assert x["qcp"][0] == x["qcs"][0] == pytest.approx(2.0004183, rel=1e-9)
    assert x["tb"][0] == 292.1
    assert model.output(x, {"i": 2.0})["v"][0] == pytest.approx(4.0392378, rel=1e-7)
    t_eod, voltages = discharge(BatteryCircuit(), lambda t: 2.0)
    assert t_eod == EOD_2A_S
    assert voltages[-2] >= 3.0 > voltages[-1]


def test_same_trajectory_and_eod_as_progpy() -> None:
    progpy_models = pytest.importorskip("progpy.models")
    ours = BatteryCircuit()
    theirs = progpy_models.BatteryCircuit()
    for load in (lambda t: 2.0, example_load):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = theirs.simulate_to_threshold(lambda t, x=None: theirs.InputContainer({"i": load(t)}),
                                                  dt=DT, save_freq=DT)
        for output in ("v", "t"):
            theirs_at = {round(t): float(z[output]) for t, z in zip(result.times, result.outputs)}
            t_eod, ours_at = discharge(ours, load, output=output)
            assert abs(t_eod - result.times[-1]) <= DT
            for t in (1, 300, 600, 1200, 1800, 2400, 3000):
                assert ours_at[t - 1] == pytest.approx(theirs_at[t], rel=1e-9, abs=0)
            assert ours_at[-1] == pytest.approx(float(result.outputs[-1][output]), rel=1e-9, abs=0)


def test_defaults_are_progpys() -> None:
    progpy_models = pytest.importorskip("progpy.models")
    theirs = progpy_models.BatteryCircuit().parameters
    ours = BatteryCircuit().params
    for key, value in ours.items():
        if key != "max_step":
            assert value == theirs[key], key
    x0 = BatteryCircuit().initial_state(1)
    assert {k: float(v[0]) for k, v in x0.items()} == dict(theirs["x0"])


def test_a_fleet_of_cells_at_different_currents_in_one_call() -> None:
    model = BatteryCircuit()
    currents = numpy.array([1.0, 2.0, 4.0, 2.0])
    x = model.initial_state(4, qb=numpy.array([7856.3254, 7856.3254, 7856.3254, 5000.0]))
    eod = numpy.full(4, numpy.nan)
    t = 0.0
    while numpy.isnan(eod).any():
        x = model.next_state(x, {"i": currents}, DT)
        t += DT
        eod[numpy.isnan(eod) & model.threshold_met(x)] = t
        if t == 1500.0:
            temperature = model.output(x, {"i": currents})["t"]
            assert temperature[0] < temperature[1] < temperature[2]  # I^2 R heating
    assert eod[1] == EOD_2A_S
    assert eod[1] < eod[0] < 2.1 * eod[1]   # half the current, a little over twice as long
    assert eod[2] < eod[1] / 2
    assert eod[3] < eod[1]                  # started part-empty
    for k in (0, 2):                        # each unit as if it ran alone
        alone, _ = discharge(model, lambda t, i=currents[k]: i)
        assert eod[k] == alone


def test_long_steps_are_split_into_stable_euler_steps() -> None:
    model = BatteryCircuit()
    x = model.initial_state(2, qb=numpy.array([7856.3254, 6000.0]))
    long = model.next_state(x, {"i": 2.0}, 60.0)
    short = x
    for _ in range(60):
        short = model.next_state(short, {"i": 2.0}, 1.0)
    for key in model.states:
        numpy.testing.assert_array_equal(long[key], short[key])
    coarse, _ = discharge(model, lambda t: 2.0, dt=30.0)  # a single 30 s Euler step would diverge
    assert abs(coarse - EOD_2A_S) <= 30.0
    with pytest.raises(TwinError, match="max_step=1.5 s must be below twice the fastest R-C time constant"):
        BatteryCircuit(max_step=1.5, Ccp=5.0)


def test_health_is_one_full_and_zero_at_end_of_discharge() -> None:
    model = BatteryCircuit()
    x = model.initial_state(1)
    health = [model.health(x)[0]]
    while not model.threshold_met(x)[0]:
        x = model.next_state(x, {"i": 3.0}, DT)
        health.append(model.health(x)[0])
    assert health[0] == 1.0 and health[-1] == 0.0
    assert 0.0 < health[-2] < 0.05
    assert numpy.all(numpy.diff(health) <= 0)
    soc = model.soc(x)[0]
    assert 0.0 < soc < 0.2  # the voltage, not the charge, ends the discharge at 3 A


def test_parameters_are_validated() -> None:
    with pytest.raises(TwinError, match="VEOD=0.1 V is outside"):
        BatteryCircuit(VEOD=0.1)
    with pytest.raises(TwinError, match="max_step=5.0 s is outside"):
        BatteryCircuit(max_step=5.0)
    with pytest.raises(TwinError, match="bulk capacitance .* must be positive .*Cbp3=-100.0"):
        BatteryCircuit(Cbp3=-100.0)
    with pytest.raises(TwinError, match="unknown parameter"):
        BatteryCircuit(V0=4.2)


def test_units_are_ones_twinloop_reads() -> None:
    model = BatteryCircuit
    for unit in [*model.states.values(), *(s.unit for s in (*model.inputs.values(), *model.outputs.values())),
                 *(p.unit for p in model.parameters.values())]:
        units.unit(unit)
    assert units.convert("25 degC", "K") == pytest.approx(298.15)  # a rig's degC reading arrives in K
    assert units.convert(2.0, "C", "Ah") == 7200.0


@pytest.mark.parametrize(("soc", "seed"), [(0.9, 0), (0.6, 1)])
def test_filter_finds_the_hidden_charge_and_predicts_end_of_discharge(soc: float, seed: int) -> None:
    model = BatteryCircuit()
    p = model.params
    true_qb = p["qMax"] - p["CMax"] + soc * p["CMax"]
    cell = model.initial_state(1, qb=true_qb)
    rng = numpy.random.default_rng(seed)
    pf = ParticleFilter(BatteryCircuit(), 1000, seed=seed)
    u = {"i": 2.0}
    for k in range(61):  # 10 s samples for 10 minutes
        if k:
            cell = model.next_state(cell, u, 10.0)
        z = model.output(cell, u)
        pf.update(10.0 * k, u, {"t": float(z["t"][0]) + rng.normal(0, 0.2),
                                "v": float(z["v"][0]) + rng.normal(0, 0.01)})
    est = pf.estimate()
    assert est["qb"] == pytest.approx(float(cell["qb"][0]), abs=0.02 * p["CMax"])
    true_eod, _ = discharge(model, lambda t: 2.0, x=cell)
    rul = pf.predict_rul(u)
    assert rul["rul_p50_s"] == pytest.approx(true_eod, rel=0.05)
    assert rul["rul_p05_s"] <= rul["rul_p50_s"] <= rul["rul_p95_s"]
    assert math.isclose(est["health"], float(model.health(cell)[0]), abs_tol=0.05)
