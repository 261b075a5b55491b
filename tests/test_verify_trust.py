"""Verification trusts the chain's history and the signed evidence, not the present.

A committed run carries its attestation signed by the recorder; a statement
signed by another key fails its own check; a bench with a standard key is
verified against that public key; the recorder's role is judged at the block
that recorded the run, so revoking a bench key later does not fail its past
runs and granting a role later does not bless a run recorded without it. A
signed bundle whose verdicts disagree with its own samples fails the re-judged
verdicts. An intelligent twin's maintenance request goes on chain with the run,
and ``twinloop ledger watch`` prints and forwards it. A run that ends while
the chain is down is signed, kept in the outbox and committed once later.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eth_account import Account
from web3 import Web3

from twinloop.errors import LedgerUnavailableError
from twinloop.harness.attestation import attest
from twinloop.harness.cli import main
from twinloop.harness.pipeline import Pipeline
from twinloop.harness.record import Event, RunRecord
from twinloop.harness.services import KEY_ENV, SIGNING_KEY_ENV, ServiceOptions, Services
from twinloop.ledger.chain import RunLedgerClient
from twinloop.ledger.dsse import EthereumSigner, key_from_pem

BUNDLE = Path(__file__).parent / "data" / "run-v2-thermal-cycling.json"
#: RunLedger's ``roles`` mapping is storage slot 0 (``vyper -f layout ledger/contracts/RunLedger.vy``).
ROLES_SLOT = 0


def fresh_record(run_id: str) -> RunRecord:
    """A real recorded run (thermal cycling), under a new run id, unsigned."""
    record = RunRecord.from_bytes(BUNDLE.read_bytes())
    return record.model_copy(update={"run_id": run_id, "attestation": None})


def statuses(v: object) -> dict[str, str]:
    return {c.name: c.status for c in v.checks}  # type: ignore[attr-defined]


@pytest.fixture
def pipeline(twinloop_ledger: Services) -> Pipeline:
    return Pipeline(twinloop_ledger)


def test_a_committed_run_carries_an_attestation_its_recorder_signed(pipeline: Pipeline) -> None:
    committed = pipeline.commit(fresh_record("0b6f9a64-3c70-4f55-8f4c-0a1e5b1c2d01"))
    assert committed.record.attestation is not None
    assert committed.record.attestation.signatures[0].keyid == pipeline.services.ledger.account.address
    v = pipeline.verify(committed.run_id, no_scenario_file=True, require_attestation=True)
    s = statuses(v)
    assert s["transaction"] == s["recorder role"] == s["attestation signature"] == "ok"
    assert s["attestation subjects"] == s["attestation result"] == s["attestation tests"] == "ok"


def test_an_attestation_signed_by_another_key_fails_its_own_check(pipeline: Pipeline) -> None:
    """The authorised recorder commits a statement someone else signed: the chain is fine, the evidence is not."""
    stranger = Account.create()
    record = attest(fresh_record("0b6f9a64-3c70-4f55-8f4c-0a1e5b1c2d02"), EthereumSigner(stranger))
    pipeline.commit(record)
    v = pipeline.verify(record.run_id, no_scenario_file=True)
    failed = {c.name: c.detail for c in v.checks if c.status == "failed"}
    assert list(failed) == ["attestation signature"] and not v.ok
    assert stranger.address in failed["attestation signature"]
    assert pipeline.services.ledger.account.address in failed["attestation signature"]


def test_a_bench_with_a_standard_key_is_verified_against_that_key(pipeline: Pipeline, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "bench-key.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    public = key_from_pem(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo))
    monkeypatch.setenv(SIGNING_KEY_ENV, str(pem))
    committed = pipeline.commit(fresh_record("0b6f9a64-3c70-4f55-8f4c-0a1e5b1c2d03"))
    assert pipeline.verify(committed.run_id, no_scenario_file=True, signer=public).ok
    by_address = pipeline.verify(committed.run_id, no_scenario_file=True)
    assert [c.name for c in by_address.checks if c.status == "failed"] == ["attestation signature"]


def test_the_recorder_role_is_judged_at_the_block_of_the_record(pipeline: Pipeline) -> None:
    """A bench key revoked after its run still verifies: the role is read at the run's block, not now."""
    services = pipeline.services
    admin = services.ledger
    bench = Account.create()
    services._chain.fund(bench.address)  # the embedded chain's dev funding
    client = RunLedgerClient(admin.rpc_url, admin.address, bench)
    admin.grant_role("recorder", bench.address)
    record = attest(fresh_record("0b6f9a64-3c70-4f55-8f4c-0a1e5b1c2d04"), EthereumSigner(bench))
    cid = services.ipfs.add(record.to_bytes())
    client.record(record.ledger_entry(cid))
    admin.revoke_role("recorder", bench.address)
    assert not admin.is_recorder(bench.address)
    v = pipeline.verify(record.run_id, no_scenario_file=True)
    assert v.ok, v.checks
    assert statuses(v)["recorder role"] == "ok"
    assert f"held the recorder role at block {v.entry.block_number}" in {c.name: c.detail for c in v.checks}[
        "recorder role"]


