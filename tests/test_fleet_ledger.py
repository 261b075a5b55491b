"""A fleet simulation through the pipeline: committed like a run, verified by simulating it again, reported.

Also the command line: ``twinloop simulate`` end to end, a bad fleet file
refused before anything starts, and an interrupted simulation resumed from
its checkpoints with the same outcome.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from twinloop.errors import ConfigError
from twinloop.harness.fleet_record import FleetRecord, read_bundle
from twinloop.harness.fleet_report import render_fleet_html
from twinloop.harness.pipeline import Pipeline
from twinloop.harness.services import ServiceOptions, Services
from twinloop.twins.fleet import FleetProgress
from twinloop.twins.fleet_spec import load_fleet

ROOT = Path(__file__).parents[1]

FLEET = """\
fleet: ledger-pumps
seed: 11
horizon: 200 d
dt: 1 h
shards: 2
checkpoint_every: 20 d
groups:
  - name: pumps
    model: pump_bearing
    units: 3000
    params: {k: 1.2e-8}
    vary: {k: {lognormal: 0.4}, wear: {uniform: [0, 0.3]}}
    profile: {speed: 1480 rpm, load: {cycle: [100, 60], every: 12 h}}
  - name: modules
    model: power_module_thermal
    units: 500
    vary: {k_ref: {lognormal: 0.5}}
    profile: {power: {cycle: [60, 10], every: 2 h}, ambient: 30 degC}
