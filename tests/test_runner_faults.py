"""Wedged devices, retries, on_error, device locks, and the pytest plugin's items and JUnit XML."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from twinloop.errors import TransportInitError
from twinloop.harness.plan import plan
from twinloop.harness.runner import execute
from twinloop.harness.scenario import parse_scenario
from twinloop.harness.services import Services
from twinloop.rigs.emulators.power_module import PowerModuleEmulator
from twinloop.rigs.profile import RigProfile, RigSource
from twinloop.rigs.rig import DeviceLock

ROOT = Path(__file__).parents[1]
SCENARIO = """\
scenario: wedge
dut: {id: pm, version: "1"}
on_error: %s
retries: %d
devices:
  module: {type: power_module}
steps:
  - set: {signal: module.power, value: 20 W}
  - wait: 10 s
expect:
  - {name: tj, signal: module.temperature, max: 125 degC}
"""


def bench(emulator: PowerModuleEmulator) -> RigSource:
    profile = RigProfile.model_validate({
        "rig": "bench", "clock": "simulated",
        "devices": {"module": {"address": emulator.address, "signals": emulator.signal_map,
                               "safe_state": {"power": 0, "fan": 1}, "timeout": "250 ms"}}})
    return RigSource(profile, "<bench>", None, "0" * 64)


def run_with_hang(on_error: str, retries: int, hang: tuple[float, float]) -> object:
    """Run SCENARIO against an emulator reached by address that stops answering during ``hang``."""
    with PowerModuleEmulator() as emulator:
        def progress(t: float, total: float) -> None:
            if hang[0] <= t < hang[1]:
                emulator.server.wedge()
            else:
                emulator.server.unwedge()
        p = plan(parse_scenario("wedge.yaml", SCENARIO % (on_error, retries)), bench(emulator))
        return execute(p, progress)


def test_a_wedged_device_times_out_at_its_own_timeout_and_the_run_stops_as_error() -> None:
    record = run_with_hang("stop", 0, (3.0, 1e9))
    assert record.outcome == "error"
    assert "within 0.25 s" in record.error and "device 'module'" in record.error
    assert record.samples.t == [0.0, 1.0, 2.0, 3.0]  # the data before the hang is kept
    assert record.calls.ok[-1] is False and "within 0.25 s" in record.calls.error[-1]
    assert record.events[-1].kind == "safe_state"  # clean-up ran (and reported its own failure)


def test_on_error_continue_retries_then_runs_past_the_hang_and_is_still_an_error() -> None:
    record = run_with_hang("continue", 1, (3.0, 6.0))
    kinds = [e.kind for e in record.events]
    assert "retry" in kinds and "transport_error" in kinds
    temps = record.samples.columns["module.temperature"]
    assert len(temps) == 11 and temps[3] is not None  # t=3: the hang started after that sample
    assert all(v is None for v in temps[4:7]) and all(v is not None for v in temps[7:])
    assert record.outcome == "error" and "run past (on_error: continue)" in record.error
    assert record.calls.op.count("read") > 11  # every retry is in the call log


def test_one_lock_per_device_address() -> None:
    first = DeviceLock("module", "modbus+tcp://192.0.2.10:502/unit/1", wait_s=0.0)
    first.acquire()
    try:
        with pytest.raises(TransportInitError, match=f"in use by pid {os.getpid()}"):
            DeviceLock("module", "modbus+tcp://192.0.2.10:502/unit/1", wait_s=0.1).acquire()
        other = DeviceLock("meter", "modbus+tcp://192.0.2.11:502/unit/1", wait_s=0.0)
        other.acquire()
        other.release()
    finally:
        first.release()
    again = DeviceLock("module", "modbus+tcp://192.0.2.10:502/unit/1", wait_s=0.0)
    again.acquire()
    again.release()


@pytest.mark.slow
def test_pytest_collects_matrix_points_skips_hardware_and_writes_measurements_to_junit(
        tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(ROOT / "scenarios", project / "scenarios")
    for extra in (project / "scenarios").glob("*.yaml"):
        if extra.name not in ("power_module_thermal_cycling.yaml",):
            extra.unlink()
    (project / "scenarios" / "bench_only.yaml").write_text(
        (ROOT / "scenarios" / "smoke.yaml").read_text().replace("scenario: smoke", "scenario: bench-only\nhardware: true"))
    (project / "scenarios" / "broken.yaml").write_text("scenario: broken\ndut: {id: x}\n")
    junit = tmp_path / "junit.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "scenarios",
         f"--junitxml={junit}", f"--ledger={tmp_path / 'home'}", "--dut-version=2.0.0-rc1",
         "--ledger-missing=skip"],  # no bench recorded bench_only: the gate skips it, saying why
        cwd=project, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
        env={**os.environ, "TWINLOOP_REQUIRE_ANVIL": "1"})
    assert proc.returncode == 1, proc.stdout[-3000:]  # broken.yaml fails; the rest pass or skip
    assert "needs a physical rig" in proc.stdout and "Traceback" not in proc.stdout
    assert "broken.yaml:2, key 'dut': missing required key 'version'" in proc.stdout
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert set(cases) == {"power_module_thermal_cycling[load=25 W]", "power_module_thermal_cycling[load=30 W]",
                          "bench_only", "broken"}
    props = {p.get("name"): p.get("value")
             for p in cases["power_module_thermal_cycling[load=30 W]"].iter("property")}
    assert props["outcome"] == "pass" and props["bundle_cid"].startswith("Qm") and len(props["run_id"]) == 36
    assert props["dut"] == "pm-600v-half-bridge 2.0.0-rc1"
    assert props["junction_temperature.unit"] == "degC" and props["junction_temperature.limit"] == "<= 125"
    assert float(props["junction_temperature.value"]) > 100
    assert cases["bench_only"].find("skipped") is not None


def test_until_on_a_twin_estimate_and_a_failing_timeout(twinloop_ray: Services) -> None:
    text = (ROOT / "scenarios" / "smoke.yaml").read_text().replace(
        "  - wait: 5 min\n  - fault", "  - until: {twin: module, estimate: temperature, above: 60, timeout: 5 min}\n"
        "  - until: {signal: module.temperature, above: 500 degC, timeout: 30 s, on_timeout: fail}\n  - fault")
    record = execute(plan(parse_scenario("until.yaml", text)))
    untils = [e for e in record.events if e.kind == "until"]
    assert untils[0].data == {"met": True, "step": 1, "duration_s": untils[0].data["duration_s"]}
    assert 0 < untils[0].data["duration_s"] < 300
    assert untils[1].data["failed"] is True and "timed out after 30 s" in untils[1].message
    assert record.outcome == "fail" and not any(e.kind == "fault" for e in record.events)  # stopped there


def test_a_ramp_sample_shows_the_setpoint_in_force_over_the_period_before_it(twinloop_ray: Services) -> None:
    """As after a set step: a twin replays each period with the inputs its closing sample shows."""
    text = """\
scenario: ramp-order
dut: {id: pm, version: "1"}
devices:
  module: {type: power_module}
sample: {every: 1 s}
steps:
  - wait: 2 s
  - ramp: {signal: module.power, from: 0 W, to: 10 W, over: 10 s}
  - wait: 3 s
expect:
  - {name: tj, signal: module.temperature, max: 125 degC}
"""
    record = execute(plan(parse_scenario("ramp.yaml", text)))
    power = dict(zip(record.samples.t, record.samples.columns["module.power"]))
    # the ramp starts at t = 2 s: the value written at t holds over (t, t + 1] and the sample at t + 1 shows it
    assert [power[float(t)] for t in range(2, 14)] == [0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
