"""Run attestations: an in-toto Test Result statement in a DSSE envelope, signed by the bench's key."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from eth_account import Account
from google.protobuf import json_format
from in_toto_attestation.predicates.test_result.v0 import test_result_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement as ProtoStatement
from securesystemslib.signer import CryptoSigner, Key, Signer

from twinloop.harness.attestation import (PAYLOAD_TYPE, STATEMENT_TYPE, TEST_RESULT_TYPE, attest,
                                          dut_digest, statement, verify_attestation)
from twinloop.harness.record import DsseEnvelope, RunRecord
from twinloop.ledger import bundle, dsse
from twinloop.ledger.embedded import _load_or_create_key
from twinloop.ledger.dsse import EthereumKey, EthereumSigner
from twinloop.ledger.ipfs import import_file

DATA = Path(__file__).parent / "data"
V2 = DATA / "run-v2-thermal-cycling.json"
RECORDER = Account.from_key("0x" + "11" * 32)
ATTACKER = Account.from_key("0x" + "22" * 32)


def v2() -> RunRecord:
    return RunRecord.from_bytes(V2.read_bytes())


def failing(record: RunRecord) -> RunRecord:
    """The record with its first expectation failed, as the judge would have recorded it."""
    verdicts = [record.verdicts[0].model_copy(update={"outcome": "fail"}), *record.verdicts[1:]]
    return record.model_copy(update={"verdicts": verdicts, "outcome": "fail"})


def statuses(checks: list) -> dict[str, str]:
    return {c.name: c.status for c in checks}


def failures(checks: list) -> dict[str, str]:
    return {c.name: c.detail for c in checks if c.status == "failed"}


def payload_of(record: RunRecord) -> dict[str, Any]:
    assert record.attestation is not None
    return json.loads(base64.b64decode(record.attestation.payload))


def with_envelope(record: RunRecord, stmt: dict[str, Any], signer: Signer) -> RunRecord:
    """``record`` carrying ``stmt`` signed by ``signer`` (what a dishonest or buggy signer could do)."""
    envelope = dsse.sign(bundle.encode(stmt), PAYLOAD_TYPE, signer)
    return record.model_copy(update={"attestation": DsseEnvelope.model_validate(envelope.to_dict())})


def edited(record: RunRecord, change: Callable[[dict[str, Any]], None]) -> RunRecord:
    """``record`` with its signed statement changed and the old signature kept."""
    stmt = payload_of(record)
    change(stmt)
    payload = base64.b64encode(bundle.encode(stmt)).decode()
    assert record.attestation is not None
    return record.model_copy(update={"attestation": record.attestation.model_copy(update={"payload": payload})})


# --- round trips --------------------------------------------------------------------------

def test_recorder_key_round_trip_through_the_bundle_bytes() -> None:
    signed = attest(v2(), EthereumSigner(RECORDER))
    data = signed.to_bytes()
    again = RunRecord.from_bytes(data)
    assert again == signed and again.to_bytes() == data
    assert import_file(data)[0] == import_file(again.to_bytes())[0]  # same bytes, same CID
    checks = verify_attestation(data, RECORDER.address)
    assert all(c.status == "ok" for c in checks), failures(checks)
    assert [c.name for c in checks] == ["attestation", "attestation signature", "attestation statement",
                                        "attestation subjects", "attestation result", "attestation tests",
                                        "attestation configuration"]
    assert f"signed by {RECORDER.address}" in checks[1].detail
    # the signature is EIP-191 personal_sign over the DSSE PAE, key id the checksummed address
    (sig,) = signed.attestation.signatures
    assert sig.keyid == RECORDER.address and len(base64.b64decode(sig.sig)) == 65


def test_the_record_subject_is_the_digest_of_the_record_without_its_attestation() -> None:
    signed = attest(v2(), EthereumSigner(RECORDER))
    subjects = {s["name"]: s["digest"]["sha256"] for s in payload_of(signed)["subject"]}
    assert subjects["run:5f3d4162-266a-4950-a79b-bca9487e1c1a"] == hashlib.sha256(V2.read_bytes()).hexdigest()
    assert subjects["dut:pm-600v-half-bridge@1.0.0"] == hashlib.sha256(
        b'{"id":"pm-600v-half-bridge","version":"1.0.0"}').hexdigest() == dut_digest(signed)
    assert signed.to_bytes() != V2.read_bytes()  # the envelope is in the bundle the CID names


def test_the_recorder_keys_sign_through_securesystemslib_registries(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    account = _load_or_create_key(tmp_path / "dev-recorder.key")  # the embedded chain's key file
    key = Key.from_dict(account.address, EthereumKey.from_address(account.address).to_dict())
    assert isinstance(key, EthereumKey) and key.address == account.address
    signer = Signer.from_priv_key_uri(f"ethkey:{tmp_path / 'dev-recorder.key'}", key)
    checks = verify_attestation(attest(v2(), signer).to_bytes(), account.address.lower())
    assert all(c.status == "ok" for c in checks), failures(checks)
    monkeypatch.setenv("TWINLOOP_RECORDER_KEY", RECORDER.key.to_0x_hex())  # a production bench's key
    signer = Signer.from_priv_key_uri("ethkey:env:TWINLOOP_RECORDER_KEY", EthereumKey.from_address(RECORDER.address))
    assert signer.public_key.keyid == RECORDER.address
    with pytest.raises(ValueError, match="holds the key of"):
        Signer.from_priv_key_uri(f"ethkey:{tmp_path / 'dev-recorder.key'}",
                                 EthereumKey.from_address(ATTACKER.address))


@pytest.mark.parametrize("generate", [Ed25519PrivateKey.generate, lambda: ec.generate_private_key(ec.SECP256R1())],
                         ids=["ed25519", "ecdsa-p256"])
def test_standard_key_round_trip(generate: Callable[[], Any]) -> None:
    private = generate()
    # as a bench would be configured: its PKCS#8 private key PEM; verifiers get the public key PEM
    signer = dsse.signer_from_pem(private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    public = dsse.key_from_pem(private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    assert public.keyid == signer.public_key.keyid
    data = attest(v2(), signer).to_bytes()
    checks = verify_attestation(data, public)
    assert all(c.status == "ok" for c in checks), failures(checks)
    wrong = failures(verify_attestation(data, RECORDER.address))
    assert list(wrong) == ["attestation signature"]
    assert f"signed by key {public.keyid[:16]}, not by {RECORDER.address}" in wrong["attestation signature"]


def test_a_second_key_co_signs_the_same_statement() -> None:
    standard = CryptoSigner.generate_ed25519()
    both = attest(attest(v2(), EthereumSigner(RECORDER)), standard)
    assert both.attestation is not None and len(both.attestation.signatures) == 2
    for key in (RECORDER.address, standard.public_key):
        checks = verify_attestation(both.to_bytes(), key)
        assert all(c.status == "ok" for c in checks), failures(checks)


# --- the statement ------------------------------------------------------------------------

def test_payload_is_an_in_toto_statement_v1_with_a_test_result_predicate() -> None:
    signed = attest(v2(), EthereumSigner(RECORDER), url="https://ci.example/runs/7")
    assert signed.attestation is not None and signed.attestation.payloadType == "application/vnd.in-toto+json"
    stmt = payload_of(signed)
    assert stmt["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert stmt["predicateType"] == TEST_RESULT_TYPE == "https://in-toto.io/attestation/test-result/v0.1"
    assert all(s["name"] and s["digest"]["sha256"] for s in stmt["subject"])
    predicate = stmt["predicate"]
    assert predicate["result"] == "PASSED" and predicate["url"] == "https://ci.example/runs/7"
    assert predicate["passedTests"] == ["junction_temperature", "twin_predicts_junction", "cools_to_ambient",
                                        "overheats_after_fan_stops"]
    assert predicate["warnedTests"] == predicate["failedTests"] == []
    assert predicate["configuration"] == [
        {"name": "rig:emulated",
         "digest": {"sha256": "9d0989bea0f3ccdf0e923ad2c66d2c9dfd10496113115faafc9eb555b4a91924"}},
        {"name": "twinloop", "uri": "pkg:generic/twinloop@0.1.0", "annotations": {"judgeVersion": "3"}}]
    # the in-toto project's own bindings accept it: no unknown field but the one extension
    proto = json_format.Parse(json.dumps(stmt), statement_pb2.Statement())
    ProtoStatement.copy_from_pb(proto).validate()
    standard = {k: v for k, v in predicate.items() if k != "twinloop"}
    parsed = json_format.ParseDict(standard, test_result_pb2.TestResult())
    assert parsed.result == "PASSED" and len(parsed.configuration) == 2
    assert predicate["twinloop"] == {"outcome": "pass"}


def marginal(record: RunRecord) -> RunRecord:
    verdicts = [record.verdicts[0].model_copy(update={"marginal": True}), *record.verdicts[1:]]
    return record.model_copy(update={"verdicts": verdicts})


def errored(record: RunRecord) -> RunRecord:
    return record.model_copy(update={"outcome": "error", "error": "module: no reply within 1 s"})


@pytest.mark.parametrize("make, result, lists, extension", [
    (marginal, "WARNED", (3, 1, 0), {"outcome": "pass"}),
    (failing, "FAILED", (3, 0, 1), {"outcome": "fail"}),
    (errored, "FAILED", (4, 0, 0), {"outcome": "error", "error": "module: no reply within 1 s"}),
], ids=["marginal-pass", "fail", "error"])
def test_outcomes_map_to_the_spec_results(make: Callable[[RunRecord], RunRecord], result: str,
                                          lists: tuple[int, int, int], extension: dict[str, str]) -> None:
    record = make(v2())
    predicate = statement(record)["predicate"]
    assert predicate["result"] == result and predicate["twinloop"] == extension
    assert (len(predicate["passedTests"]), len(predicate["warnedTests"]), len(predicate["failedTests"])) == lists
    checks = verify_attestation(attest(record, EthereumSigner(RECORDER)), RECORDER.address)
    assert all(c.status == "ok" for c in checks), failures(checks)


def test_a_reported_firmware_digest_is_a_subject_of_its_own() -> None:
    record = v2()
    assert "firmware_sha256" not in json.loads(record.to_bytes())["dut"]  # no rig reports one yet
    fw = hashlib.sha256(b"firmware image").hexdigest()
    record = record.model_copy(update={"dut": record.dut.model_copy(update={"firmware_sha256": fw})})
    signed = attest(record, EthereumSigner(RECORDER))
    assert RunRecord.from_bytes(signed.to_bytes()).dut.firmware_sha256 == fw
    subjects = {s["name"]: s["digest"]["sha256"] for s in payload_of(signed)["subject"]}
    assert subjects["firmware:pm-600v-half-bridge@1.0.0"] == fw
    assert all(c.status == "ok" for c in verify_attestation(signed.to_bytes(), RECORDER.address))


# --- old bundles --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["run-v2-thermal-cycling.json", "run-v1.json"])
def test_old_bundles_read_fine_and_report_no_attestation(name: str) -> None:
    data = (DATA / name).read_bytes()
    record = RunRecord.from_bytes(data)
    assert record.attestation is None and record.dut.firmware_sha256 is None
    if name.startswith("run-v2"):
        assert record.to_bytes() == data  # the new optional fields leave old bytes (and CIDs) alone
    (check,) = verify_attestation(data, RECORDER.address)
    assert (check.name, check.status) == ("attestation", "skipped") and "no attestation" in check.detail
    (check,) = verify_attestation(data, RECORDER.address, required=True)
    assert check.status == "failed" and "no attestation" in check.detail


# --- attacks: each is found, by its own check, with its own message ---------------------------

def test_forged_attestation_payload_edited_signature_kept() -> None:
    signed = attest(failing(v2()), EthereumSigner(RECORDER))

    def claim_pass(stmt: dict[str, Any]) -> None:
        p = stmt["predicate"]
        p["result"], p["passedTests"], p["failedTests"] = "PASSED", p["passedTests"] + p["failedTests"], []

    forged = edited(signed, claim_pass)
    found = failures(verify_attestation(forged.to_bytes(), RECORDER.address))
    assert list(found) == ["attestation signature"]
    assert f"the signature by {RECORDER.address} does not verify over this payload" in found["attestation signature"]
    assert "changed after it was signed" in found["attestation signature"]


def test_re_signed_by_another_key() -> None:
    honest = attest(failing(v2()), EthereumSigner(RECORDER))
    stmt = payload_of(honest)
    stmt["predicate"]["result"] = "PASSED"
    resigned = with_envelope(honest, stmt, EthereumSigner(ATTACKER))
    found = failures(verify_attestation(resigned.to_bytes(), RECORDER.address))
    assert list(found) == ["attestation signature"]
    assert (f"signed by {ATTACKER.address}, not by {RECORDER.address}: re-signed by another key"
            in found["attestation signature"])
    # the attacker's signature under the recorder's key id is a forgery, and recovers to the attacker
    assert resigned.attestation is not None
    envelope = resigned.attestation.model_copy(update={"signatures": [
        resigned.attestation.signatures[0].model_copy(update={"keyid": RECORDER.address})]})
    claimed = resigned.model_copy(update={"attestation": envelope})
    found = failures(verify_attestation(claimed.to_bytes(), RECORDER.address))
    assert f"(it recovers to {ATTACKER.address})" in found["attestation signature"]


def test_subject_swapped_attestation_of_another_run() -> None:
    other = v2()
    other = other.model_copy(update={"dut": other.dut.model_copy(update={"version": "0.9.0"}),
                                     "run_id": "00000000-0000-4000-8000-000000000001"})
    replayed = v2().model_copy(update={"attestation": attest(other, EthereumSigner(RECORDER)).attestation})
    found = failures(verify_attestation(replayed.to_bytes(), RECORDER.address))
    assert list(found) == ["attestation subjects"]
    assert "DUT subject dut:pm-600v-half-bridge@1.0.0 sha256" in found["attestation subjects"]
    assert "run record subject run:5f3d4162" in found["attestation subjects"]
    assert "subject dut:pm-600v-half-bridge@0.9.0" in found["attestation subjects"]


def test_subject_swapped_in_a_signed_statement() -> None:
    record = v2()
    stmt = statement(record)
    stmt["subject"][0] = {"name": "scenarios/other.yaml", "digest": {"sha256": "ab" * 32}}
    found = failures(verify_attestation(with_envelope(record, stmt, EthereumSigner(RECORDER)), RECORDER.address))
    assert list(found) == ["attestation subjects"]
    assert ("scenario subject scenarios/power_module_thermal_cycling.yaml sha256 da5e0d0101cc is missing"
            in found["attestation subjects"])
    assert "subject scenarios/other.yaml sha256 abababababab is not this record's" in found["attestation subjects"]


def test_record_changed_after_it_was_signed() -> None:
    signed = attest(v2(), EthereumSigner(RECORDER))
    samples = signed.samples.model_copy(deep=True)
    samples.columns["module.temperature"][100] = 20.0
    found = failures(verify_attestation(signed.model_copy(update={"samples": samples}), RECORDER.address))
    assert list(found) == ["attestation subjects"]
    assert ("run record subject run:5f3d4162-266a-4950-a79b-bca9487e1c1a: the attestation has sha256 "
            "8d794946e40c, the record sha256") in found["attestation subjects"]
    assert "changed after it was signed" in found["attestation subjects"]


def test_result_disagreeing_with_the_outcome() -> None:
    record = failing(v2())
    stmt = statement(record)
    stmt["predicate"]["result"] = "PASSED"
    found = failures(verify_attestation(with_envelope(record, stmt, EthereumSigner(RECORDER)), RECORDER.address))
    assert list(found) == ["attestation result"]
    assert "the attestation says PASSED, the record's outcome fail gives FAILED" in found["attestation result"]


def test_test_lists_disagreeing_with_the_verdicts() -> None:
    record = failing(v2())
    stmt = statement(record)
    p = stmt["predicate"]
    p["passedTests"], p["failedTests"] = p["passedTests"] + p["failedTests"], []
    found = failures(verify_attestation(with_envelope(record, stmt, EthereumSigner(RECORDER)), RECORDER.address))
    assert list(found) == ["attestation tests"]
    assert ("junction_temperature: the attestation lists it in passedTests, the record's verdict puts it in "
            "failedTests") in found["attestation tests"]


def test_not_an_in_toto_statement() -> None:
    record = v2()
    stmt = statement(record)
    del stmt["_type"]
    found = failures(verify_attestation(with_envelope(record, stmt, EthereumSigner(RECORDER)), RECORDER.address))
    assert list(found) == ["attestation statement"] and "_type" in found["attestation statement"]
    assert statuses(verify_attestation(record.model_copy(update={"attestation": DsseEnvelope(
        payload="", payloadType="text/plain", signatures=[])}), RECORDER.address)) == {"attestation": "failed"}