"""


def twinloop(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "twinloop.harness.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def fleet_file(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET)
    return path


@pytest.fixture
def pipeline(twinloop_ray: Services, twinloop_ledger: Services) -> Pipeline:
    return Pipeline(twinloop_ledger)


def test_a_fleet_is_committed_and_verified_by_simulating_it_again(pipeline: Pipeline, fleet_file: Path,
                                                                   tmp_path: Path) -> None:
    record = pipeline.simulate(load_fleet(fleet_file), tmp_path / "checkpoints")
    assert record.units == 3500 and [g.name for g in record.groups] == ["pumps", "modules"]
    assert record.groups[0].failed > 0 and sum(record.groups[0].failures_per_bin) == record.groups[0].failed
    committed = pipeline.commit(record)
    stored = read_bundle(pipeline.services.ipfs.cat(committed.cid))
    assert isinstance(stored, FleetRecord) and stored == record
    entry = pipeline.services.ledger.get(record.run_id)
    assert (entry.scenario_hash, entry.dut_id, entry.verdict) == (record.fleet.sha256, "fleet:ledger-pumps",
                                                                  "pass")
    v = pipeline.verify(record.run_id, fleet_file)
    assert v.ok, v.checks
    assert {c.name: c.status for c in v.checks}["re-simulated"] == "ok"

    fleet_file.write_text(FLEET.replace("seed: 11", "seed: 12"))
    changed = pipeline.verify(record.run_id, fleet_file)
    assert not changed.ok
    assert [c.name for c in changed.checks if c.status == "failed"] == ["fleet file"]


def test_a_forged_outcome_fails_the_re_simulation(pipeline: Pipeline, fleet_file: Path, tmp_path: Path) -> None:
    """An authorised recorder committing numbers the fleet file does not give is caught."""
    record = pipeline.simulate(load_fleet(fleet_file), tmp_path / "checkpoints")
    forged = record.model_copy(update={"run_id": record.run_id[:-4] + "f0f0", "groups": [
        record.groups[0].model_copy(update={"failed": record.groups[0].failed - 100}), *record.groups[1:]]})
    pipeline.commit(forged)
    v = pipeline.verify(forged.run_id, fleet_file)
    failed = {c.name: c.detail for c in v.checks if c.status == "failed"}
    assert list(failed) == ["re-simulated"]
    assert f"group pumps: failed recomputed {record.groups[0].failed}, recorded {forged.groups[0].failed}" \
        in failed["re-simulated"]
    skipped = pipeline.verify(forged.run_id, fleet_file, resimulate=False)
    assert skipped.ok and {c.name: c.status for c in skipped.checks}["re-simulated"] == "skipped"


def test_an_interrupted_simulation_resumes_from_its_checkpoints(pipeline: Pipeline, fleet_file: Path,
                                                                tmp_path: Path) -> None:
    source = load_fleet(fleet_file)
    seen: list[int] = []

    def stop_after_four(p: FleetProgress) -> None:
        seen.append(p.calls_done)
        if len(seen) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipeline.simulate(source, tmp_path / "cut", stop_after_four)
    assert (tmp_path / "cut" / "shard-0000.npz").is_file() and (tmp_path / "cut" / "shard-0001.npz").is_file()
    resumed = pipeline.simulate(source, tmp_path / "cut", resume=True)
    clean = pipeline.simulate(source, tmp_path / "clean")
    assert resumed.groups == clean.groups
    assert resumed.run.twin_steps < clean.run.twin_steps  # it went on; it did not start again


def test_the_fleet_report_shows_every_group_and_where_it_is_committed(pipeline: Pipeline, fleet_file: Path,
                                                                      tmp_path: Path) -> None:
    record = pipeline.simulate(load_fleet(fleet_file), tmp_path / "checkpoints")
    html = render_fleet_html(record, {"cid": "QmTestCid", "tx": "0xabc"})
    for text in ("Fleet ledger-pumps", "pumps", "modules", "power_module_thermal", "QmTestCid", "0xabc",
                 "fraction failed", record.run_id, f"{record.groups[0].failed:,}"):
        assert text in html, text


def test_the_fleet_schema_is_published() -> None:
    out = twinloop("schema", "--fleet")
    assert out.returncode == 0
    assert json.loads(out.stdout) == json.loads((ROOT / "fleet.schema.json").read_text())


def test_a_bad_fleet_file_exits_2_before_anything_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(FLEET.replace("load: {cycle", "lode: {cycle"))
    out = twinloop("simulate", str(bad), "--home", str(tmp_path / "home"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "bad.yaml:" in out.stderr and "'lode' is not an input of pump_bearing" in out.stderr
    assert not (tmp_path / "home").exists()  # nothing started, nothing recorded


@pytest.mark.parametrize("shards", ["0", "-3", "4097", "two"])
def test_a_bad_shard_count_exits_2_before_anything_starts(tmp_path: Path, fleet_file: Path, shards: str) -> None:
    out = twinloop("simulate", str(fleet_file), "--shards", shards, "--home", str(tmp_path / "home"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    why = "expected a whole number of shards" if shards == "two" else "is not a shard count from 1 to 4096"
    assert "argument --shards:" in out.stderr and why in out.stderr, out.stderr
    assert not (tmp_path / "home").exists()


def test_the_pipeline_refuses_a_bad_shard_count(tmp_path: Path, fleet_file: Path) -> None:
    with pytest.raises(ConfigError, match="key 'shards': shards must be a whole number from 1 to 4096, got 0"):
        Pipeline(Services(ServiceOptions(home=tmp_path / "home"))).simulate(load_fleet(fleet_file), tmp_path / "cp",
                                                                            shards=0)


@pytest.mark.slow
def test_twinloop_simulate_commits_reports_and_verifies(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = twinloop("simulate", "scenarios/fleets/plant_year.yaml", "--json", "--home", str(home))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(result) >= {"run_id", "bundle_cid", "tx", "report", "dashboard", "outcome", "run"}
    assert result["dashboard"].startswith("http://127.0.0.1:")
    groups = {g["name"]: g for g in result["outcome"]["groups"]}
    assert set(groups) == {"pumps", "modules"} and result["outcome"]["units"] == 120_000
    assert Path(result["report"]).is_file() and not (home / "fleet-checkpoints" / "plant-year").exists()
    verified = twinloop("verify", result["run_id"], "--home", str(home))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "VERIFIED" in verified.stdout and "re-simulated" in verified.stdout
