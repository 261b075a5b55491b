"""Planning: every configuration error is found before anything starts, and names file, line and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from twinloop.errors import ConfigError
from twinloop.harness.plan import plan

ROOT = Path(__file__).parents[1]
SMOKE = ROOT / "scenarios" / "smoke.yaml"
RIG = """\
rig: bench-3
devices:
  module:
    address: modbus+tcp://127.0.0.1:5020/unit/1
    timeout: 250 ms
    safe_state: {power: 0, fan: 1}
    signals:
      temperature: {register: 0, type: int16, scale: 0.01, unit: degC}
      ambient:     {register: 1, type: int16, scale: 0.01, unit: degC}
      power:       {register: 2, type: uint16, scale: 0.1, unit: W, writable: true}
      fan:         {register: 3, type: uint16, unit: "1", writable: true}
"""


def scenario(tmp_path: Path, old: str = "", new: str = "") -> Path:
    text = SMOKE.read_text()
    assert old in text
    path = tmp_path / "scenario.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def rig(tmp_path: Path, old: str = "", new: str = "") -> Path:
    assert old in RIG
    path = tmp_path / "rig.yaml"
    path.write_text(RIG.replace(old, new, 1))
    return path


def test_smoke_plans_on_the_emulated_and_a_bench_rig(tmp_path: Path) -> None:
    emulated = plan(SMOKE)
    assert emulated.clock_kind == "simulated" and emulated.devices["module"].setup.emulator is not None
    assert emulated.devices["module"].setup.safe_state == {"power": 0.0, "fan": 1.0}
    bench = plan(SMOKE, rig(tmp_path))
    assert bench.clock_kind == "real" and bench.devices["module"].setup.address.startswith("modbus+tcp://")
    assert bench.devices["module"].read == ["temperature", "ambient", "power", "fan"]


@pytest.mark.parametrize("old, new, line, key, words", [
    ("model: power_module_thermal", "model: power_modul_thermal", 17, "devices.module.twin.model",
     "unknown twin model 'power_modul_thermal'"),
    ("      level: shadow", "      level: shadow\n      params: {tau: -1}", 19, "devices.module.twin.params",
     "tau=-1.0 s is outside"),
    ("type: power_module", "type: power_modul", 15, "devices.module.type", "unknown device emulator 'power_modul'"),
    ("every: 1 s", "every: 1 s\n  signals: [module.temprature]", 21, "sample.signals[0]",
     "device 'module' has no signal 'temprature'"),
    ("every: 1 s", "every: 1 s\n  signals: [module.temperature]", 21, "sample.signals",
     "the twin of 'module' needs 'module.power'"),
    ("unit: W", "unit: degC", 22, "steps[0].set.value", "is [temperature], but the signal's unit 'W'"),
    ("signal: module.power, value: 30, unit: W", "signal: module.temperature, value: 30", 22, "steps[0].set.signal", "module.temperature is read-only"),
    ("- set: {signal: module.power, value: 30, unit: W}", "- call: {device: module, method: reset}", 22,
     "steps[0].call.method", "device 'module' on rig 'emulated' has no method 'reset'; it declares: none"),
    ("- set: {signal: module.power, value: 30, unit: W}", "- fault: {device: module, kind: latency}", 22,
     "steps[0].fault", "fault 'latency' needs a 'value': a duration such as 50 ms"),
])
def test_scenario_errors_are_found_at_plan(tmp_path: Path, old: str, new: str, line: int, key: str,
                                           words: str) -> None:
    path = scenario(tmp_path, old, new)
    with pytest.raises(ConfigError) as err:
        plan(path)
    assert (err.value.file, err.value.line, err.value.key) == (str(path), line, key)
    assert words in str(err.value)


@pytest.mark.parametrize("old, new, line, key, words", [
    ("address: modbus+tcp://", "address: modbus+tpc://", 4, "devices.module.address", "unknown transport 'modbus+tpc'"),
    ("type: int16, scale: 0.01, unit: degC}", "type: int61, scale: 0.01, unit: degC}", 8,
     "devices.module.signals.temperature.type", "'int16'"),
    ("safe_state: {power: 0, fan: 1}", "safe_state: {power: 0, fna: 1}", 6, "devices.module.safe_state.fna",
     "no such signal"),
    ("safe_state: {power: 0, fan: 1}", "safe_state: {temperature: 0}", 6, "devices.module.safe_state.temperature",
     "read-only"),
    ("  module:", "  modul:", 4, "devices.module", "rig 'bench-3'"),
])
def test_rig_errors_are_found_at_plan(tmp_path: Path, old: str, new: str, line: int, key: str, words: str) -> None:
    path = rig(tmp_path, old, new)
    with pytest.raises(ConfigError) as err:
        plan(SMOKE, path)
    assert words in str(err.value)
    where = (err.value.file, err.value.line, err.value.key)
    expected_file = str(SMOKE) if key == "devices.module" else str(path)
    assert where == (expected_file, line if expected_file == str(path) else 14, key)


def test_emulator_server_options_are_checked_at_plan(tmp_path: Path) -> None:
    path = tmp_path / "rig.yaml"
    path.write_text("rig: emulated\ndevices:\n  module:\n    emulator: power_module\n"
                    "    server: {port: 5020}\n")
    with pytest.raises(ConfigError) as err:
        plan(SMOKE, path)
    assert (err.value.line, err.value.key) == (5, "devices.module.server")
    assert "the modbus+tcp emulator takes no server options" in str(err.value)


def test_emulator_params_are_checked_at_plan(tmp_path: Path) -> None:
    path = tmp_path / "rig.yaml"
    path.write_text("rig: emulated-hot\ndevices:\n  module:\n    emulator: power_module\n"
                    "    params: {initial_damage: 0.1, colour: 3}\n")
    with pytest.raises(ConfigError) as err:
        plan(SMOKE, path)
    assert (err.value.line, err.value.key) == (5, "devices.module.params")
    assert "unknown parameter(s) ['colour']" in str(err.value)


@pytest.mark.parametrize("old, new", [
    ("model: power_module_thermal", "model: banana"),
    ("type: power_module", "type: banana"),
    ("every: 1 s", "every: 1 s\n  signals: [module.banana]"),
])
def test_cli_config_error_exits_2_and_records_nothing(tmp_path: Path, old: str, new: str) -> None:
    path, home = scenario(tmp_path, old, new), tmp_path / "home"
    proc = subprocess.run([sys.executable, "-m", "twinloop.harness.cli", "run", str(path), "--home", str(home)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, cwd=ROOT)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "banana" in proc.stderr and str(path) in proc.stderr and "Traceback" not in proc.stderr
    assert not home.exists()  # no chain, no IPFS store, no outbox: nothing was started or recorded


@pytest.mark.parametrize("make_home, words", [
    (lambda p: (p / "afile").write_text("x") and p / "afile", "is a file, not a directory"),
    (lambda p: (p / "afile").write_text("x") and p / "afile" / "home", "is a file, not a directory"),
])
def test_home_that_is_not_a_directory_is_a_clear_error(tmp_path: Path, make_home, words: str) -> None:
    home = make_home(tmp_path)
    for argv in (["run", str(SMOKE)], ["verify", "00000000-0000-0000-0000-000000000000"]):
        proc = subprocess.run([sys.executable, "-m", "twinloop.harness.cli", *argv, "--home", str(home)],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, cwd=ROOT)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert words in proc.stderr and str(home) in proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
