"""RunLedger v2 on a real anvil: one slot per run, roles over time, baselines, maintenance, the artifact."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract.contract import ContractFunction

from twinloop.errors import (
    BaselineRefusedError,
    LedgerContractMismatchError,
    LedgerError,
    LedgerRevertedError,
    LedgerTransactionFailedError,
    LedgerUnauthorisedError,
    LedgerUnavailableError,
    RunAlreadyRecordedError,
    RunNotFoundError,
)
from twinloop.ledger import artifact
from twinloop.ledger.anvil import find_anvil
from twinloop.ledger.chain import ROLES, LedgerEntry, RunLedgerClient, dut_key
from twinloop.ledger.embedded import EmbeddedChain
from twinloop.ledger.entries import record_args
from twinloop.ledger.ipfs import cid_of

try:
    find_anvil()
except LedgerUnavailableError as exc:
    pytest.skip(f"anvil is not installed: {exc}", allow_module_level=True)


def _entry(**overrides: str) -> LedgerEntry:
    fields = {
        "run_id": str(uuid.uuid4()),
        "scenario_hash": hashlib.sha256(b"scenarios/smoke.yaml").hexdigest(),
        "dut_id": "pm-600v-half-bridge",
        "dut_version": "1.0.0",
        "bundle_cid": cid_of(os.urandom(64)),
        "verdict": "pass",
    }
    fields.update(overrides)
    return LedgerEntry(**fields)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedChain]:
    with EmbeddedChain(tmp_path_factory.mktemp("twinloop-home")) as embedded:
        yield embedded


def _client(chain: EmbeddedChain, *roles: str) -> RunLedgerClient:
    """A client for a fresh, funded account holding ``roles`` (granted by the admin)."""
    account = Account.create()
    chain.fund(account.address)
    for role in roles:
        chain.client.grant_role(role, account.address)
    return RunLedgerClient(chain.rpc_url, chain.client.address, account)


def _gas(chain: EmbeddedChain, tx_hash: str) -> int:
    return Web3(Web3.HTTPProvider(chain.rpc_url)).eth.get_transaction_receipt(tx_hash)["gasUsed"]


def _deploy_v1(chain: EmbeddedChain) -> str:
    """Deploy the v1 RunLedger (a contract with a similar ABI but other code) and return its address."""
    compiled = artifact.compile_source(artifact.read_source(artifact.V1_SOURCE))
    w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
    account = chain.account
    tx = w3.eth.contract(abi=compiled["abi"], bytecode=compiled["bytecode"]).constructor().build_transaction(
        {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address, "pending")})
    tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    return receipt["contractAddress"]


def test_record_costs_one_slot_and_an_indexed_event(chain: EmbeddedChain) -> None:
    bench = _client(chain, "recorder")
    gas = [_gas(chain, bench.record(_entry(verdict=v))) for v in ("pass", "fail", "error")]
    assert all(g < 60_000 for g in gas), gas  # v1 stored the whole record: ~297k


def test_get_rebuilds_the_entry_from_slot_and_event(chain: EmbeddedChain) -> None:
    bench = _client(chain, "recorder")
    entry = _entry(verdict="fail")
    tx_hash = bench.record(entry)
    got = chain.client.get(entry.run_id)
    assert (got.run_id, got.scenario_hash, got.dut_id, got.dut_version, got.bundle_cid, got.verdict) == (
        entry.run_id, entry.scenario_hash, entry.dut_id, entry.dut_version, entry.bundle_cid, "fail")
    assert got.recorder == bench.account.address and got.recorder_roles == ("recorder",)
    assert (got.tx_hash, got.tx_status) == (tx_hash, 1)
    receipt = Web3(Web3.HTTPProvider(chain.rpc_url)).eth.get_transaction_receipt(tx_hash)
    assert got.block_number == receipt["blockNumber"] and got.log_index == receipt["logs"][0]["logIndex"]
    assert got.timestamp > 0
    assert chain.client.recorded_tx(entry.run_id) == tx_hash
    assert chain.client.recorded_tx(str(uuid.uuid4())) is None


def test_replaying_a_run_id_is_refused(chain: EmbeddedChain) -> None:
    entry = _entry()
    chain.client.record(entry)
    other = _client(chain, "recorder")
    with pytest.raises(RunAlreadyRecordedError, match=entry.run_id):
        other.record(_entry(run_id=entry.run_id, verdict="error"))
    assert chain.client.get(entry.run_id).verdict == "pass"


def test_non_recorder_is_refused(chain: EmbeddedChain) -> None:
    outsider = _client(chain, "reviewer")
    with pytest.raises(LedgerUnauthorisedError, match=f"{outsider.account.address} is not a recorder"):
        outsider.record(_entry())


def test_revoked_recorder_is_refused_but_its_past_runs_keep_their_role(chain: EmbeddedChain) -> None:
    bench = _client(chain, "recorder")
    entry = _entry()
    bench.record(entry)
    chain.client.revoke_role("recorder", bench.account.address)
    with pytest.raises(LedgerUnauthorisedError, match=bench.account.address):
        bench.record(_entry())
    got = chain.client.get(entry.run_id)
    assert not chain.client.is_recorder(bench.account.address)
    assert chain.client.had_role("recorder", got.recorder, got.block_number)
    assert chain.client.recorder_was_authorised(got)
    assert not chain.client.had_role("recorder", got.recorder, chain.client.block_number())
    assert got.recorder_roles == ("recorder",)  # what the slot kept from the moment of writing


def test_had_role_follows_grants_and_revocations_block_by_block(chain: EmbeddedChain) -> None:
    account = Account.create().address
    before = chain.client.block_number()
    granted = _block_of(chain, chain.client.grant_role("recorder", account))
    revoked = _block_of(chain, chain.client.revoke_role("recorder", account))
    again = _block_of(chain, chain.client.grant_role("recorder", account))
    had = chain.client.had_role
    assert not had("recorder", account, before) and not had("recorder", account, granted - 1)
    assert had("recorder", account, granted) and had("recorder", account, revoked - 1)
    assert not had("recorder", account, revoked) and not had("recorder", account, again - 1)
    assert had("recorder", account, again)
    assert not had("reviewer", account, again)  # roles are separate
    assert chain.client.had_role("admin", chain.account.address, before)  # the deployer, from block 1


def test_a_revocation_later_in_the_same_block_does_not_unbless_the_run(chain: EmbeddedChain) -> None:
    """Role checks at a run's own log: state just before it, not at the end of its block."""
    bench = _client(chain, "recorder")
    w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
    ledger = w3.eth.contract(address=chain.client.address, abi=artifact.load().abi)
    entry = _entry()
    tip = w3.to_wei(2, "gwei")

    def signed(account: LocalAccount, fn: ContractFunction, priority: int) -> bytes:
        """Explicit gas and fees: nothing is estimated, and the higher tip goes first in the block."""
        tx = fn.build_transaction({"from": account.address, "gas": 200_000,
                                   "nonce": w3.eth.get_transaction_count(account.address),
                                   "maxFeePerGas": 100 * tip, "maxPriorityFeePerGas": priority})
        return account.sign_transaction(tx).raw_transaction

    record = signed(bench.account, ledger.functions.record(*record_args(entry)), 2 * tip)
    revoke = signed(chain.account, ledger.functions.revoke_role(ROLES["recorder"], bench.account.address), tip)
    w3.provider.make_request("evm_setAutomine", [False])
    try:
        hashes = [w3.eth.send_raw_transaction(raw) for raw in (record, revoke)]
        w3.provider.make_request("evm_mine", [])
    finally:
        w3.provider.make_request("evm_setAutomine", [True])
    receipts = [w3.eth.wait_for_transaction_receipt(h) for h in hashes]
    assert [r["status"] for r in receipts] == [1, 1]
    assert receipts[0]["blockNumber"] == receipts[1]["blockNumber"]
    assert receipts[0]["transactionIndex"] < receipts[1]["transactionIndex"]

    got = chain.client.get(entry.run_id)
    assert not chain.client.had_role("recorder", got.recorder, got.block_number)  # end of block
    assert chain.client.had_role("recorder", got.recorder, got.block_number, got.log_index)
    assert chain.client.recorder_was_authorised(got)


