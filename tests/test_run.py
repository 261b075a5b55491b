"""The whole path: scenario -> emulator over Modbus -> twin on Ray -> judge -> IPFS + chain -> verify."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from twinloop.harness.cli import main
from twinloop.harness.pipeline import Pipeline, PipelineResult
from twinloop.harness.plan import plan
from twinloop.harness.record import RunRecord
from twinloop.harness.runner import execute
from twinloop.harness.scenario import load_scenario, parse_scenario
from twinloop.harness.services import KEY_ENV, Services
from twinloop.ledger.ipfs import import_file
from twinloop.rigs.emulators.power_module import PowerModuleEmulator
from twinloop.rigs.profile import RigProfile, RigSource

ROOT = Path(__file__).parents[1]
SMOKE = ROOT / "scenarios" / "smoke.yaml"


def bench_rig(emulator: PowerModuleEmulator, timeout: str = "300 ms") -> RigSource:
    """A rig that reaches an already running emulator by address, as a bench reaches hardware."""
    profile = RigProfile.model_validate({
        "rig": "bench-under-test", "clock": "simulated",
        "devices": {"module": {"address": emulator.address, "signals": emulator.signal_map,
                               "safe_state": {"power": 0, "fan": 1}, "timeout": timeout}}})
    return RigSource(profile, "<test rig>", None, "0" * 64)


@pytest.fixture(scope="module")
def smoke_run(twinloop_ray: Services, twinloop_ledger: Services) -> PipelineResult:
    scenario = SMOKE.relative_to(Path.cwd()) if SMOKE.is_relative_to(Path.cwd()) else SMOKE
    return Pipeline(twinloop_ledger).run_scenario(scenario)  # recorded as a relative path, as CI does


def test_smoke_passes_end_to_end(smoke_run: PipelineResult, twinloop_ledger: Services) -> None:
    record, committed = smoke_run.record, smoke_run.committed
    assert record.outcome == "pass" and record.error is None
    samples = record.samples
    assert len(samples.t) == 601 and samples.t[-1] == 600.0 and samples.t_read == samples.t
    temps = samples.columns["module.temperature"]
    assert temps[0] < 30 and 60 < temps[299] < 70 and temps[-1] > 100  # fan failure at t=300 s
    assert [e.kind for e in record.events] == ["set", "wait", "twin_estimate", "fault", "wait", "safe_state"]
    assert record.events[-1].data["values"] == {"power": 0.0, "fan": 1.0}
    twin = record.twins["module"].final
    assert twin["damage"] == pytest.approx(0.05, abs=0.01)  # the emulator's hidden ageing
    entry = twinloop_ledger.ledger.get(record.run_id)
    assert (entry.bundle_cid, entry.verdict, entry.scenario_hash) == (
        committed.cid, "pass", load_scenario(SMOKE).sha256)
    assert (entry.dut_id, entry.dut_version) == ("pm-600v-half-bridge", "1.0.0")
    assert not list(twinloop_ledger.outbox.glob("*.json"))  # committed, so nothing pending
    assert smoke_run.verification.ok


def test_bundle_is_deterministic(smoke_run: PipelineResult, twinloop_ledger: Services) -> None:
    data = twinloop_ledger.ipfs.cat(smoke_run.committed.cid)
    assert RunRecord.from_bytes(data).to_bytes() == data
    assert import_file(smoke_run.record.to_bytes())[0] == smoke_run.committed.cid


def test_verify_accepts_the_untouched_run(smoke_run: PipelineResult, twinloop_ledger: Services) -> None:
    v = Pipeline(twinloop_ledger).verify(smoke_run.record.run_id, SMOKE)
    assert v.ok, v.checks
    assert {c.name: c.status for c in v.checks}["re-judged verdicts"] == "ok"


def test_verify_flags_a_changed_scenario_file(smoke_run: PipelineResult, twinloop_ledger: Services,
                                              tmp_path: Path) -> None:
    run_id = smoke_run.record.run_id
    edited = tmp_path / "smoke.yaml"
    edited.write_text(SMOKE.read_text().replace("max: 125", "max: 150"))
    v = Pipeline(twinloop_ledger).verify(run_id, edited)
    failed = [c for c in v.checks if c.status == "failed"]
    assert not v.ok and [c.name for c in failed] == ["scenario file"]
    assert run_id in failed[0].detail and "has changed since the run" in failed[0].detail


def test_verify_never_passes_on_a_missing_scenario_file(smoke_run: PipelineResult, twinloop_ledger: Services,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline, run_id = Pipeline(twinloop_ledger), smoke_run.record.run_id
    v = pipeline.verify(run_id, tmp_path / "gone.yaml")
    failed = [c for c in v.checks if c.status == "failed"]
    assert not v.ok and [c.name for c in failed] == ["scenario file"]
    assert "not found" in failed[0].detail and "--no-scenario-file" in failed[0].detail
    assert not Path(smoke_run.record.scenario.path).is_absolute()
    monkeypatch.chdir(tmp_path)  # the recorded relative path does not resolve here, and no repo holds it
    assert not pipeline.verify(run_id).ok
    explicit = pipeline.verify(run_id, no_scenario_file=True)
    assert explicit.ok and {c.name: c.status for c in explicit.checks}["scenario file"] == "skipped"


def test_verify_finds_the_scenario_at_the_repository_root(smoke_run: PipelineResult, twinloop_ledger: Services,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT / "tests")
    v = Pipeline(twinloop_ledger).verify(smoke_run.record.run_id)
    assert v.ok, v.checks


def test_one_flipped_byte_fails_verify(smoke_run: PipelineResult, twinloop_ledger: Services) -> None:
    result = Pipeline(twinloop_ledger).run_scenario(SMOKE)
    block = twinloop_ledger.ipfs.store.path(result.committed.cid)
    original = block.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x01
    block.write_bytes(bytes(data))
    try:
        v = Pipeline(twinloop_ledger).verify(result.record.run_id, SMOKE)
    finally:  # put back: the session's ledger is shared, and a tampered smoke run fails every later gate on smoke
        block.write_bytes(original)
    failed = [c for c in v.checks if c.status == "failed"]
    assert not v.ok and failed[0].name == "bundle integrity"
    assert result.record.run_id in failed[0].detail and result.committed.cid in failed[0].detail
    assert "do not hash" in failed[0].detail


def test_a_broken_limit_fails_and_is_recorded_as_fail(twinloop_ray: Services, twinloop_ledger: Services) -> None:
    source = parse_scenario(SMOKE, SMOKE.read_text().replace("max: 125", "max: 80").replace(
        "marginal_max: 115", "marginal_max: 75"))
    pipeline = Pipeline(twinloop_ledger)
    record = pipeline.run(pipeline.plan(source))
    assert record.outcome == "fail"
    assert record.verdicts[0].value > 100 and "> 80" in record.verdicts[0].detail
    pipeline.commit(record)
    assert twinloop_ledger.ledger.get(record.run_id).verdict == "fail"
    assert pipeline.verify(record.run_id, no_scenario_file=True).ok


def test_device_lost_mid_run_is_an_error_with_partial_data(twinloop_ray: Services,
                                                           twinloop_ledger: Services) -> None:
    emulator = PowerModuleEmulator().start()

    def pull_the_plug(t: float, total: float) -> None:
        if t == 100.0:
            emulator.stop()

    record = execute(plan(SMOKE, bench_rig(emulator)), progress=pull_the_plug)
    assert record.outcome == "error"
    assert "device 'module' at modbus+tcp://127.0.0.1" in record.error
    assert len(record.samples.t) == 101  # t = 0..100 s kept
    assert [e.kind for e in record.events][-2:] == ["error", "safe_state"]
    assert record.events[-1].note == "failed"  # the device is gone, and the record says so
    committed = Pipeline(twinloop_ledger).commit(record)
    assert twinloop_ledger.ledger.get(record.run_id).verdict == "error"
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
    tx = re.search(r"tx\s+(0x[0-9a-f]{64})", run.stdout).group(1)
    assert re.search(rf"report\s+{re.escape(str(tmp_path / 'reports' / run_id))}\.html", run.stdout)
    report = subprocess.run([*env_cmd, "report", run_id, "--home", str(tmp_path), "-o", str(tmp_path / "r.html")],
                            cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert report.returncode == 0, report.stdout + report.stderr
    assert tx in (tmp_path / "r.html").read_text()  # found again from the chain's RunRecorded log
    check = subprocess.run([*env_cmd, "verify", run_id, "--home", str(tmp_path)], cwd=ROOT,
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "VERIFIED" in check.stdout and "NOT VERIFIED" not in check.stdout


def test_verify_by_scenario_and_dut_version_answers_as_the_ci_gate(
        smoke_run: PipelineResult, twinloop_ledger: Services, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``twinloop verify --scenario S [--dut-version V] [--require-baseline]``, and the ledger commands a reviewer uses."""
    ledger = twinloop_ledger.ledger
    where = ["--chain", ledger.rpc_url, "--contract", ledger.address, "--home", str(twinloop_ledger.home)]
    monkeypatch.delenv(KEY_ENV, raising=False)  # reading needs no key
    assert main(["verify", "--scenario", str(SMOKE), *where]) == 0
    assert "VERIFIED smoke" in capsys.readouterr().out
    assert main(["verify", "--scenario", str(SMOKE), "--dut-version", "9.9", *where]) == 1
    assert "NOT VERIFIED smoke (no-run): no run recorded" in capsys.readouterr().out
    assert main(["ledger", "grant", "reviewer", ledger.account.address, *where]) == 2  # no key: read only
    assert "only reads RunLedger" in capsys.readouterr().err

    monkeypatch.setenv(KEY_ENV, ledger.account.key.hex())
    reviewer = Account.create()
    assert main(["ledger", "grant", "reviewer", reviewer.address, *where]) == 0
    assert main(["ledger", "accept-baseline", smoke_run.record.run_id, *where]) == 2  # a recorder is no reviewer
    assert "is not a reviewer" in capsys.readouterr().err
    monkeypatch.delenv(KEY_ENV)
    assert main(["verify", "--scenario", str(SMOKE), "--require-baseline", *where]) == 1
    assert "(no-baseline)" in capsys.readouterr().out
    twinloop_ledger._chain.fund(reviewer.address)
    monkeypatch.setenv(KEY_ENV, reviewer.key.hex())
    assert main(["ledger", "accept-baseline", smoke_run.record.run_id, *where]) == 0
    assert main(["verify", "--scenario", str(SMOKE), "--require-baseline", *where]) == 0
    assert f"VERIFIED smoke: run {smoke_run.record.run_id}" in capsys.readouterr().out
