"""RunLedger on a real anvil: recording, roles, write-once ids and restarts."""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from twinloop.ledger.anvil import AnvilNode, find_anvil
from twinloop.ledger.chain import LedgerEntry, RunLedgerClient, dut_key
from twinloop.ledger.embedded import EmbeddedChain
from twinloop.errors import (
    LedgerError,
    LedgerUnauthorisedError,
    LedgerUnavailableError,
    RunAlreadyRecordedError,
    RunNotFoundError,
)

try:
    find_anvil()
except LedgerUnavailableError as exc:
    pytest.skip(f"anvil is not installed: {exc}", allow_module_level=True)


def _entry(**overrides: str) -> LedgerEntry:
    fields = {
        "run_id": str(uuid.uuid4()),
        "scenario_hash": "5e" * 32,
        "dut_id": "pump-ctrl",
        "dut_version": "2.4.1",
        "bundle_cid": "QmRN6wdp1S2A5EtjW9A3M1vKSBuQQGcgvuhoMUoEz4iiT5",  # CIDv0: the chain keeps its digest
        "verdict": "pass",
    }
    fields.update(overrides)
    return LedgerEntry(**fields)


def _as_sent(entry: LedgerEntry) -> LedgerEntry:
    """The fields a recorder sends, without those the chain fills in when a run is read back."""
    return LedgerEntry(entry.run_id, entry.scenario_hash, entry.dut_id, entry.dut_version,
                       entry.bundle_cid, entry.verdict)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("twinloop-home")


@pytest.fixture(scope="module")
def chain(home: Path) -> Iterator[EmbeddedChain]:
    with EmbeddedChain(home) as embedded:
        yield embedded


def _outsider(chain: EmbeddedChain) -> RunLedgerClient:
    """A client for a fresh, funded account that holds no role."""
    account = Account.create()
    chain.fund(account.address)
    return RunLedgerClient(chain.rpc_url, chain.client.address, account)


def test_record_then_get_round_trips(chain: EmbeddedChain) -> None:
    entry = _entry(verdict="fail")
    tx_hash = chain.client.record(entry)
    assert re.fullmatch(r"0x[0-9a-f]{64}", tx_hash)
    got = chain.client.get(entry.run_id)
    assert got.recorder == chain.account.address
    assert got.timestamp > 0
    assert _as_sent(got) == entry
    assert (got.tx_hash, got.tx_status) == (tx_hash, 1) and got.block_number > 0


def test_event_indexes_scenario_and_dut_version(chain: EmbeddedChain) -> None:
    entry = _entry()
    tx_hash = chain.client.record(entry)
    receipt = Web3(Web3.HTTPProvider(chain.rpc_url)).eth.get_transaction_receipt(tx_hash)
    topics = [t.to_0x_hex() for t in receipt["logs"][0]["topics"]]
    assert topics[1] == "0x" + uuid.UUID(entry.run_id).hex + "0" * 32
    assert topics[2] == "0x" + entry.scenario_hash
    assert topics[3] == dut_key(entry.dut_id, entry.dut_version)


def test_run_id_is_written_once(chain: EmbeddedChain) -> None:
    entry = _entry()
    chain.client.record(entry)
    with pytest.raises(RunAlreadyRecordedError, match=entry.run_id):
        chain.client.record(_entry(run_id=entry.run_id, verdict="error"))
    assert chain.client.get(entry.run_id).verdict == "pass"


def test_recorder_role_is_required_granted_and_revoked(chain: EmbeddedChain) -> None:
    outsider = _outsider(chain)
    address = outsider.account.address
    with pytest.raises(LedgerUnauthorisedError, match=address):
        outsider.record(_entry())
    assert not chain.client.is_recorder(address)

    chain.client.grant_recorder(address)
    assert chain.client.is_recorder(address)
    entry = _entry()
    outsider.record(entry)
    assert chain.client.get(entry.run_id).recorder == address

    chain.client.revoke_recorder(address)
    with pytest.raises(LedgerUnauthorisedError, match=address):
        outsider.record(_entry())


def test_only_admin_grants(chain: EmbeddedChain) -> None:
    outsider = _outsider(chain)
    with pytest.raises(LedgerUnauthorisedError, match="admin"):
        outsider.grant_recorder(outsider.account.address)


def test_invalid_entries_are_refused_before_sending(chain: EmbeddedChain) -> None:
    with pytest.raises(LedgerError, match="verdict"):
        chain.client.record(_entry(verdict="maybe"))
    with pytest.raises(LedgerError, match="scenario hash"):
        chain.client.record(_entry(scenario_hash="abc"))
    with pytest.raises(LedgerError, match="dut_id"):
        chain.client.record(_entry(dut_id="x" * 65))
    with pytest.raises(LedgerError, match="not a UUID"):
        chain.client.get("run-1")


def test_unknown_run_is_not_found(chain: EmbeddedChain) -> None:
    run_id = str(uuid.uuid4())
    with pytest.raises(RunNotFoundError, match=run_id):
        chain.client.get(run_id)


def test_records_survive_restart(chain: EmbeddedChain, home: Path) -> None:
    entry = _entry()
    chain.client.record(entry)
    address = chain.client.address
    chain.stop()
    try:
        with EmbeddedChain(home) as restarted:
            assert restarted.client.address == address
            got = restarted.client.get(entry.run_id)
    finally:
        chain.start()
    assert _as_sent(got) == entry and got.recorder == chain.account.address
    assert chain.client.get(entry.run_id) == got


def test_second_anvil_on_same_state_is_refused(chain: EmbeddedChain) -> None:
    with pytest.raises(LedgerUnavailableError, match="in use"):
        AnvilNode(chain.state_path).start()


def test_no_contract_at_address(chain: EmbeddedChain) -> None:
    with pytest.raises(LedgerError, match="no RunLedger contract"):
        RunLedgerClient(chain.rpc_url, chain.account.address, chain.account)


def test_unreachable_rpc_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(LedgerUnavailableError, match=re.escape(url)):
        RunLedgerClient(url, "0x" + "11" * 20, Account.create())
