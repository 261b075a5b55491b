"""``twinloop verify``'s exit codes against the real anvil: a mismatch is 1 with its own message, an open answer 2.

A run that was never recorded, a chain record whose event no longer matches
its slot, a bundle that does not hash to its CID and a look-alike contract are
failed verifications (1). A chain or an IPFS node that cannot be reached, and a
store that does not hold the bundle's bytes, leave the answer open (2), and the
message names which.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from web3 import Web3

from twinloop.harness.cli import main
from twinloop.harness.pipeline import Pipeline
from twinloop.harness.record import RunRecord
from twinloop.harness.services import KEY_ENV, Services
from twinloop.ledger import artifact

BUNDLE = Path(__file__).parent / "data" / "run-v2-thermal-cycling.json"
#: RunLedger's ``runs`` mapping is storage slot 1 (``vyper -f layout ledger/contracts/RunLedger.vy``).
RUNS_SLOT = 1


def fresh_record() -> RunRecord:
    """A real recorded run (thermal cycling) under a new run id, unsigned (commit signs it)."""
    record = RunRecord.from_bytes(BUNDLE.read_bytes())
    return record.model_copy(update={"run_id": str(uuid.uuid4()), "attestation": None})


@pytest.fixture
def services(twinloop_ledger: Services, monkeypatch: pytest.MonkeyPatch) -> Services:
    monkeypatch.delenv(KEY_ENV, raising=False)  # verify only reads
    return twinloop_ledger


def verify_args(services: Services, run_id: str, *extra: str, home: Path | None = None) -> list[str]:
    ledger = services.ledger
    return ["verify", run_id, "--no-scenario-file", "--chain", ledger.rpc_url, "--contract", ledger.address,
            "--home", str(home or services.home), *extra]


def committed(services: Services) -> tuple[str, str]:
    """A fresh run committed by the dev recorder: its run id and bundle CID."""
    c = Pipeline(services).commit(fresh_record())
    return c.run_id, c.cid


def test_a_verified_run_exits_0(services: Services, capsys: pytest.CaptureFixture[str]) -> None:
    run_id, _ = committed(services)
    assert main(verify_args(services, run_id)) == 0
    assert "VERIFIED" in capsys.readouterr().out


def test_a_run_never_recorded_exits_1(services: Services, capsys: pytest.CaptureFixture[str]) -> None:
    run_id = str(uuid.uuid4())
    assert main(verify_args(services, run_id)) == 1
    err = capsys.readouterr().err
    assert "NOT VERIFIED" in err and f"run {run_id} is not recorded on RunLedger {services.ledger.address}" in err


def test_a_flipped_bit_in_the_bundle_exits_1_in_a_real_process(services: Services) -> None:
    run_id, cid = committed(services)
    block = services.ipfs.store.path(cid)
    original = block.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x01
    block.write_bytes(bytes(data))
    try:
        out = subprocess.run([sys.executable, "-m", "twinloop.harness.cli", *verify_args(services, run_id)],
                             capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                             env={**os.environ, "COLUMNS": "400"})  # no wrapping inside the table's cells
    finally:  # put back: the session's ledger is shared with the gate's tests
        block.write_bytes(original)
    assert out.returncode == 1, out.stderr[-2000:]
    [row] = [line for line in out.stdout.splitlines() if "bundle integrity" in line]
    assert "failed" in row and f"IPFS block {cid}" in row and "is corrupted" in row, out.stdout
    assert "NOT VERIFIED" in out.stdout and "Traceback" not in out.stderr


def test_a_chain_event_that_does_not_match_its_slot_exits_1(services: Services,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The run's slot rewritten under the contract (as a forged node would serve it): the event disagrees."""
    run_id, _ = committed(services)
    ledger = services.ledger
    key = uuid.UUID(run_id).bytes.ljust(32, b"\0")
    slot = Web3.keccak(RUNS_SLOT.to_bytes(32, "big") + key)
    w3 = Web3(Web3.HTTPProvider(ledger.rpc_url))
    value = int.from_bytes(w3.eth.get_storage_at(ledger.address, slot), "big")
    assert value == ledger._contract.functions.runs(uuid.UUID(run_id).bytes).call()  # the slot found
    def store(word: int) -> None:
        w3.provider.make_request("anvil_setStorageAt", [ledger.address, slot.to_0x_hex(),  # type: ignore[arg-type]
                                                        "0x" + word.to_bytes(32, "big").hex()])

    store((value & ~0xFF) | 2)  # the verdict byte now says fail
    try:
        code = main(verify_args(services, run_id))
    finally:
        store(value)
    assert code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "NOT VERIFIED" in err and "does not match the details written in the run's slot" in err


def test_a_look_alike_contract_exits_1(services: Services, capsys: pytest.CaptureFixture[str]) -> None:
    chain = services._chain
    assert chain is not None
    compiled = artifact.compile_source(artifact.read_source(artifact.V1_SOURCE))
    w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
    account = chain.account
    tx = w3.eth.contract(abi=compiled["abi"], bytecode=compiled["bytecode"]).constructor().build_transaction(
        {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address, "pending")})
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(
        account.sign_transaction(tx).raw_transaction))
    look_alike = receipt["contractAddress"]
    code = main(["verify", str(uuid.uuid4()), "--no-scenario-file", "--chain", chain.rpc_url,
                 "--contract", look_alike, "--home", str(services.home)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and "NOT VERIFIED" in err
    assert f"the contract at {look_alike}" in err and "runtime code hash" in err


def test_a_chain_that_cannot_be_reached_exits_2_and_names_the_chain(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["verify", str(uuid.uuid4()), "--no-scenario-file", "--chain", "http://127.0.0.1:9",
                 "--contract", "0x" + "11" * 20, "--home", str(tmp_path / "home")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "chain at http://127.0.0.1:9 is unreachable" in err and "NOT VERIFIED" not in err


def test_an_ipfs_node_that_cannot_be_reached_exits_2_and_names_the_store(
        services: Services, capsys: pytest.CaptureFixture[str]) -> None:
    run_id, _ = committed(services)
    assert main(verify_args(services, run_id, "--ipfs", "http://127.0.0.1:9")) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "the IPFS node at http://127.0.0.1:9 cannot be reached" in err and "NOT VERIFIED" not in err


def test_a_bundle_not_in_the_store_exits_2_and_names_the_store(services: Services, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The record is on chain; this home's store lacks its bytes: nothing contradicts the chain, the answer is open."""
    run_id, cid = committed(services)
    elsewhere = tmp_path / "ci-home"
    assert main(verify_args(services, run_id, home=elsewhere)) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"IPFS block {cid} is not in the blockstore at {elsewhere / 'ipfs'}" in err
