"""Every registered twin model has an emulated device with hidden truth, served over real protocols."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from twinloop.harness.plan import plan
from twinloop.harness.runner import execute
from twinloop.harness.scenario import parse_scenario
from twinloop.harness.services import Services
from twinloop.rigs.emulators.model_device import ModelDevice
from twinloop.rigs.registry import emulator_kind, emulators, open_transport
from twinloop.twins.registry import models

HAND_WRITTEN = {"power_module_thermal": "power_module", "pump_bearing": "pump"}
GENERIC = [name for name in models.names() if name not in HAND_WRITTEN]
YEAR = 3.15e7


def device(model: str, **params: object) -> ModelDevice:
    return emulators.get(model)(**params)


@pytest.mark.parametrize("model", models.names())
def test_every_registered_model_has_an_emulator(model: str) -> None:
    cls = emulators.get(HAND_WRITTEN.get(model, model))
    if model in HAND_WRITTEN:
        return
    assert issubclass(cls, ModelDevice) and cls.model_name == model and cls.device_type == model
    spec = models.get(model)
    assert {k for k, s in cls.signals.items() if s.writable} == set(spec.inputs)
    assert {k for k, s in cls.signals.items() if not s.writable} == set(spec.outputs)
    d = cls()
    for name, sig in spec.inputs.items():
        assert d.values[name] == sig.default and sig.unit == cls.signals[name].unit
    assert set(d.safe_state) <= set(spec.inputs) and d.safe_state


@pytest.mark.parametrize("model", GENERIC)
def test_hidden_truth_is_drawn_per_seed_never_at_the_nominal(model: str) -> None:
    a, b, again = device(model, seed=1), device(model, seed=2), device(model, seed=1)
    nominal = a.model.initial_state(1)
    assert a.hidden and a.hidden == again.hidden and a.values == again.values
    for key, value in a.hidden.items():
        assert value != b.hidden[key]
        assert value != pytest.approx(float(nominal[key][0]), rel=1e-6, abs=0)
        assert b.hidden[key] != pytest.approx(float(nominal[key][0]), rel=1e-6, abs=0)
        low, high = a.model.prior[key]
        assert low <= value <= high and a.truth[key] == value
    given = {k: (v + float(nominal[k][0])) / 2 for k, v in a.hidden.items()}
    assert device(model, seed=1, **given).truth == pytest.approx({**a.truth, **given}, rel=1e-12, abs=0)


def test_the_draws_scatter_as_declared() -> None:
    draws = [device("electromigration", seed=s).hidden["life_factor"] for s in range(300)]
    logs = [math.log(v) for v in draws]
    mean = sum(logs) / len(logs)
    sigma = math.sqrt(sum((x - mean) ** 2 for x in logs) / len(logs))
    assert abs(mean) < 0.06 and 0.24 < sigma < 0.36  # lognormal, sigma of ln 0.3, around 1
    socs = [(device("battery_circuit", seed=s).truth["qb"] - 7856.3254 + 7777.0) / 7777.0 for s in range(100)]
    assert 0.80 <= min(socs) < 0.83 and 0.95 < max(socs) <= 0.98


@pytest.mark.parametrize("model, params, words", [
    ("electrolytic_capacitor", {"colour": 1.0}, "colour"),
    ("paris_crack_growth", {"m": -3.0}, r"parameter m=-3.0"),
    ("electromigration", {"seed": -1}, "seed must be"),
    ("solder_joint_fatigue", {"life_factor": 5.0}, r"life_factor=5 .* outside \[0.5, 2\]"),
    ("battery_circuit", {"sensor_noise": 0.01}, "sensor_noise .* one value per output"),
    ("li_ion_capacity_fade", {"sensor_noise": {"voltage": 0.1}}, r"sensor_noise names \['voltage'\]"),
    ("li_ion_capacity_fade", {"cal_loss": float("nan")}, "cal_loss must be a finite number"),
])
def test_bad_keywords_are_value_errors_naming_the_key(model: str, params: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        device(model, **params)
    with pytest.raises(ValueError, match=words):
        emulator_kind(model).check(**params)


def test_setpoints_are_clamped_to_their_range_and_sensors_are_read_only() -> None:
    d = device("electrolytic_capacitor")
    d.write("ambient", 500.0)
    d.write("ripple", -3.0)
    assert d.values["ambient"] == 150.0 and d.values["ripple"] == 0.0
    with pytest.raises(ValueError, match="read-only"):
        d.write("esr", 0.1)
    with pytest.raises(ValueError, match="cannot be set"):
        d.write("ambient", float("nan"))
    d.power_off()
    assert d.values["ripple"] == 0.0


def test_capacitor_esr_rises_and_capacitance_falls_faster_when_hot() -> None:
    hot, cool = device("electrolytic_capacitor", seed=3), device("electrolytic_capacitor", seed=3)
    hot.write("ambient", 105.0)
    cool.write("ambient", 45.0)
    for d in (hot, cool):
        esr0, c0 = d.values["esr"], d.values["capacitance"]
        for _ in range(4):
            d.step(YEAR / 8)  # half a year, in quarter-years
        assert d.values["esr"] > esr0 and d.values["capacitance"] < c0
    assert hot.truth["loss"] > 5 * cool.truth["loss"]
    assert hot.failed and not cool.failed and hot.health == 0.0 < cool.health
    loss = hot.truth["loss"]
    hot.step(YEAR)  # the physics carries on after failure
    assert hot.truth["loss"] > loss and hot.failed


def test_crack_grows_faster_under_a_larger_stress_range() -> None:
    small, large = device("paris_crack_growth", seed=4, sensor_noise=0), device("paris_crack_growth", seed=4,
                                                                              sensor_noise=0)
    small.write("stress_range", 50.0)
    large.write("stress_range", 100.0)
    for d in (small, large):
        d.write("frequency", 10.0)
        d.step(3600.0 * 24)
    assert 1.0 < small.values["crack_length"] < large.values["crack_length"]
    assert small.values["crack_length"] == small.truth["crack_length"]  # noise off: the true length
    c = large.hidden["c"]
    assert large.model.cycles_between(1.0, large.truth["crack_length"], 100.0, c=c) == pytest.approx(864000)


def test_battery_voltage_falls_under_discharge_and_long_steps_match_short_ones() -> None:
    one, many = device("battery_circuit", seed=5, sensor_noise=0), device("battery_circuit", seed=5, sensor_noise=0)
    v0 = one.values["v"]
    for d in (one, many):
        d.write("i", 2.0)
    one.step(600.0)
    for _ in range(600):
        many.step(1.0)
    assert one.values["v"] < v0 - 0.05 and one.values["t"] > many.model.params["Ta"]
    assert one.truth == pytest.approx(many.truth, rel=1e-9)
    while not one.failed:
        one.step(600.0)
    assert one.values["v"] < one.model.params["VEOD"] and one.health == 0.0


@pytest.mark.parametrize("model, setpoints, output, rises", [
    ("solder_joint_fatigue", {"temperature_swing": 165.0, "cycle_rate": 48.0, "max_temperature": 125.0},
     "rth_rise", True),
    ("electromigration", {"current_density": 2.0, "temperature": 150.0}, "resistance", True),
    ("li_ion_capacity_fade", {"temperature": 45.0, "current": 2.2}, "capacity", False),
])
def test_wear_moves_the_outputs_the_way_the_model_says(model: str, setpoints: dict, output: str,
                                                       rises: bool) -> None:
    d = device(model, seed=6, sensor_noise=0)
    for name, value in setpoints.items():
        d.write(name, value)
    d.step(0.0)
    before = d.values[output]
    d.step(0.5 * YEAR)
    after = d.values[output]
    assert (after > before) if rises else (after < before)
    expected = d.model.output(d.model.initial_state(1, **d.truth), d.setpoints())[output][0]
    assert after == pytest.approx(float(expected))
    assert d.health < 1.0


@pytest.mark.parametrize("protocol", ["modbus", "opcua", "scpi"])
def test_a_generic_device_is_served_over_modbus_opcua_and_scpi(protocol: str) -> None:
    kind = emulator_kind("electromigration", protocol)
    with kind.build(seed=7, sensor_noise=0) as emulator:
        with open_transport("line", emulator.address, kind.signal_map, timeout=2.0,
                            options=kind.transport_options) as t:
            t.write("current_density", 3.0)
            t.write("temperature", 200.0)
            emulator.step(3600.0)
            values = t.read()
    assert values["current_density"] == 3.0 and values["temperature"] == 200.0
    assert values["resistance"] == pytest.approx(emulator.device.values["resistance"], rel=1e-6)
    assert emulator.device.truth["damage"] > 0


def test_can_needs_a_can_map_the_generic_devices_do_not_have() -> None:
    with pytest.raises(ValueError, match="no CAN interface"):
        emulator_kind("electromigration", "can").signal_map


CAPACITOR = """\
scenario: capacitor-ageing
dut: {id: cap-470u, version: "1"}
devices:
  cap:
    type: electrolytic_capacitor
    twin: {model: electrolytic_capacitor, level: shadow}
