"""``twinloop ledger sync --batch N``: the outbox in batches, one transaction each, each run exactly once.

Five attested bundles wait in a bench's outbox; ``sync --batch 2`` records
three batches (2+2+1), notes each run's batch in HOME/batches.jsonl so that
``twinloop verify RUN_ID`` finds it without ``--batch``, and a second sync
sends nothing. A real process killed (``os._exit``) after a batch's
transaction and before its clean-up is synced again without recording that
batch twice: by its root (the same runs in run-id order) or by the intent
written before the transaction (when the batch size changed in between),
and a plain ``ledger sync`` (what ``twinloop run`` does after every run)
finishes that batch instead of recording its runs again alone. One killed
after the manifest is on IPFS but before the transaction records each run
once on the next sync, plain or batched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from twinloop.errors import BatchNotFoundError, RunNotFoundError
from twinloop.harness.attestation import attest
from twinloop.harness.cli import main
from twinloop.harness.commit import BATCH_INTENT, BATCH_NOTES, write_atomic
from twinloop.harness.fleet_record import read_bundle
from twinloop.harness.record import RunRecord
from twinloop.harness.services import KEY_ENV, ServiceOptions, Services
from twinloop.ledger.batch import build_manifest
from twinloop.ledger.chain import RunLedgerClient
from twinloop.ledger.ipfs import EmbeddedIpfs, import_file
from twinloop.ledger.dsse import EthereumSigner

BUNDLE = Path(__file__).parent / "data" / "run-v2-thermal-cycling.json"

#: argv: home, chain URL, contract, batch size, "after" | "before" (the first batch's transaction)
DYING_SYNC = """
import os, sys
from pathlib import Path
from twinloop.harness.commit import sync_batched
from twinloop.harness.services import ServiceOptions, Services
from twinloop.ledger import chain

home, url, contract, size, when = sys.argv[1:]
services = Services(ServiceOptions(home=Path(home), chain_url=url, contract=contract))
ledger = services.ledger
send = ledger.record_batch

def dying_record_batch(entries, ipfs, **kw):
    send(entries, ipfs, **kw)
    os._exit(17)  # the batch is on chain; its runs' outbox files and notes are not cleaned up

def dying_send(*args, **kw):
    os._exit(17)  # the manifest is on IPFS and the intent written; no transaction was sent

if when == "after":
    ledger.record_batch = dying_record_batch
else:
    chain.send = dying_send
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


