"""Every way out of a run goes through the rig's safe state, and the record says so."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from twinloop.harness.plan import plan
from twinloop.harness.runner import execute
from twinloop.rigs.emulators.power_module import PowerModuleEmulator
from twinloop.rigs.profile import RigProfile, RigSource

ROOT = Path(__file__).parents[1]
SCENARIO = """\
scenario: safe-state-check
dut: {id: pm, version: "1"}
devices:
  module: {type: power_module}
sample: {every: 1 s}
steps:
  - set: {signal: module.power, value: 40, unit: W}
  - fault: {signal: module.fan, value: 0, note: fan stops}
  - wait: WAIT
expect:
  - {name: tj, signal: module.temperature, unit: degC, max: MAX}
"""


@pytest.fixture()
def bench() -> tuple[PowerModuleEmulator, RigSource]:
    emulator = PowerModuleEmulator().start()
    profile = RigProfile.model_validate({"rig": "bench", "clock": "simulated", "devices": {"module": {
        "address": emulator.address, "signals": emulator.signal_map, "safe_state": {"power": 0, "fan": 1}}}})
    yield emulator, RigSource(profile, "bench.yaml", None, "0" * 64)
    emulator.stop()


def scenario(tmp_path: Path, wait: str = "60 s", limit: str = "150") -> Path:
    path = tmp_path / "safe.yaml"
    path.write_text(SCENARIO.replace("WAIT", wait).replace("MAX", limit))
    return path


def safe_state_events(record) -> list:
    return [e for e in record.events if e.kind == "safe_state"]


@pytest.mark.parametrize("limit, outcome", [("150", "pass"), ("20", "fail")])
def test_safe_state_after_pass_and_fail(bench, tmp_path: Path, limit: str, outcome: str) -> None:
    emulator, rig = bench
    record = execute(plan(scenario(tmp_path, limit=limit), rig))
    assert record.outcome == outcome
    [event] = safe_state_events(record)
    assert (event.device, event.note, event.data["values"]) == ("module", "applied", {"power": 0.0, "fan": 1.0})
    assert (emulator.values["power"], emulator.values["fan"]) == (0.0, 1.0)


def test_safe_state_after_ctrl_c_keeps_the_partial_run(bench, tmp_path: Path) -> None:
    emulator, rig = bench

    def operator_presses_ctrl_c(t: float, total: float) -> None:
        if t == 20.0:
            raise KeyboardInterrupt

    record = execute(plan(scenario(tmp_path), rig), progress=operator_presses_ctrl_c)
    assert record.outcome == "error" and "interrupted by SIGINT" in record.error
    assert len(record.samples.t) == 21
    assert [e.kind for e in record.events][-2:] == ["interrupted", "safe_state"]
    assert (emulator.values["power"], emulator.values["fan"]) == (0.0, 1.0)


def test_a_failing_safe_state_makes_the_run_an_error(bench, tmp_path: Path) -> None:
    emulator, _ = bench
    signals = dict(emulator.signal_map, heater={"register": 40, "type": "uint16", "unit": "W", "writable": True})
    profile = RigProfile.model_validate({"rig": "bench", "clock": "simulated", "devices": {"module": {
        "address": emulator.address, "signals": signals, "safe_state": {"power": 0, "heater": 0}}}})
    path = scenario(tmp_path, wait="5 s")
    path.write_text(path.read_text().replace(
        "sample: {every: 1 s}", "sample: {every: 1 s, signals: [module.temperature, module.power]}"))
    record = execute(plan(path, RigSource(profile, "bench.yaml", None, "0" * 64)))
    assert record.outcome == "error" and "safe state of device 'module' failed" in record.error
    [event] = safe_state_events(record)
    assert event.note == "failed" and "heater" in event.message
    assert len(record.samples.t) == 6 and record.verdicts[0].outcome == "pass"  # the data itself is kept


@pytest.mark.slow
def test_sigterm_stops_a_real_time_run_through_the_safe_state(tmp_path: Path) -> None:
    rig = tmp_path / "realtime.yaml"
    rig.write_text("rig: emulated-real-time\nclock: real\ndevices:\n  module: {emulator: power_module}\n")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "twinloop.harness.cli", "run", str(scenario(tmp_path, "1 h")),
                             "--rig", str(rig), "--home", str(tmp_path / "home")], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("running"):
                break
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        out = "".join(lines) + proc.stdout.read()
        assert proc.wait(timeout=60) == 130, out
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "interrupted by SIGTERM" in out and "verdict   ERROR" in out
    assert re.search(r"safe_state\s+│\s*module\s+│\s*applied: power=0, fan=1", out), out
    assert re.search(r"tx\s+0x[0-9a-f]{64}", out)  # the partial run is committed, not lost