def _block_of(chain: EmbeddedChain, tx_hash: str) -> int:
    return Web3(Web3.HTTPProvider(chain.rpc_url)).eth.get_transaction_receipt(tx_hash)["blockNumber"]


def test_roles_are_granted_by_admins_only(chain: EmbeddedChain) -> None:
    bench = _client(chain, "recorder")
    with pytest.raises(LedgerUnauthorisedError, match="not an admin"):
        bench.grant_role("reviewer", bench.account.address)
    with pytest.raises(LedgerError, match="unknown role"):
        chain.client.grant_role("owner", bench.account.address)
    with pytest.raises(LedgerRevertedError, match="cannot revoke own admin role"):
        chain.client.revoke_role("admin", chain.account.address)
    assert chain.client.has_role("admin", chain.account.address)


def test_baselines_are_accepted_by_reviewers_for_passing_runs_only(chain: EmbeddedChain) -> None:
    scenario = hashlib.sha256(os.urandom(16)).hexdigest()
    passing, failing = _entry(scenario_hash=scenario), _entry(scenario_hash=scenario, verdict="fail")
    chain.client.record(passing)
    chain.client.record(failing)
    assert chain.client.baseline(scenario, passing.dut_id, passing.dut_version) is None

    bench = _client(chain, "recorder")
    with pytest.raises(LedgerUnauthorisedError, match=f"{bench.account.address} is not a reviewer"):
        bench.accept_baseline(passing.run_id)
    reviewer = _client(chain, "reviewer")
    with pytest.raises(BaselineRefusedError, match=failing.run_id):
        reviewer.accept_baseline(failing.run_id)
    with pytest.raises(RunNotFoundError):
        reviewer.accept_baseline(str(uuid.uuid4()))

    tx_hash = reviewer.accept_baseline(passing.run_id)
    assert chain.client.baseline(scenario, passing.dut_id, passing.dut_version) == passing.run_id
    assert chain.client.baseline(scenario, passing.dut_id, "9.9.9") is None
    receipt = Web3(Web3.HTTPProvider(chain.rpc_url)).eth.get_transaction_receipt(tx_hash)
    topics = [t.to_0x_hex() for t in receipt["logs"][0]["topics"]]
    assert topics[1:] == ["0x" + scenario, dut_key(passing.dut_id, passing.dut_version)]


