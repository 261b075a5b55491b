"""The maturity levels that act: a 'twin' keeps its prediction within limits, an 'intelligent' twin decides on RUL.

Also the twin options wired from the scenario: the ensemble Kalman filter and
the anomaly monitor on the twin's innovations.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from twinloop.errors import ConfigError, TwinError
from twinloop.harness.plan import plan
from twinloop.harness.record import RunRecord
from twinloop.harness.runner import execute
from twinloop.harness.scenario import parse_scenario
from twinloop.harness.services import Services
from twinloop.twins.actor import DeviceTwin
from twinloop.twins.policy import Keep, Policy, WriteLimit

ROOT = Path(__file__).parents[1]
PROTECTED = (ROOT / "scenarios" / "power_module_protected.yaml").read_text()


@pytest.fixture
def scenario_dir(tmp_path: Path) -> Path:
    """A folder with the shipped fragments, so variants of the scenario can include them."""
    (tmp_path / "fragments").mkdir()
    for f in (ROOT / "scenarios" / "fragments").iterdir():
        (tmp_path / "fragments" / f.name).write_text(f.read_text())
    return tmp_path


def variant(folder: Path, text: str, name: str = "protected.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def run(path: Path) -> RunRecord:
    return execute(plan(path))


def written_power(record: RunRecord) -> list[tuple[float, float]]:
    """(t, value) of every power write that reached the device."""
    calls = record.calls
    return [(t, float(a.split("=")[1])) for t, op, a, ok in zip(calls.t, calls.op, calls.args, calls.ok)
            if op == "write" and a.startswith("power=") and ok]


def test_an_intelligent_twin_keeps_the_junction_in_limits_derates_and_asks_for_maintenance(
        twinloop_ray: Services) -> None:
    record = run(ROOT / "scenarios" / "power_module_protected.yaml")
    assert record.outcome == "pass", record.error
    kinds = [e.kind for e in record.events]
    hold = next(e for e in record.events if e.kind == "twin_setpoint")
    assert hold.t == 420.0 and hold.data["commanded"] == 45.0 and 0 < hold.value < 45
    derate = next(e for e in record.events if e.kind == "derate")
    request = next(e for e in record.events if e.kind == "maintenance_request")
    assert derate.t == request.t > hold.t
    assert request.data["rul"] == "p05" and request.data["rul_s"] < 150 * 86400
    assert "replace the fan" in request.message
    assert kinds.count("derate") == kinds.count("maintenance_request") == 1  # a decision fires once
    writes = written_power(record)
    assert all(0.0 <= v <= 60.0 for _, v in writes)                  # never outside the declared range
    assert all(v <= 25.0 for t, v in writes if t >= derate.t)         # derated for the rest of the run
    assert max(record.samples.columns["module.temperature"]) < 121.0  # kept by the twin's prediction


def test_the_same_steps_without_an_acting_twin_overheat_the_module(twinloop_ray: Services,
                                                                  scenario_dir: Path) -> None:
    start, end = PROTECTED.index("      level: intelligent"), PROTECTED.index("steps:")
    shadow = PROTECTED[:start] + "      level: shadow\n" + PROTECTED[end:]
    record = run(variant(scenario_dir, shadow))
    assert record.outcome == "fail"
    assert max(record.samples.columns["module.temperature"]) > 140.0
    assert not [e for e in record.events if e.kind in ("twin_setpoint", "derate", "maintenance_request")]


def test_a_twin_level_twin_keeps_without_deciding(twinloop_ray: Services, scenario_dir: Path) -> None:
    text = PROTECTED.replace("level: intelligent", "level: twin")
    start = text.index("      decide:\n")
    text = text[:start] + text[text.index("steps:"):]
    record = run(variant(scenario_dir, text))
    assert record.outcome == "pass", record.error
    assert not [e for e in record.events if e.kind in ("derate", "maintenance_request")]
    held = [e for e in record.events if e.kind == "twin_setpoint"]
    assert held and held[0].data["commanded"] == 45.0 and held[0].value < 45.0
    assert max(record.samples.columns["module.temperature"]) < 121.0


@pytest.mark.parametrize("old, new, words", [
    ("level: intelligent", "level: shadow", "need level 'twin' or 'intelligent'"),
    ("level: intelligent", "level: twin", "'decide' needs level 'intelligent'"),
    ("write: power, horizon", "write: fan, horizon", "keep[0] moves 'fan', which is not in 'writes'"),
    ("derate: {power: 25 W}", "derate: {fan: 0}", "derates 'fan', which is not in 'writes'"),
    ("derate: {power: 25 W}", "derate: {power: 80 W}", "outside the range 'writes' allows"),
    ("power: {min: 0 W, max: 60 W}", "power: {min: 0 W, max: 60 W}\n        temperature: {min: 0 degC, max: 60 degC}",
     "module.temperature is read-only"),
    ("{output: temperature, below", "{output: humidity, below", "no output or state 'humidity'"),
    ("below: 120 degC, write", "below: 120 kg, write", "kg"),
    ("power: {min: 0 W, max: 60 W}", "power: {min: 60 W, max: 0 W}", "must be below max"),
    ("{rul: p05, below: 150 d}", "{rul: p01, below: 150 d}", "p05"),
    ("          maintenance: \"die", "          note: \"die", "note"),
])
def test_acting_twins_are_checked_at_load(old: str, new: str, words: str, scenario_dir: Path) -> None:
    assert old in PROTECTED
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("(", r"\(")):
        plan(variant(scenario_dir, PROTECTED.replace(old, new, 1), "bad.yaml"))


def test_the_error_names_the_file_line_and_key(scenario_dir: Path) -> None:
    with pytest.raises(ConfigError) as err:
        plan(variant(scenario_dir, PROTECTED.replace("derate: {power: 25 W}", "derate: {power: 80 W}"), "bad.yaml"))
    text = str(err.value)
    assert "bad.yaml" in text and "devices.module.twin.decide[0].derate.power" in text


def test_keep_picks_the_band_nearest_the_command_from_the_twins_own_cloud() -> None:
    keep = Keep("temperature", 120.0, "below", "power", 600.0)
    twin = DeviceTwin("m", "power_module_thermal", n_particles=400,
                      policy=Policy({"power": WriteLimit(0.0, 60.0)}, (keep,)))
    for t in range(0, 120):
        twin.assimilate(float(t), {"power": 0.0, "fan": 0.0, "ambient": 25.0, "temperature": 25.0})
    band = twin.decide({"power": 45.0})["bands"]["power"]
    # steady state T = 25 + P * (R_jc + R_ca / 0.35): 120 degC at ~34 W for a new module on the nominal heatsink;
    # the cloud's heatsink and damage spread pulls the 95 % bound lower, never higher
    assert band["feasible"] and band["low"] == 0.0 and 20.0 < band["high"] <= 34.5
    assert band["predicted"] <= 120.0
    above = Keep("temperature", 60.0, "above", "power", 600.0)  # a heater that must stay warm
    twin.policy = Policy({"power": WriteLimit(0.0, 60.0)}, (above,))
    band = twin.decide({"power": 0.0})["bands"]["power"]
    assert band["feasible"] and band["high"] == 60.0 and 10.0 < band["low"] < 20.0


def test_a_keep_no_setpoint_can_meet_holds_the_least_unsafe_and_says_so() -> None:
    keep = Keep("temperature", 10.0, "below", "power", 600.0)   # below ambient: impossible
    twin = DeviceTwin("m", "power_module_thermal", n_particles=200,
                      policy=Policy({"power": WriteLimit(5.0, 60.0)}, (keep,)))
    twin.assimilate(0.0, {"power": 5.0, "fan": 1.0, "ambient": 25.0, "temperature": 27.0})
    band = twin.decide({"power": 30.0})["bands"]["power"]
    assert not band["feasible"] and band["low"] == band["high"] == 5.0


def test_the_ensemble_kalman_filter_runs_a_scenario(twinloop_ray: Services) -> None:
    text = (ROOT / "scenarios" / "smoke.yaml").read_text().replace(
        "      level: shadow\n", "      level: shadow\n      filter: enkf\n      particles: 200\n")
    record = execute(plan(parse_scenario("smoke.yaml", text)))
    assert record.outcome == "pass", record.error
    final = record.twins["module"].final
    assert 0.0 <= final["damage"] < 0.2 and final["damage_std"] > 0


def test_the_anomaly_monitor_reports_a_stuck_sensor_as_an_event(twinloop_ray: Services) -> None:
    text = (ROOT / "scenarios" / "smoke.yaml").read_text().replace(
        "      level: shadow\n",
        "      level: shadow\n      anomaly: {false_alarm_rate: 0.001, method: both, warmup: 60}\n").replace(
        "  - wait: 5 min\nexpect:",
        "  - wait: 5 min\n  - fault: {kind: stuck, signal: module.temperature, value: 40 degC, duration: 60 s}\n"
        "  - wait: 2 min\nexpect:")
    record = execute(plan(parse_scenario("smoke.yaml", text)))
    alarms = [e for e in record.events if e.kind == "twin_anomaly"]
    assert alarms, "a sensor stuck 60 K low must raise an alarm"
    assert any(600.0 <= e.t <= 660.0 and e.data["direction"] in ("low", "high") for e in alarms)
    assert "anomaly" in record.twins["module"].history


def test_the_array_module_comes_from_configuration() -> None:
    import numpy

    twin = DeviceTwin("m", "power_module_thermal", n_particles=50, array="auto")
    try:
        import cupy  # noqa: F401
        has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        has_gpu = False
    assert (twin.xp.__name__ == "cupy") == has_gpu
    if not has_gpu:
        assert twin.xp is numpy
        with pytest.raises(TwinError, match="array: cupy needs CuPy"):
            DeviceTwin("m", "power_module_thermal", n_particles=50, array="cupy")


def test_a_twin_on_an_array_module_it_cannot_have_fails_the_run_with_the_reason(twinloop_ray: Services) -> None:
    pytest.importorskip("numpy")
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("this machine has a GPU: array: cupy works here")
    except Exception:
        pass
    text = (ROOT / "scenarios" / "smoke.yaml").read_text().replace(
        "      level: shadow\n", "      level: shadow\n      array: cupy\n")
    record = execute(plan(parse_scenario("smoke.yaml", text)))
    assert record.outcome == "error"
    assert "did not start" in record.error and "array: cupy needs CuPy" in record.error