def test_a_role_granted_after_the_run_does_not_bless_it(pipeline: Pipeline) -> None:
    """A run recorded by an account whose role no RoleGranted event shows (the contract's storage edited, as
    a forged node would serve it) fails the role check, and still fails after the admin grants the role."""
    services = pipeline.services
    admin = services.ledger
    bench = Account.create()
    services._chain.fund(bench.address)
    w3 = Web3(Web3.HTTPProvider(admin.rpc_url))
    slot = Web3.keccak(ROLES_SLOT.to_bytes(32, "big") + bytes.fromhex(bench.address[2:]).rjust(32, b"\0"))

    def set_roles(flags: int) -> None:
        w3.provider.make_request("anvil_setStorageAt", [admin.address, slot.to_0x_hex(),  # type: ignore[arg-type]
                                                        "0x" + flags.to_bytes(32, "big").hex()])

    set_roles(1)  # RECORDER, with no RoleGranted event
    assert admin.is_recorder(bench.address)
    record = attest(fresh_record("0b6f9a64-3c70-4f55-8f4c-0a1e5b1c2d07"), EthereumSigner(bench))
    RunLedgerClient(admin.rpc_url, admin.address, bench).record(record.ledger_entry(services.ipfs.add(
        record.to_bytes())))
    set_roles(0)
    refused = pipeline.verify(record.run_id, no_scenario_file=True)
    block = refused.entry.block_number  # type: ignore[union-attr]
    expected = f"recorder {bench.address} did not hold the recorder role at block {block}"
    assert [c.name for c in refused.checks if c.status == "failed"] == ["recorder role"]

    admin.grant_role("recorder", bench.address)  # after the fact: a RoleGranted event in a later block
    assert admin.is_recorder(bench.address) and admin.had_role("recorder", bench.address, admin.block_number())
    v = pipeline.verify(record.run_id, no_scenario_file=True)
    failed = {c.name: c.detail for c in v.checks if c.status == "failed"}
    assert not v.ok and list(failed) == ["recorder role"] and expected in failed["recorder role"]


def test_a_bundle_whose_verdicts_disagree_with_its_samples_fails_though_an_authorised_recorder_signed_it(
        pipeline: Pipeline) -> None:
    """The recorder commits, and signs, a peak above the limit with every verdict still saying pass."""
    record = fresh_record("0b6f9a64-3c70-4f55-8f4c-0a1e5b1c2d08")
    temperature = record.samples.columns["module.temperature"]
    temperature[600] = 140.0  # above the 125 degC limit; the recorded verdicts say pass
    assert record.outcome == "pass" and all(v.outcome == "pass" for v in record.verdicts)
    committed = pipeline.commit(record)
    v = pipeline.verify(committed.run_id, no_scenario_file=True, require_attestation=True)
    failed = {c.name: c.detail for c in v.checks if c.status == "failed"}
    assert list(failed) == ["re-judged verdicts"] and not v.ok  # the chain, bundle and signature are fine
    detail = failed["re-judged verdicts"]
    assert "junction_temperature: recomputed fail (140" in detail and "recorded ('pass', 109.38)" in detail
    assert "overall: recomputed fail, bundle pass, chain pass" in detail


def test_a_twins_maintenance_request_goes_on_chain_and_ledger_watch_forwards_it(
        pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    record = fresh_record("0b6f9a64-3c70-4f55-8f4c-0a1e5b1c2d05")
    decision = {"rul": "p05", "rul_s": 9.45e6, "below_s": 1.296e7, "derate": {}, "maintenance": "replace the fan"}
    record.events.append(Event(t=630.0, kind="maintenance_request", device="module", data=decision,
                               message="RUL p05 109 d below 150 d: replace the fan"))
    pipeline.commit(record)
    ledger = pipeline.services.ledger
    [request] = ledger.maintenance_requests(run_id=record.run_id)
    assert (request.device, request.rul_seconds, request.limit_seconds, request.reason) == (
        "module", 9_450_000, 12_960_000, "replace the fan")

    monkeypatch.setenv(KEY_ENV, ledger.account.key.hex())
    forwarded = tmp_path / "forwarded.json"
    code = main(["ledger", "watch", "--once", "--from-block", str(request.block_number), "--json",
                 "--command", f"cat >> {forwarded}", "--chain", ledger.rpc_url, "--contract", ledger.address,
                 "--home", str(tmp_path / "home")])
    assert code == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    mine = [r for r in printed if r["run_id"] == record.run_id]
    assert [(r["device"], r["rul_seconds"], r["tx_hash"]) for r in mine] == [
        ("module", 9_450_000, request.tx_hash)]
    assert json.loads(forwarded.read_text().splitlines()[0])["run_id"] == printed[0]["run_id"]


def test_a_run_that_ends_while_the_chain_is_down_waits_in_the_outbox_and_is_committed_once(
        pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    live = pipeline.services.ledger
    monkeypatch.setenv(KEY_ENV, live.account.key.hex())
    down = Services(ServiceOptions(home=tmp_path / "bench", chain_url="http://127.0.0.1:9", contract=live.address))
    record = fresh_record("0b6f9a64-3c70-4f55-8f4c-0a1e5b1c2d06")
    with pytest.raises(LedgerUnavailableError, match="kept in"):
        Pipeline(down).commit(record)
    [pending] = down.outbox.glob("*.json")
    waiting = RunRecord.from_bytes(pending.read_bytes())
    assert waiting.attestation is not None and waiting.samples == record.samples  # signed and whole, offline

    up = Pipeline(Services(ServiceOptions(home=tmp_path / "bench", chain_url=live.rpc_url, contract=live.address)))
    [committed] = up.sync()
    assert committed.run_id == record.run_id and not list(down.outbox.glob("*.json"))
    assert up.sync() == []  # once
    assert live.get(record.run_id).bundle_cid == committed.cid
    assert up.verify(record.run_id, no_scenario_file=True, require_attestation=True).ok