def test_runs_are_found_by_scenario_hash_and_dut_version(chain: EmbeddedChain) -> None:
    scenario = hashlib.sha256(os.urandom(16)).hexdigest()
    a = _entry(scenario_hash=scenario, dut_version="3.0.0")
    b = _entry(scenario_hash=scenario, dut_version="3.0.1", verdict="fail")
    c = _entry(dut_version="3.0.1")
    hashes = [chain.client.record(e) for e in (a, b, c)]

    by_scenario = chain.client.find_runs(scenario_hash=scenario)
    assert [e.run_id for e in by_scenario] == [a.run_id, b.run_id]
    assert [e.tx_hash for e in by_scenario] == hashes[:2]
    assert by_scenario[0].block_number < by_scenario[1].block_number
    assert by_scenario[1].verdict == "fail" and by_scenario[1].bundle_cid == b.bundle_cid

    by_dut = chain.client.find_runs(dut_id=c.dut_id, dut_version="3.0.1")
    assert [e.run_id for e in by_dut][-2:] == [b.run_id, c.run_id]
    both = chain.client.find_runs(scenario_hash="0x" + scenario, dut_id=a.dut_id, dut_version="3.0.1")
    assert [e.run_id for e in both] == [b.run_id]
    with pytest.raises(LedgerError, match="both dut_id and dut_version"):
        chain.client.find_runs(dut_id=a.dut_id)


def test_maintenance_requests_round_trip_and_are_watched(chain: EmbeddedChain) -> None:
    bench = _client(chain, "recorder")
    run_id = str(uuid.uuid4())
    first = chain.client.block_number() + 1
    tx_hash = bench.request_maintenance(run_id, "pm-600v-half-bridge", "1.0.0", "module",
                                        rul_seconds=3599.7, limit_seconds=7200, reason="RUL p10 below limit")
    (request,) = chain.client.maintenance_requests(first, run_id=run_id)
    assert (request.run_id, request.device, request.rul_seconds, request.limit_seconds, request.reason) == (
        run_id, "module", 3599, 7200, "RUL p10 below limit")
    assert request.dut_key == dut_key("pm-600v-half-bridge", "1.0.0")
    assert (request.requester, request.tx_hash) == (bench.account.address, tx_hash)

    with pytest.raises(LedgerUnauthorisedError, match="not a recorder"):
        _client(chain, "reviewer").request_maintenance(run_id, "d", "1", "module", 1, 2, "x")

    watch = chain.client.watch_maintenance(poll_s=0.05)  # from the next block on
    seen: queue.Queue[object] = queue.Queue()
    threading.Thread(target=lambda: seen.put(next(watch)), daemon=True).start()
    time.sleep(0.3)
    assert seen.empty()  # nothing new yet: the request above is in the past
    later = str(uuid.uuid4())
    bench.request_maintenance(later, "pm-600v-half-bridge", "1.0.0", "fan", 10, 60, "bearing wear")
    new = seen.get(timeout=15)
    assert new.run_id == later and new.device == "fan"


