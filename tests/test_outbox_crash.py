"""A bench process that dies mid-commit loses nothing and commits nothing twice.

A real process is killed (``os._exit``, no clean-up) at the two points that
matter: after the bundle is in the outbox and the store but before the chain
transaction, and after the transaction but before the outbox copy is removed.
``twinloop ledger sync`` then finds each run on chain exactly once. A process
killed between a run's record and its maintenance requests (before the first,
or between two) leaves the run in the outbox, and the sync sends each request
the chain does not have yet: each is on chain once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from twinloop.harness.cli import main
from twinloop.harness.pipeline import Pipeline
from twinloop.harness.record import Event, RunRecord
from twinloop.harness.services import KEY_ENV, ServiceOptions, Services

BUNDLE = Path(__file__).parent / "data" / "run-v2-thermal-cycling.json"

#: argv: home, chain URL, contract, record file, "before" | "after" (the transaction)
BENCH = """
import os, sys
from pathlib import Path
from twinloop.harness.commit import commit
from twinloop.harness.record import Event, RunRecord
from twinloop.harness.services import ServiceOptions, Services

home, url, contract, record_file, when = sys.argv[1:]
services = Services(ServiceOptions(home=Path(home), chain_url=url, contract=contract))
ledger = services.ledger
send = ledger.record

def dying_record(entry, **kw):
    if when == "before":
        os._exit(17)  # the bundle is in the outbox and the store; no transaction yet
    tx = send(entry, **kw)
    os._exit(17)  # the run is on chain; the outbox copy is still there

ledger.record = dying_record
commit(RunRecord.from_bytes(Path(record_file).read_bytes()), services)
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_bench_killed_mid_commit_syncs_each_run_exactly_once(
        twinloop_ledger: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    live = twinloop_ledger.ledger
    run_id = {"before": "5e1f0c2a-8d3b-4a6e-9f10-2b3c4d5e6f01", "after": "5e1f0c2a-8d3b-4a6e-9f10-2b3c4d5e6f02"}[when]
    record = RunRecord.from_bytes(BUNDLE.read_bytes()).model_copy(update={"run_id": run_id, "attestation": None})
    record_file = tmp_path / "record.json"
    record_file.write_bytes(record.to_bytes())
    home = tmp_path / "bench"
    env = {**os.environ, KEY_ENV: live.account.key.hex()}
    died = subprocess.run([sys.executable, "-c", BENCH, str(home), live.rpc_url, live.address, str(record_file),
                           when], env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert died.returncode == 17, died.stderr[-2000:]
    assert len(list((home / "outbox").glob("*.json"))) == 1  # kept, whole
    on_chain = [e.run_id for e in live.find_runs(record.scenario.sha256, record.dut.id, record.dut.version)]
    assert on_chain.count(run_id) == (0 if when == "before" else 1)

    monkeypatch.setenv(KEY_ENV, live.account.key.hex())
    where = ["--chain", live.rpc_url, "--contract", live.address, "--home", str(home)]
    assert main(["ledger", "sync", *where]) == 0
    assert f"committed run {run_id}" in capsys.readouterr().out
    assert main(["ledger", "sync", *where]) == 0  # nothing left: nothing sent again
    assert "is empty" in capsys.readouterr().out
    on_chain = [e.run_id for e in live.find_runs(record.scenario.sha256, record.dut.id, record.dut.version)]
    assert on_chain.count(run_id) == 1
    services = Services(ServiceOptions(home=home, chain_url=live.rpc_url, contract=live.address))
    assert Pipeline(services).verify(run_id, no_scenario_file=True, require_attestation=True).ok


#: argv: home, chain URL, contract, record file, how many maintenance requests go out before the process dies
DIES_MID_MAINTENANCE = """
import os, sys
from pathlib import Path
from twinloop.harness.commit import commit
from twinloop.harness.record import Event, RunRecord
from twinloop.harness.services import ServiceOptions, Services

home, url, contract, record_file, sent = sys.argv[1:]
services = Services(ServiceOptions(home=Path(home), chain_url=url, contract=contract))
ledger = services.ledger
send, calls = ledger.request_maintenance, []

def dying_request(*args, **kw):
    if len(calls) == int(sent):
        os._exit(17)  # the run is on chain; this request and any after it are not
    calls.append(send(*args, **kw))
    return calls[-1]

ledger.request_maintenance = dying_request
commit(RunRecord.from_bytes(Path(record_file).read_bytes()), services)
"""


@pytest.mark.parametrize("sent", [0, 1])
def test_a_bench_killed_between_the_record_and_its_maintenance_requests_sends_each_once(
        twinloop_ledger: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sent: int,
        capsys: pytest.CaptureFixture[str]) -> None:
    live = twinloop_ledger.ledger
    run_id = f"5e1f0c2a-8d3b-4a6e-9f10-2b3c4d5e6f1{sent}"
    record = RunRecord.from_bytes(BUNDLE.read_bytes()).model_copy(update={"run_id": run_id, "attestation": None})
    for device, rul in (("module", 9.45e6), ("fan", 2.0e6)):  # two requests: the kill can fall between them
        record.events.append(Event(t=630.0, kind="maintenance_request", device=device, message="RUL below limit",
                                   data={"rul_s": rul, "below_s": 1.296e7, "maintenance": f"replace the {device}"}))
    record_file = tmp_path / "record.json"
    record_file.write_bytes(record.to_bytes())
    home = tmp_path / "bench"
    env = {**os.environ, KEY_ENV: live.account.key.hex()}
    died = subprocess.run([sys.executable, "-c", DIES_MID_MAINTENANCE, str(home), live.rpc_url, live.address,
                           str(record_file), str(sent)], env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert died.returncode == 17, died.stderr[-2000:]
    assert live.get(run_id).run_id == run_id and len(live.maintenance_requests(run_id=run_id)) == sent
    assert len(list((home / "outbox").glob("*.json"))) == 1  # kept until its requests are out

    monkeypatch.setenv(KEY_ENV, live.account.key.hex())
    where = ["--chain", live.rpc_url, "--contract", live.address, "--home", str(home)]
    assert main(["ledger", "sync", *where]) == 0
    assert f"committed run {run_id}" in capsys.readouterr().out
    assert main(["ledger", "sync", *where]) == 0
    assert "is empty" in capsys.readouterr().out
    requests = live.maintenance_requests(run_id=run_id)
    assert sorted((r.device, r.rul_seconds, r.reason) for r in requests) == [
        ("fan", 2_000_000, "replace the fan"), ("module", 9_450_000, "replace the module")]
    on_chain = [e.run_id for e in live.find_runs(record.scenario.sha256, record.dut.id, record.dut.version)]
    assert on_chain.count(run_id) == 1