sample:
  every: 2 h
limits:
  max_duration: 60 d
steps:
  - set: {signal: cap.ambient, value: 105 degC}
  - set: {signal: cap.ripple, value: 2 A}
  - wait: 500 h
expect:
  - {name: esr_bounded, signal: cap.esr, max: 1 ohm}
"""


def test_a_shadow_twin_learns_the_hidden_life_factor_over_modbus(tmp_path: Path, twinloop_ray: Services) -> None:
    rig = tmp_path / "rig.yaml"
    rig.write_text("rig: caps\nclock: simulated\ndevices:\n  cap:\n    emulator: electrolytic_capacitor\n"
                   "    protocol: modbus\n    params: {seed: 13}\n")
    p = plan(parse_scenario("capacitor.yaml", CAPACITOR), rig)
    assert p.devices["cap"].setup.emulator.scheme == "modbus+tcp"
    record = execute(p)
    assert record.outcome == "pass", record.error
    truth = device("electrolytic_capacitor", seed=13)  # the same draw the rig's emulator made
    true_factor = truth.hidden["life_factor"]
    truth.write("ambient", 105.0)
    truth.write("ripple", 2.0)
    for _ in range(250):
        truth.step(7200.0)
    history = record.twins["cap"].history
    first, last = history["life_factor"][0], history["life_factor"][-1]
    assert abs(last - true_factor) < 0.5 * abs(first - true_factor)  # moved towards the hidden truth
    assert abs(true_factor - 1.0) > 0.3  # this unit is far from the nominal life (seed 13 draws 1.44)
    assert abs(last - true_factor) <= 2 * history["life_factor_std"][-1]
    health, spread = history["health"][-1], history["health_std"][-1]
    assert abs(health - truth.health) <= 3 * spread + 0.02
    esr = record.samples.columns["cap.esr"]
    assert esr[-1] > esr[0] + 0.002  # ageing showed through the protocol