def test_artifact_is_reproduced_by_the_installed_vyper() -> None:
    shipped = importlib.resources.files("twinloop.ledger").joinpath(artifact.ARTIFACT)
    assert artifact.render(artifact.build()) == shipped.read_text(encoding="utf-8")
    loaded = artifact.load()
    assert loaded.version == "twinloop.RunLedger/3"
    assert loaded.source_sha256 == hashlib.sha256(artifact.read_source().encode()).hexdigest()


def test_deployment_file_records_version_and_code_hash(chain: EmbeddedChain) -> None:
    deployment = json.loads((chain.deployment_path).read_text())
    code = Web3(Web3.HTTPProvider(chain.rpc_url)).eth.get_code(chain.client.address)
    assert deployment["address"] == chain.client.address
    assert deployment["chain_id"] == chain.client.chain_id
    assert deployment["version"] == artifact.load().version
    assert deployment["runtime_code_hash"] == "0x" + Web3.keccak(code).hex().removeprefix("0x")
    assert deployment["runtime_code_hash"] == artifact.load().runtime_code_hash


def test_a_look_alike_contract_is_refused(chain: EmbeddedChain) -> None:
    address = _deploy_v1(chain)
    with pytest.raises(LedgerContractMismatchError) as caught:
        RunLedgerClient(chain.rpc_url, address, chain.account)
    message = str(caught.value)
    assert address in message and artifact.load().runtime_code_hash in message
    code = Web3(Web3.HTTPProvider(chain.rpc_url)).eth.get_code(address)
    assert "0x" + Web3.keccak(code).hex().removeprefix("0x") in message


def test_a_deployment_file_pointed_at_another_contract_is_refused(tmp_path: Path) -> None:
    with EmbeddedChain(tmp_path) as embedded:
        look_alike = _deploy_v1(embedded)
    deployment = json.loads(embedded.deployment_path.read_text())
    embedded.deployment_path.write_text(json.dumps({**deployment, "address": look_alike}))
    with pytest.raises(LedgerContractMismatchError, match=f"{look_alike}.*points at another contract"):
        EmbeddedChain(tmp_path).start()
    embedded.deployment_path.write_text(json.dumps(deployment))  # put back: attaches again
    with EmbeddedChain(tmp_path) as again:
        assert again.client.address == deployment["address"]


def test_a_transaction_mined_with_status_0_raises(chain: EmbeddedChain) -> None:
    entry = _entry()
    chain.client.record(entry)
    # An explicit gas limit skips the estimate, so the node mines the failing transaction.
    with pytest.raises(RunAlreadyRecordedError, match=f"{entry.run_id}.*status 0"):
        chain.client.record(_entry(run_id=entry.run_id), gas=200_000)
    starved = _entry()
    with pytest.raises(LedgerTransactionFailedError, match="status 0.*out of gas"):
        chain.client.record(starved, gas=30_000)
    with pytest.raises(RunNotFoundError):
        chain.client.get(starved.run_id)


def test_bundle_cid_must_be_cidv0(chain: EmbeddedChain) -> None:
    with pytest.raises(LedgerError, match="CIDv0"):
        chain.client.record(_entry(bundle_cid="bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"))


def test_bench_json_carries_the_gas_figures(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from twinloop.ledger import bench

    monkeypatch.setattr(bench, "QUICK_RUNS", 4)
    monkeypatch.setattr(bench, "SMALL", 2)
    monkeypatch.setattr(bench, "IMPORT_MB", 1)  # the speed rows, small
    monkeypatch.setattr(bench, "LONG_RUN_ROWS", 600)
    monkeypatch.setattr(bench, "QUICK_AMONG", 5)
    assert bench.main(["--quick", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["runs"] == 4 and figures["contract"] == artifact.load().version
    assert 0 < figures["gas_per_run"]["single"] < 60_000 < figures["gas_per_run"]["v1_single"]
    assert set(figures["gas"]) == {"deploy", "v1_deploy", "grant_role", "accept_baseline",
                                   "request_maintenance"}
    assert figures["records_per_s"]["single"] > 0 and figures["read_ms"]["find_runs_matches"] >= 1
