"""twinloop emulate serves a profile's emulators to other processes; the transport benchmark's JSON keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from twinloop.rigs.bench import bench_protocol
from twinloop.rigs.registry import open_transport

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
    for protocol in ("serial", "can"):
        result = bench_protocol(protocol, rounds=1, seconds=0.1, folder=tmp_path)
        assert set(result) == {"raw_per_s", "twinloop_per_s", "ratio", "raw_cpu_ms", "twinloop_cpu_ms"}
        assert result["raw_per_s"] > 0 and result["twinloop_per_s"] > 0 and result["ratio"] > 0
