"""The CLI's new commands and its refusals: schema, report from a bundle, bad units, prompts without a terminal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def twinloop(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "twinloop.harness.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_schema_prints_the_published_schema() -> None:
    out = twinloop("schema")
    assert out.returncode == 0
    assert json.loads(out.stdout) == json.loads((ROOT / "scenario.schema.json").read_text())


def test_report_renders_a_bundle_file(tmp_path: Path) -> None:
    out = twinloop("report", str(ROOT / "tests" / "data" / "run-v2-thermal-cycling.json"),
                   "-o", str(tmp_path / "r.html"), "--home", str(tmp_path / "home"))
    assert out.returncode == 0 and out.stdout.strip().endswith("r.html")
    assert "power-module-thermal-cycling" in (tmp_path / "r.html").read_text()


def test_a_unit_mismatch_exits_2_before_anything_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "scenarios" / "smoke.yaml").read_text().replace("value: 30, unit: W",
                                                                          "value: 30 degC"))
    out = twinloop("run", str(bad), "--home", str(tmp_path / "home"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "bad.yaml:" in out.stderr and "is [temperature], but the signal's unit 'W'" in out.stderr
    assert not (tmp_path / "home" / "outbox").exists()  # nothing recorded


def test_a_prompt_on_a_real_time_rig_without_a_terminal_is_refused(tmp_path: Path) -> None:
    scenario = tmp_path / "prompt.yaml"
    scenario.write_text((ROOT / "scenarios" / "smoke.yaml").read_text().replace(
        "steps:\n", "steps:\n  - prompt: {message: clamp the probe on TP3}\n"))
    rig = tmp_path / "rig.yaml"
    rig.write_text("rig: bench\nclock: real\ndevices:\n  module: {emulator: power_module}\n")
    out = twinloop("run", str(scenario), "--rig", str(rig), "--home", str(tmp_path / "home"))
    assert out.returncode == 2 and "no terminal is attached" in out.stderr
