"""The whole path: scenario -> emulator over Modbus -> twin on Ray -> judge -> IPFS + chain -> verify."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from twinloop.harness.commit import commit
from twinloop.harness.runner import RunResult, execute
from twinloop.harness.scenario import ScenarioSource, load_scenario, parse_scenario
from twinloop.harness.services import Services
from twinloop.harness.verify import verify
from twinloop.ledger import bundle
from twinloop.ledger.ipfs import import_file
from twinloop.rigs.emulators.power_module import PowerModuleEmulator
from twinloop.rigs.profile import RigProfile, emulated_rig

ROOT = Path(__file__).parents[1]
SMOKE = ROOT / "scenarios" / "smoke.yaml"


def run_emulated(source: ScenarioSource) -> RunResult:
    profile, digest = emulated_rig({d: s.type for d, s in source.scenario.devices.items()})
    return execute(source, profile, digest)


@pytest.fixture(scope="module")
def smoke_run(twinloop_ray: Services, twinloop_ledger: Services) -> tuple[RunResult, object]:
    result = run_emulated(load_scenario(SMOKE))
    return result, commit(result.record, twinloop_ledger)


def test_smoke_passes_end_to_end(smoke_run, twinloop_ledger: Services) -> None:
    result, committed = smoke_run
    assert result.outcome == "pass" and result.error is None
    samples = result.record["samples"]
    assert len(samples["t"]) == 601 and samples["t"][-1] == 600.0
    temps = samples["module.temperature"]
    assert temps[0] < 30 and 60 < temps[299] < 70 and temps[-1] > 100  # fan failure at t=300 s
    assert [e["kind"] for e in result.record["events"]] == ["set", "twin_estimate", "fault"]
    twin = result.twins["module"]["final"]
    assert twin["damage"] == pytest.approx(0.05, abs=0.01)  # the emulator's hidden ageing
    entry = twinloop_ledger.ledger.get(result.run_id)
    assert (entry.bundle_cid, entry.verdict, entry.scenario_hash) == (
        committed.cid, "pass", load_scenario(SMOKE).sha256)
    assert (entry.dut_id, entry.dut_version) == ("pm-600v-half-bridge", "1.0.0")
    assert not list(twinloop_ledger.outbox.glob("*.json"))  # committed, so nothing pending


def test_bundle_is_deterministic(smoke_run, twinloop_ledger: Services) -> None:
    result, committed = smoke_run
    data = twinloop_ledger.ipfs.cat(committed.cid)
    assert bundle.encode(bundle.decode(data)) == data
    assert import_file(bundle.encode(result.record))[0] == committed.cid


def test_verify_accepts_the_untouched_run(smoke_run, twinloop_ledger: Services) -> None:
    result, _ = smoke_run
    v = verify(result.run_id, twinloop_ledger, SMOKE)
    assert v.ok, v.checks
    assert {c.name: c.status for c in v.checks}["re-judged verdicts"] == "ok"


def test_verify_flags_a_changed_scenario_file(smoke_run, twinloop_ledger: Services, tmp_path: Path) -> None:
    result, _ = smoke_run
    edited = tmp_path / "smoke.yaml"
    edited.write_text(SMOKE.read_text().replace("max: 125", "max: 150"))
    v = verify(result.run_id, twinloop_ledger, edited)
    failed = [c for c in v.checks if c.status == "failed"]
    assert not v.ok and [c.name for c in failed] == ["scenario file"]
    assert result.run_id in failed[0].detail and "has changed since the run" in failed[0].detail


def test_one_flipped_byte_fails_verify(twinloop_ray: Services, twinloop_ledger: Services) -> None:
    result = run_emulated(load_scenario(SMOKE))
    committed = commit(result.record, twinloop_ledger)
    store = twinloop_ledger.ipfs.store
    block = store.path(committed.cid)
    data = bytearray(block.read_bytes())
    data[len(data) // 2] ^= 0x01
    block.write_bytes(bytes(data))
    v = verify(result.run_id, twinloop_ledger)
    failed = [c for c in v.checks if c.status == "failed"]
    assert not v.ok and failed[0].name == "bundle integrity"
    assert result.run_id in failed[0].detail and committed.cid in failed[0].detail
    assert "do not hash" in failed[0].detail


def test_a_broken_limit_fails_and_is_recorded_as_fail(twinloop_ray: Services, twinloop_ledger: Services) -> None:
    source = parse_scenario(SMOKE, SMOKE.read_text().replace("max: 125", "max: 80").replace(
        "marginal_max: 115", "marginal_max: 75"))
    result = run_emulated(source)
    assert result.outcome == "fail"
    assert result.verdicts[0].value > 100 and "> 80" in result.verdicts[0].detail
    commit(result.record, twinloop_ledger)
    assert twinloop_ledger.ledger.get(result.run_id).verdict == "fail"
    assert verify(result.run_id, twinloop_ledger, Path("/nonexistent.yaml")).ok


def test_device_lost_mid_run_is_an_error_with_partial_data(twinloop_ray: Services,
                                                           twinloop_ledger: Services) -> None:
    emulator = PowerModuleEmulator().start()
    profile = RigProfile.model_validate({
        "rig": "bench-under-test", "clock": "simulated",
        "devices": {"module": {"address": emulator.address, "signals": emulator.signal_map,
                               "timeout": "300 ms"}}})
    source = load_scenario(SMOKE)

    def pull_the_plug(t: float, total: float) -> None:
        if t == 100.0:
            emulator.stop()

    result = execute(source, profile, "0" * 64, progress=pull_the_plug)
    assert result.outcome == "error"
    assert "device 'module' at modbus+tcp://127.0.0.1" in result.error
    assert len(result.record["samples"]["t"]) == 101  # t = 0..100 s kept
    assert result.record["events"][-1]["kind"] == "error"
    committed = commit(result.record, twinloop_ledger)
    assert twinloop_ledger.ledger.get(result.run_id).verdict == "error"
    assert committed.cid


@pytest.mark.slow
def test_cli_run_then_verify(tmp_path: Path) -> None:
    env_cmd = [sys.executable, "-m", "twinloop.harness.cli"]
    run = subprocess.run([*env_cmd, "run", "scenarios/smoke.yaml", "--home", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "verdict   PASS" in run.stdout
    run_id = re.search(r"run id\s+([0-9a-f-]{36})", run.stdout).group(1)
    assert re.search(r"bundle\s+Qm[1-9A-HJ-NP-Za-km-z]{44}", run.stdout)
    assert re.search(r"tx\s+0x[0-9a-f]{64}", run.stdout)
    check = subprocess.run([*env_cmd, "verify", run_id, "--home", str(tmp_path)], cwd=ROOT,
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "VERIFIED" in check.stdout and "NOT VERIFIED" not in check.stdout
