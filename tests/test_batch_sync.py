"""``twinloop ledger sync --batch N``: the outbox in batches, one transaction each, each run exactly once.

Five attested bundles wait in a bench's outbox; ``sync --batch 2`` records
three batches (2+2+1), notes each run's batch in HOME/batches.jsonl so that
``twinloop verify RUN_ID`` finds it without ``--batch``, and a second sync
sends nothing. A real process killed (``os._exit``) after a batch's
transaction and before its clean-up is synced again without recording that
batch twice: by its root (the same runs in run-id order) or by the intent
written before the transaction (when the batch size changed in between).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from twinloop.harness.attestation import attest
from twinloop.harness.cli import main
from twinloop.harness.commit import BATCH_INTENT, BATCH_NOTES, write_atomic
from twinloop.harness.record import RunRecord
from twinloop.harness.services import KEY_ENV, Services
from twinloop.ledger.chain import RunLedgerClient
from twinloop.ledger.dsse import EthereumSigner

BUNDLE = Path(__file__).parent / "data" / "run-v2-thermal-cycling.json"

#: argv: home, chain URL, contract, batch size; dies right after the first batch's transaction
DYING_SYNC = """
import os, sys
from pathlib import Path
from twinloop.harness.commit import sync_batched
from twinloop.harness.services import ServiceOptions, Services

home, url, contract, size = sys.argv[1:]
services = Services(ServiceOptions(home=Path(home), chain_url=url, contract=contract))
ledger = services.ledger
send = ledger.record_batch

def dying_record_batch(entries, ipfs, **kw):
    send(entries, ipfs, **kw)
    os._exit(17)  # the batch is on chain; its runs' outbox files and notes are not cleaned up

ledger.record_batch = dying_record_batch
sync_batched(services, int(size))
"""


def fresh_record(run_id: str) -> RunRecord:
    """A real recorded run (thermal cycling), under a new run id, unsigned."""
    record = RunRecord.from_bytes(BUNDLE.read_bytes())
    return record.model_copy(update={"run_id": run_id, "attestation": None})


def fill_outbox(home: Path, ledger: RunLedgerClient, n: int, tag: int) -> list[str]:
    """``n`` bundles signed by the recorder, waiting in HOME/outbox as a bench with the chain down leaves them."""
    signer = EthereumSigner(ledger.account)
    run_ids = []
    for i in range(n):
        record = attest(fresh_record(str(uuid.UUID(int=(tag << 32) + i))), signer)
        write_atomic(home / "outbox" / f"{record.run_id}.json", record.to_bytes())
        run_ids.append(record.run_id)
    return run_ids


def batch_logs(ledger: RunLedgerClient, root: str) -> int:
    """How many BatchRecorded events name this root."""
    return len(ledger._logs([ledger._contract.events.BatchRecorded.topic, root], 0, "latest", "counting batches"))


def notes(home: Path) -> list[dict]:
    return [json.loads(line) for line in (home / BATCH_NOTES).read_text().splitlines()]


@pytest.fixture
def where(twinloop_ledger: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    live = twinloop_ledger.ledger
    monkeypatch.setenv(KEY_ENV, live.account.key.hex())
    return ["--chain", live.rpc_url, "--contract", live.address, "--home", str(tmp_path / "bench")]


def test_sync_batch_2_records_five_runs_in_three_batches_each_verifies_and_a_second_sync_sends_nothing(
        twinloop_ledger: Services, tmp_path: Path, where: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    live, home = twinloop_ledger.ledger, tmp_path / "bench"
    run_ids = fill_outbox(home, live, 5, 0xBA7C5)
    assert main(["ledger", "sync", "--batch", "2", *where]) == 0
    out = capsys.readouterr().out
    assert out.count(" recorded: manifest ") == 3 and "already on chain" not in out
    assert not list((home / "outbox").glob("*.json")) and not (home / BATCH_INTENT).exists()
    noted = notes(home)
    assert sorted(n["run_id"] for n in noted) == sorted(run_ids)
    roots = list(dict.fromkeys(n["root"] for n in noted))
    assert [live.get_batch(r).size for r in roots] == [2, 2, 1]
    assert [batch_logs(live, r) for r in roots] == [1, 1, 1]
    for run_id in run_ids:
        assert main(["verify", run_id, "--no-scenario-file", "--require-attestation", *where]) == 0
        out = capsys.readouterr().out
        assert "verifying it as batched" in out and "NOT VERIFIED" not in out

    assert main(["ledger", "sync", "--batch", "2", *where]) == 0
    assert "is empty" in capsys.readouterr().out
    assert [batch_logs(live, r) for r in roots] == [1, 1, 1] and len(notes(home)) == 5
    assert main(["verify", str(uuid.uuid4()), "--no-scenario-file", *where]) == 1  # neither alone nor noted: not recorded


@pytest.mark.parametrize("resync", ["same-size", "same-size-no-intent", "other-size"])
def test_a_sync_killed_after_the_batch_transaction_does_not_record_it_twice(
        twinloop_ledger: Services, tmp_path: Path, where: list[str], capsys: pytest.CaptureFixture[str],
        resync: str) -> None:
    live, home = twinloop_ledger.ledger, tmp_path / "bench"
    tag = {"same-size": 0xDEAD1, "same-size-no-intent": 0xDEAD2, "other-size": 0xDEAD3}[resync]
    run_ids = fill_outbox(home, live, 3, tag)
    env = {**os.environ, KEY_ENV: live.account.key.hex()}
    died = subprocess.run([sys.executable, "-c", DYING_SYNC, str(home), live.rpc_url, live.address, "2"],
                          env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert died.returncode == 17, died.stderr[-2000:]
    assert len(list((home / "outbox").glob("*.json"))) == 3 and not (home / BATCH_NOTES).exists()
    intent = json.loads((home / BATCH_INTENT).read_text())
    assert intent["runs"] == sorted(run_ids)[:2]
    first = intent["root"]
    assert live.get_batch(first).size == 2 and batch_logs(live, first) == 1
    if resync == "same-size-no-intent":
        (home / BATCH_INTENT).unlink()  # as if cut off before the intent: the root alone must tell

    size = "3" if resync == "other-size" else "2"
    assert main(["ledger", "sync", "--batch", size, *where]) == 0
    out = capsys.readouterr().out
    assert f"batch {first} of 2 runs was already on chain" in out and out.count(" recorded: manifest ") == 1
    for run_id in run_ids:
        assert f"committed run {run_id}" in out
    assert batch_logs(live, first) == 1  # not recorded again
    assert not list((home / "outbox").glob("*.json")) and not (home / BATCH_INTENT).exists()
    noted = {n["run_id"]: n["root"] for n in notes(home)}
    assert sorted(noted) == sorted(run_ids)
    assert {noted[r] for r in intent["runs"]} == {first}
    last = noted[sorted(run_ids)[2]]
    assert last != first and live.get_batch(last).size == 1 and batch_logs(live, last) == 1
    assert main(["ledger", "sync", "--batch", size, *where]) == 0
    assert "is empty" in capsys.readouterr().out
    for run_id in run_ids:
        assert main(["verify", run_id, "--no-scenario-file", "--require-attestation", *where]) == 0
        assert "verifying it as batched" in capsys.readouterr().out
