"""Scenario and rig-profile loading: valid files load, bad ones name file, line and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from twinloop.harness.scenario import load_scenario
from twinloop.rigs.profile import load_rig
from twinloop.errors import ConfigError

SMOKE = Path(__file__).parents[1] / "scenarios" / "smoke.yaml"


def write(tmp_path: Path, text: str, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def broken(tmp_path: Path, old: str, new: str) -> Path:
    text = SMOKE.read_text()
    assert old in text
    return write(tmp_path, text.replace(old, new, 1))


def test_smoke_loads_with_content_hash() -> None:
    source = load_scenario(SMOKE)
    assert source.scenario.scenario == "smoke"
    assert source.scenario.duration() == 600.0
    assert len(source.sha256) == 64
    assert load_scenario(SMOKE).sha256 == source.sha256


@pytest.mark.parametrize("old, new, line, key, words", [
    ("every: 1 s", "every: 1 s\n  evry: 2", 21, "sample.evry", "unknown key 'evry'"),
    ("max: 125", "max: [1", 31, None, "YAML syntax error"),
    ("  - wait: 5 min\n  - fault", "  - wiat: 5 min\n  - fault", 23, "steps[1]", "'wiat' is not one of"),
    ("module.fan", "modul.fan", 24, "steps[2].fault.signal", "unknown device 'modul'"),
    ("wait: 5 min", "wait: 5 parsecs", 23, "steps[1].wait", "expected a duration"),
    ("value: 30", "value: hot", 22, "steps[0].set.value", "cannot read 'hot' as a quantity"),
    ("    max: 125\n", "", 27, "expect[0]", "needs 'max' or 'min'"),
])
def test_errors_name_file_line_and_key(tmp_path: Path, old: str, new: str, line: int,
                                       key: str | None, words: str) -> None:
    path = broken(tmp_path, old, new)
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    assert err.value.file == str(path)
    assert err.value.line == line
    assert err.value.key == key
    assert words in str(err.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_scenario(tmp_path / "nope.yaml")


def test_rig_profile_needs_address_or_emulator(tmp_path: Path) -> None:
    path = write(tmp_path, "rig: bench-3\ndevices:\n  module:\n    timeout: 250 ms\n", "rig.yaml")
    with pytest.raises(ConfigError) as err:
        load_rig(path)
    assert err.value.line == 3 and err.value.key == "devices.module"
    assert "exactly one of 'address'" in str(err.value)


def test_rig_profile_loads(tmp_path: Path) -> None:
    path = write(tmp_path, "rig: bench-3\ndevices:\n  module:\n    address: modbus+tcp://127.0.0.1:5020/unit/1\n"
                 "    timeout: 250 ms\n    signals:\n      temperature: {register: 0, unit: degC, scale: 0.01}\n",
                 "rig.yaml")
    rig = load_rig(path)
    assert rig.profile.devices["module"].timeout == 0.25
    assert rig.profile.clock_kind == "real" and len(rig.sha256) == 64


@pytest.mark.parametrize("old, new, words", [
    ("every: 1 s", "every: 1 s\n  evry: 2", "key 'sample.evry': unknown key 'evry'"),
    ("max: 125", "max: [1", "YAML syntax error"),
])
def test_cli_reports_config_errors_without_traceback(tmp_path: Path, old: str, new: str, words: str) -> None:
    path = broken(tmp_path, old, new)
    proc = subprocess.run([sys.executable, "-m", "twinloop.harness.cli", "run", str(path), "--home", str(tmp_path)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 2
    assert words in proc.stderr and str(path) in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("old, new, line, key", [
    ("every: 1 s", "every: 1 s\n  every: 2 s", 21, "sample.every"),
    ("scenario: smoke", "scenario: smoke\nscenario: smoke2", 6, "scenario"),
    ("{signal: module.power, value: 30, unit: W}", "{signal: module.power, value: 30, value: 40, unit: W}",
     22, "steps[0].set.value"),
])
def test_duplicate_keys_are_refused(tmp_path: Path, old: str, new: str, line: int, key: str) -> None:
    path = broken(tmp_path, old, new)
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    assert (err.value.file, err.value.line, err.value.key) == (str(path), line, key)
    assert f"duplicate key '{key.rsplit('.', 1)[-1]}'" in str(err.value) and "first at line" in str(err.value)


def test_duplicate_keys_in_a_rig_profile_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "rig: bench-3\ndevices:\n  module:\n    address: modbus+tcp://127.0.0.1:5020/unit/1\n"
                 "    signals:\n      temperature: {register: 0, unit: degC}\n"
                 "      temperature: {register: 1, unit: degC}\n", "rig.yaml")
    with pytest.raises(ConfigError) as err:
        load_rig(path)
    assert (err.value.line, err.value.key) == (7, "devices.module.signals.temperature")
    assert "duplicate key 'temperature' (first at line 6)" in str(err.value)


@pytest.mark.parametrize("old, new, key, words", [
    ("every: 1 s", "every: 0 s", "sample.every", "greater than 0"),
    ("wait: 5 min", "wait: 1e12 s", "sample.every", "1,000,000,000,301 samples"),
    ("wait: 5 min", "wait: inf s", "steps[1].wait", "cannot read 'inf s'"),
    ("wait: 5 min", "wait: 8 d", "steps[1]", "the limit is 604800 s"),
])
def test_runs_that_would_never_end_are_refused_at_load(tmp_path: Path, old: str, new: str, key: str,
                                                       words: str) -> None:
    path = broken(tmp_path, old, new)
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    assert err.value.key == key and words in str(err.value)


def test_sample_count_uses_integer_ticks_and_limits_are_an_opt_in(tmp_path: Path) -> None:
    day = SMOKE.read_text().replace("every: 1 s", "every: 100 ms").replace(
        "  - wait: 5 min\n  - fault", "  - wait: 24 h\n  - fault").replace("  - wait: 5 min\n", "")
    with pytest.raises(ConfigError, match="864,001 samples"):
        load_scenario(write(tmp_path, day + "limits: {max_samples: 864000}\n"))
    allowed = load_scenario(write(tmp_path, day + "limits: {max_samples: 864001}\n", "ok.yaml"))
    assert allowed.scenario.sample_count() == 864_001  # never 863,999 from float accumulation
