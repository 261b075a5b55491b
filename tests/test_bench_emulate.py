"""twinloop emulate serves a profile's emulators to other processes; the transport benchmark's JSON keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from twinloop.rigs.bench import bench_protocol
from twinloop.rigs.registry import emulator_kind, open_transport

ROOT = Path(__file__).parents[1]


def test_emulate_serves_the_profile_to_another_process() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "twinloop.harness.cli", "emulate",
                             str(ROOT / "rigs" / "profiles" / "emulated.yaml"), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        served = json.loads(proc.stdout.readline())["devices"][0]
        assert served["device"] == "module" and served["address"].startswith("modbus+tcp://127.0.0.1:")
        with open_transport("module", served["address"], served["signals"]) as t:
            t.write("power", 30)
            assert t.read(["power", "ambient"]) == {"power": 30.0, "ambient": 25.0}
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 130  # SIGTERM goes through the same clean-up as Ctrl-C


def test_the_benchmark_reports_rates_and_a_ratio_per_protocol(tmp_path: Path) -> None:
    result = bench_protocol("serial", rounds=1, seconds=0.1, folder=tmp_path)
    assert set(result) == {"raw_per_s", "twinloop_per_s", "ratio", "raw_cpu_ms", "twinloop_cpu_ms"}
    assert result["raw_per_s"] > 0 and result["twinloop_per_s"] > 0 and result["ratio"] > 0


def test_can_is_not_served_to_other_processes(tmp_path: Path) -> None:
    rig = tmp_path / "rig.yaml"
    rig.write_text("rig: r\ndevices:\n  module: {emulator: power_module, protocol: can}\n")
    out = subprocess.run([sys.executable, "-m", "twinloop.harness.cli", "emulate", str(rig)], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and "in-process virtual bus" in out.stderr
    assert emulator_kind("power_module", "can").scheme == "can+virtual"