def kill_a_batch_sync(home: Path, ledger: RunLedgerClient, size: int, when: str) -> None:
    """``sync_batched`` in a real process that dies (``os._exit(17)``) just after or before its first transaction."""
    env = {**os.environ, KEY_ENV: ledger.account.key.hex()}
    died = subprocess.run([sys.executable, "-c", DYING_SYNC, str(home), ledger.rpc_url, ledger.address, str(size),
                           when], env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert died.returncode == 17, died.stderr[-2000:]


def times_on_chain(ledger: RunLedgerClient, home: Path, run_ids: list[str], since: int) -> dict[str, int]:
    """How often each run is on chain since block ``since``: its RunRecorded events plus the batches listing it."""
    ipfs = EmbeddedIpfs(home / "ipfs")  # the bench's store holds the manifests
    count = dict.fromkeys(run_ids, 0)
    if since > ledger.block_number():
        return count  # nothing mined since
    for log in ledger._logs([ledger._contract.events.RunRecorded.topic], since, "latest", "counting runs"):
        run_id = ledger._run_entry(log).run_id
        if run_id in count:
            count[run_id] += 1
    for log in ledger._logs([ledger._contract.events.BatchRecorded.topic], since, "latest", "counting batches"):
        batch = ledger.get_batch(bytes(log["topics"][1]))
        for entry in ledger.read_manifest(batch, ipfs).runs:
            if entry.run_id in count:
                count[entry.run_id] += 1
    return count


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
    kill_a_batch_sync(home, live, 2, "after")
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


def test_a_plain_sync_after_a_batch_sync_killed_after_its_transaction_records_no_run_twice(
        twinloop_ledger: Services, tmp_path: Path, where: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """``twinloop run`` syncs the outbox plainly after every run: it must finish the cut-off batch, not re-record it."""
    live, home = twinloop_ledger.ledger, tmp_path / "bench"
    since = live.block_number() + 1
    run_ids = fill_outbox(home, live, 3, 0xDEAD4)
    kill_a_batch_sync(home, live, 2, "after")
    batched = json.loads((home / BATCH_INTENT).read_text())["runs"]
    assert main(["ledger", "sync", *where]) == 0  # no --batch: Pipeline.sync, as after a run
    out = capsys.readouterr().out
    for run_id in run_ids:
        assert f"committed run {run_id}" in out
    assert times_on_chain(live, home, run_ids, since) == dict.fromkeys(run_ids, 1)
    for run_id in batched:  # in the batch, never alone
        with pytest.raises(RunNotFoundError):
            live.get(run_id)
    [alone] = set(run_ids) - set(batched)
    assert live.get(alone).run_id == alone
    assert not list((home / "outbox").glob("*.json")) and not (home / BATCH_INTENT).exists()
    assert sorted(n["run_id"] for n in notes(home)) == sorted(batched)
    assert main(["ledger", "sync", *where]) == 0
    assert "is empty" in capsys.readouterr().out
    for run_id in run_ids:
        assert main(["verify", run_id, "--no-scenario-file", "--require-attestation", *where]) == 0
    assert times_on_chain(live, home, run_ids, since) == dict.fromkeys(run_ids, 1)


@pytest.mark.parametrize("resync", ["plain", "batch"])
def test_a_batch_sync_killed_after_the_manifest_is_on_ipfs_but_before_the_transaction_syncs_each_run_once(
        twinloop_ledger: Services, tmp_path: Path, where: list[str], capsys: pytest.CaptureFixture[str],
        resync: str) -> None:
    live, home = twinloop_ledger.ledger, tmp_path / "bench"
    since = live.block_number() + 1
    run_ids = fill_outbox(home, live, 3, {"plain": 0xDEAD5, "batch": 0xDEAD6}[resync])
    kill_a_batch_sync(home, live, 2, "before")
    intent = json.loads((home / BATCH_INTENT).read_text())
    with pytest.raises(BatchNotFoundError):
        live.get_batch(intent["root"])
    with Services(ServiceOptions(home=home)) as bench:  # the manifest went to the bench's store before it died
        entries = [read_bundle(p.read_bytes()).ledger_entry(bench.ipfs.add(p.read_bytes()))
                   for p in sorted((home / "outbox").glob("*.json"))]
        _, manifest = build_manifest(entries[:2])
        assert bench.ipfs.has(import_file(manifest)[0])
    assert len(list((home / "outbox").glob("*.json"))) == 3
    assert times_on_chain(live, home, run_ids, since) == dict.fromkeys(run_ids, 0)

    assert main(["ledger", "sync", *(["--batch", "2"] if resync == "batch" else []), *where]) == 0
    out = capsys.readouterr().out
    for run_id in run_ids:
        assert f"committed run {run_id}" in out
    assert "already on chain" not in out
    assert times_on_chain(live, home, run_ids, since) == dict.fromkeys(run_ids, 1)
    assert not list((home / "outbox").glob("*.json")) and not (home / BATCH_INTENT).exists()
    assert main(["ledger", "sync", *where]) == 0
    assert "is empty" in capsys.readouterr().out
    for run_id in run_ids:
        assert main(["verify", run_id, "--no-scenario-file", "--require-attestation", *where]) == 0


def test_a_noted_batched_run_verifies_from_its_bundle_and_noted_proof_without_the_manifest(
        twinloop_ledger: Services, tmp_path: Path, where: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    live, home = twinloop_ledger.ledger, tmp_path / "bench"
    run_ids = fill_outbox(home, live, 3, 0xBA7C6)
    assert main(["ledger", "sync", "--batch", "3", *where]) == 0
    capsys.readouterr()
    noted = {n["run_id"]: n for n in notes(home)}
    assert {n["proof"]["tree_size"] for n in noted.values()} == {3} and all(n["bundle_cid"] for n in noted.values())
    manifest_cid = noted[run_ids[0]]["manifest_cid"]
    EmbeddedIpfs(home / "ipfs").store.path(manifest_cid).unlink()  # the manifest is gone from the bench's store

    assert main(["verify", run_ids[0], "--no-scenario-file", "--require-attestation", *where]) == 0
    out = capsys.readouterr().out
    assert "inclusion proof" in out and "batch manifest" not in out and "NOT VERIFIED" not in out
    # the same run through the manifest cannot be checked now
    assert main(["verify", run_ids[0], "--batch", noted[run_ids[0]]["root"], "--no-scenario-file", *where]) != 0
    capsys.readouterr()

    # a note is a hint, never trusted: a changed sibling fails the proof
    lines = []
    for n in notes(home):
        if n["run_id"] == run_ids[1]:
            n["proof"]["path"][0] = "00" * 32
        lines.append(json.dumps(n))
    (home / BATCH_NOTES).write_text("\n".join(lines) + "\n")
    assert main(["verify", run_ids[1], "--no-scenario-file", *where]) == 1
    out = capsys.readouterr().out
    assert "NOT VERIFIED" in out and "inclusion proof" in out


def test_ledger_export_finds_a_batched_run_by_its_note_or_by_batch(
        twinloop_ledger: Services, tmp_path: Path, where: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from twinloop.ledger.car import read_car

    live, home = twinloop_ledger.ledger, tmp_path / "bench"
    run_ids = fill_outbox(home, live, 2, 0xBA7C7)
    assert main(["ledger", "sync", "--batch", "2", *where]) == 0
    capsys.readouterr()
    note = {n["run_id"]: n for n in notes(home)}[run_ids[1]]
    car = tmp_path / "run.car"
    assert main(["ledger", "export", run_ids[1], "-o", str(car), *where]) == 0  # found through HOME/batches.jsonl
    assert read_car(car.read_bytes()).roots == [note["bundle_cid"]]
    (home / BATCH_NOTES).unlink()
    assert main(["ledger", "export", run_ids[1], "-o", str(car), *where]) == 2
    assert "names no batch for it" in capsys.readouterr().err
    for batch in (note["root"], note["manifest_cid"]):
        assert main(["ledger", "export", run_ids[1], "-o", str(car), "--batch", batch, *where]) == 0
        assert read_car(car.read_bytes()).roots == [note["bundle_cid"]]
    assert main(["ledger", "export", str(uuid.uuid4()), "--batch", note["root"], *where]) == 2  # not in that batch
    assert "is not in the batch" in capsys.readouterr().err
