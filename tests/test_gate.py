"""The CI gate for hardware scenarios, against the real anvil: runs recorded on the emulated bench, then gated.

Each test writes its own hardware scenario (a unique name, so a unique hash) and
records it with the Pipeline on the emulated rig, as a bench would on hardware.
"""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eth_account import Account
from web3 import Web3

from twinloop.errors import LedgerUnauthorisedError
from twinloop.harness.attestation import attest
from twinloop.harness.cli import main
from twinloop.harness.gate import gate
from twinloop.harness.pipeline import Pipeline
from twinloop.harness.record import RunRecord
from twinloop.harness.scenario import ScenarioSource, load_points
from twinloop.harness.services import KEY_ENV, SIGNING_KEY_ENV, ServiceOptions, Services
from twinloop.ledger.chain import RunLedgerClient
from twinloop.ledger.dsse import EthereumSigner, key_from_pem

DUT = "pm-gate"

FRAGMENT = """\
# the bench's device under test, shared by the gate's scenarios
dut: {id: pm-gate, version: "1.0.0"}
devices:
  module: {type: power_module}
sample: {every: 1 s}
"""


def scenario_text(name: str, *, max_c: int = 125, include: bool = False, matrix: bool = False) -> str:
    head = f"scenario: {name}\nhardware: true\n"
    if include:
        head += "include: [fragments/gate_dut.yaml]\n"
    else:
        head += FRAGMENT.split("\n", 1)[1]
    if matrix:
        head += "matrix:\n  load: [20 W, 30 W]\n"
    power = "\"${load}\"" if matrix else "30 W"
    return head + f"""\
steps:
  - set: {{signal: module.power, value: {power}}}
  - wait: 1 min
expect:
  - name: junction_temperature
    signal: module.temperature
    unit: degC
    max: {max_c}
"""


def write_scenario(folder: Path, **kw: object) -> Path:
    """A fresh hardware scenario file under ``folder/scenarios`` (with the fragment beside it)."""
    name = f"gate-{uuid.uuid4().hex[:10]}"
    (folder / "scenarios" / "fragments").mkdir(parents=True, exist_ok=True)
    (folder / "scenarios" / "fragments" / "gate_dut.yaml").write_text(FRAGMENT)
    path = folder / "scenarios" / f"{name}.yaml"
    path.write_text(scenario_text(name, **kw))  # type: ignore[arg-type]
    return path


def source_of(path: Path, point: int = 0) -> ScenarioSource:
    return load_points(path)[point]


def record_run(services: Services, source: ScenarioSource, client: RunLedgerClient | None = None, *,
               signed: bool = True) -> RunRecord:
    """Run on the emulated rig (the bench) and commit; with ``client``, recorded on chain by its account.

    A second bench signs its attestation with its own key, as ``commit`` does; ``signed=False`` leaves
    the bundle unsigned (as twinloop wrote them before it signed run evidence).
    """
    pipeline = Pipeline(services)
    record = pipeline.run(pipeline.plan(source))
    if client is None:
        return pipeline.commit(record).record
    if signed:
        record = attest(record, EthereumSigner(client.account))
    client.record(record.ledger_entry(services.ipfs.add(record.to_bytes())))  # the bundle in the shared store
    return record


def standard_key(folder: Path) -> tuple[Path, Path]:
    """A bench's ed25519 key pair as PEM files: (private, public)."""
    key = Ed25519PrivateKey.generate()
    private, public = folder / "bench-key.pem", folder / "bench.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def bench_key(services: Services, *roles: str) -> RunLedgerClient:
    """A client for a fresh, funded account holding ``roles`` (granted by the dev admin)."""
    account = Account.create()
    ledger = services.ledger
    Web3(Web3.HTTPProvider(ledger.rpc_url)).provider.make_request(
        "anvil_setBalance", [account.address, hex(10**22)])  # type: ignore[arg-type]
    for role in roles:
        ledger.grant_role(role, account.address)
    return RunLedgerClient(ledger.rpc_url, ledger.address, account)


def replace_bundle(services: Services, cid: str, edit: object) -> None:
    """The attacker's move: edit the bundle, re-add it, and put its block where the recorded CID's block was."""
    raw = json.loads(services.ipfs.cat(cid))
    edit(raw)  # type: ignore[operator]
    forged = services.ipfs.add(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode())
    store = services.ipfs.store
    store.path(cid).write_bytes(store.path(forged).read_bytes())


@pytest.fixture
def ledger(twinloop_ledger: Services) -> Services:
    return twinloop_ledger


def test_passes_with_a_recorded_passing_run(ledger: Services, tmp_path: Path) -> None:
    source = source_of(write_scenario(tmp_path))
    record = record_run(ledger, source)
    assert record.outcome == "pass"
    result = gate(source, ledger, None, False)
    assert result.passed and result.kind == "pass", result.message()
    assert result.run_id == record.run_id and result.entry.verdict == "pass"
    assert result.verification is not None and result.verification.ok


def test_fails_without_a_run_and_for_another_dut_version(ledger: Services, tmp_path: Path) -> None:
    source = source_of(write_scenario(tmp_path))
    result = gate(source, ledger, None, False)
    assert not result.passed and result.kind == "no-run" and result.missing
    assert result.reason == (f"no run recorded for scenario {source.id} (sha256 {source.sha256[:12]}…) "
                             f"and DUT {DUT} version 1.0.0")
    record_run(ledger, source)
    other = gate(source, ledger, "2.0.0", False)  # the bench tested 1.0.0, CI asks for 2.0.0
    assert other.kind == "no-run" and f"DUT {DUT} version 2.0.0" in other.reason


def test_fails_with_only_a_failing_run(ledger: Services, tmp_path: Path) -> None:
    source = source_of(write_scenario(tmp_path, max_c=20))
    record = record_run(ledger, source)
    assert record.outcome == "fail"
    result = gate(source, ledger, None, False)
    assert not result.passed and result.kind == "failed-runs"
    assert f"the only runs recorded for scenario {source.id}" in result.reason
    assert f"run {record.run_id} (fail, block" in result.reason


def test_fails_when_the_scenario_was_edited_after_the_run(ledger: Services, tmp_path: Path) -> None:
    path = write_scenario(tmp_path)
    record = record_run(ledger, source_of(path))
    path.write_text(path.read_text().replace("max: 125", "max: 150"))  # loosened after the run
    edited = source_of(path)
    result = gate(edited, ledger, None, False)
    assert not result.passed and result.kind == "scenario-changed" and result.missing
    assert f"run {record.run_id}: scenario file changed since the run" in result.reason
    assert any("has changed since the run" in d and record.run_id in d for d in result.details)


def test_fails_when_an_included_fragment_was_edited_after_the_run(ledger: Services, tmp_path: Path) -> None:
    path = write_scenario(tmp_path, include=True)
    record = record_run(ledger, source_of(path))
    assert gate(source_of(path), ledger, None, False).passed
    fragment = tmp_path / "scenarios" / "fragments" / "gate_dut.yaml"
    fragment.write_text(fragment.read_text().replace("every: 1 s", "every: 5 s"))
    result = gate(source_of(path), ledger, None, False)
    assert not result.passed and result.kind == "scenario-changed"
    assert f"run {record.run_id}: scenario file changed since the run" in result.reason
    assert any("with its included files has changed since the run" in d for d in result.details)


def test_matrix_points_are_gated_one_by_one(ledger: Services, tmp_path: Path) -> None:
    path = write_scenario(tmp_path, matrix=True)
    points = load_points(path)
    assert len(points) == 2 and points[0].sha256 != points[1].sha256
    record = record_run(ledger, points[0])
    assert gate(points[0], ledger, None, False).run_id == record.run_id
    assert gate(points[1], ledger, None, False).kind == "no-run"


def test_a_record_without_the_role_or_after_revocation_is_refused(ledger: Services, tmp_path: Path) -> None:
    source = source_of(write_scenario(tmp_path))
    outsider = bench_key(ledger)  # never held the recorder role
    with pytest.raises(LedgerUnauthorisedError, match=f"{outsider.account.address} is not a recorder"):
        record_run(ledger, source, outsider)
    revoked = bench_key(ledger, "recorder")
    ledger.ledger.revoke_role("recorder", revoked.account.address)  # revoked BEFORE the record
    with pytest.raises(LedgerUnauthorisedError, match=f"{revoked.account.address} is not a recorder"):
        record_run(ledger, source, revoked)
    assert gate(source, ledger, None, False).kind == "no-run"


def test_a_run_recorded_while_the_role_was_held_passes_after_revocation(ledger: Services,
                                                                         tmp_path: Path) -> None:
    source = source_of(write_scenario(tmp_path))
    bench = bench_key(ledger, "recorder")
    record = record_run(ledger, source, bench)
    ledger.ledger.revoke_role("recorder", bench.account.address)  # the bench is retired afterwards
    result = gate(source, ledger, None, False)
    assert result.passed, result.message()
    assert result.run_id == record.run_id and result.entry.recorder == bench.account.address


def test_a_recorder_without_the_role_at_its_block_fails(ledger: Services, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The contract refuses such records, so the role history is made to say so (as a forged chain would)."""
    source = source_of(write_scenario(tmp_path))
    record = record_run(ledger, source)
    monkeypatch.setattr(ledger.ledger, "had_role", lambda *args, **kwargs: False)
    result = gate(source, ledger, None, False)
    entry = ledger.ledger.get(record.run_id)
    assert not result.passed and result.kind == "unauthorised"
    assert (f"run {record.run_id} was recorded by {entry.recorder} which did not hold the recorder role "
            f"at block {entry.block_number}") in result.reason


def test_a_sample_edited_and_the_bundle_re_added_fails_always(ledger: Services, tmp_path: Path) -> None:
    source = source_of(write_scenario(tmp_path))
    record = record_run(ledger, source)
    cid = ledger.ledger.get(record.run_id).bundle_cid

    def cooler(raw: dict) -> None:
        raw["samples"]["columns"]["module.temperature"][30] -= 5.0

    replace_bundle(ledger, cid, cooler)
    result = gate(source, ledger, None, False)
    assert not result.passed and result.kind == "tampered" and not result.missing  # never skipped
    assert any(d.startswith("bundle integrity:") and record.run_id in d for d in result.details), result.details


def test_a_tampered_run_fails_the_gate_even_with_an_older_run_that_verifies(ledger: Services,
                                                                            tmp_path: Path) -> None:
    source = source_of(write_scenario(tmp_path))
    older = record_run(ledger, source)
    newer = record_run(ledger, source)
    assert gate(source, ledger, None, False).run_id == newer.run_id

    def cooler(raw: dict) -> None:
        raw["samples"]["columns"]["module.temperature"][30] -= 5.0

    replace_bundle(ledger, ledger.ledger.get(newer.run_id).bundle_cid, cooler)
    result = gate(source, ledger, None, False)
    assert not result.passed and result.kind == "tampered" and not result.missing
    assert result.run_id is None and older.run_id not in result.reason
    assert "contradicts the chain, and tampering with any run fails the gate" in result.reason
    assert f"bundle integrity: run {newer.run_id}" in result.reason


def test_a_verdict_changed_in_a_passing_runs_bundle_fails(ledger: Services, tmp_path: Path) -> None:
    """The recorded peak made to look cooler, the bundle re-added and put where the recorded CID's block was."""
    source = source_of(write_scenario(tmp_path))
    record = record_run(ledger, source)
    assert record.outcome == "pass"
    cid = ledger.ledger.get(record.run_id).bundle_cid

    def cooler_verdict(raw: dict) -> None:
        [verdict] = raw["verdicts"]
        verdict["value"] = round(verdict["value"] - 20.0, 2)

    before = ledger.ipfs.store.path(cid).read_bytes()
    replace_bundle(ledger, cid, cooler_verdict)
    assert ledger.ipfs.store.path(cid).read_bytes() != before
    result = gate(source, ledger, None, False)
    assert not result.passed and result.kind == "tampered" and not result.missing
    [integrity] = [d for d in result.details if d.startswith("bundle integrity:")]
    assert f"run {record.run_id}: IPFS block {cid} of file {cid} is corrupted" in integrity


def test_a_failing_run_with_its_verdict_changed_in_the_bundle_still_fails(ledger: Services,
                                                                          tmp_path: Path) -> None:
    failing = source_of(write_scenario(tmp_path, max_c=20))
    record = record_run(ledger, failing)
    cid = ledger.ledger.get(record.run_id).bundle_cid

    def passed(raw: dict) -> None:
        raw["outcome"] = "pass"
        for v in raw["verdicts"]:
            v["outcome"] = "pass"

    replace_bundle(ledger, cid, passed)
    result = gate(failing, ledger, None, False)
    assert not result.passed and result.kind == "failed-runs"  # the chain's verdict is what counts
    assert f"run {record.run_id} (fail" in result.reason


def test_one_flipped_bit_in_a_stored_block_fails(ledger: Services, tmp_path: Path) -> None:
    source = source_of(write_scenario(tmp_path))
    record = record_run(ledger, source)
    cid = ledger.ledger.get(record.run_id).bundle_cid
    block = ledger.ipfs.store.path(cid)
    data = bytearray(block.read_bytes())
    data[len(data) // 3] ^= 0x04  # one bit
    block.write_bytes(bytes(data))
    result = gate(source, ledger, None, False)
    assert not result.passed and result.kind == "tampered" and not result.missing
    assert f"bundle integrity: run {record.run_id}: IPFS block {cid} of file {cid} is corrupted" in result.reason


def test_a_bundle_not_in_the_local_store_is_named(ledger: Services, tmp_path: Path) -> None:
    source = source_of(write_scenario(tmp_path))
    record = record_run(ledger, source)
    cid = ledger.ledger.get(record.run_id).bundle_cid
    ledger.ipfs.store.path(cid).unlink()
    result = gate(source, ledger, None, False)
    assert not result.passed and result.kind == "bundle-missing" and result.missing
    assert f"its bundle {cid} is not in the local IPFS store" in result.reason
    assert "point --ipfs at a Kubo node that has them" in result.reason


def test_a_bench_signing_with_a_standard_key_passes_only_with_its_public_key(
        ledger: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private, public = standard_key(tmp_path)
    monkeypatch.setenv(SIGNING_KEY_ENV, str(private))  # the bench signs with it instead of its recorder key
    source = source_of(write_scenario(tmp_path))
    record = record_run(ledger, source)
    key = key_from_pem(public.read_bytes())
    assert record.attestation is not None and record.attestation.signatures[0].keyid == key.keyid
    refused = gate(source, ledger, None, False)
    assert not refused.passed and refused.kind == "tampered"
    assert any(d.startswith("attestation signature:") and f"key {key.keyid[:16]}" in d
               and f"not by {record_recorder(ledger, record)}" in d for d in refused.details), refused.details
    (tmp_path / "other").mkdir()
    other = key_from_pem(standard_key(tmp_path / "other")[1].read_bytes())
    assert gate(source, ledger, None, False, public_keys=[other]).kind == "tampered"  # another bench's key
    result = gate(source, ledger, None, False, public_keys=[other, key])
    assert result.passed and result.run_id == record.run_id, result.message()
    checks = {c.name: c for c in result.verification.checks}  # type: ignore[union-attr]
    assert checks["attestation signature"].detail == f"signed by ed25519 key {key.keyid[:16]}"


def record_recorder(services: Services, record: RunRecord) -> str:
    return services.ledger.get(record.run_id).recorder


def test_an_unsigned_run_fails_unless_an_attestation_is_not_required(ledger: Services, tmp_path: Path) -> None:
    source = source_of(write_scenario(tmp_path))
    record = record_run(ledger, source, bench_key(ledger, "recorder"), signed=False)
    result = gate(source, ledger, None, False)
    assert not result.passed and result.kind == "unsigned" and result.missing
    assert f"run {record.run_id}: its bundle carries no signed attestation, and the gate requires one" in (
        result.reason)
    lenient = gate(source, ledger, None, False, require_attestation=False)
    assert lenient.passed and lenient.run_id == record.run_id, lenient.message()
    checks = {c.name: c.status for c in lenient.verification.checks}  # type: ignore[union-attr]
    assert checks["attestation"] == "skipped"


def test_verify_scenario_gives_the_gates_answer_with_a_public_key_and_for_unsigned_runs(
        ledger: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    private, public = standard_key(tmp_path)
    monkeypatch.setenv(SIGNING_KEY_ENV, str(private))
    keyed = write_scenario(tmp_path)
    record_run(ledger, source_of(keyed))
    monkeypatch.delenv(SIGNING_KEY_ENV)
    unsigned = write_scenario(tmp_path)
    record_run(ledger, source_of(unsigned), bench_key(ledger, "recorder"), signed=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    where = ["--chain", ledger.ledger.rpc_url, "--contract", ledger.ledger.address, "--home", str(ledger.home)]
    assert main(["verify", "--scenario", str(keyed), *where]) == 1
    assert "(tampered)" in capsys.readouterr().out
    assert main(["verify", "--scenario", str(keyed), "--public-key", str(public), *where]) == 0
    assert main(["verify", "--scenario", str(unsigned), *where]) == 1
    assert "(unsigned)" in capsys.readouterr().out
    assert main(["verify", "--scenario", str(unsigned), "--no-require-attestation", *where]) == 0


def test_require_baseline_needs_a_reviewer_to_accept(ledger: Services, tmp_path: Path) -> None:
    source = source_of(write_scenario(tmp_path))
    older, newer = record_run(ledger, source), record_run(ledger, source)
    assert gate(source, ledger, None, False).run_id == newer.run_id  # newest first
    result = gate(source, ledger, None, True)
    assert not result.passed and result.kind == "no-baseline"
    assert result.reason.startswith(f"no reviewer-accepted baseline for scenario {source.id}")
    bench = bench_key(ledger, "recorder")  # may record, may not review
    with pytest.raises(LedgerUnauthorisedError, match=f"{bench.account.address} is not a reviewer"):
        bench.accept_baseline(older.run_id)
    assert gate(source, ledger, None, True).kind == "no-baseline"
    bench_key(ledger, "reviewer").accept_baseline(older.run_id)
    result = gate(source, ledger, None, True)
    assert result.passed and result.run_id == older.run_id, result.message()  # the accepted one, not the newest


def test_a_chain_that_cannot_be_reached_is_said_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    source = source_of(write_scenario(tmp_path))
    services = Services(ServiceOptions(home=tmp_path / "home", chain_url="http://127.0.0.1:9",
                                           contract="0x" + "11" * 20))
    result = gate(source, services, None, False)
    assert not result.passed and result.kind == "ledger-unavailable" and result.missing
    assert result.reason.startswith("ledger unreachable: chain at http://127.0.0.1:9 is unreachable")


def test_reading_a_chain_needs_no_recorder_key(ledger: Services, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    source = source_of(write_scenario(tmp_path))
    record = record_run(ledger, source)
    reader = Services(ServiceOptions(home=ledger.home, chain_url=ledger.ledger.rpc_url,
                                         contract=ledger.ledger.address))
    assert gate(source, reader, None, False).run_id == record.run_id
    with pytest.raises(Exception, match="only reads RunLedger"):
        reader.ledger.grant_role("recorder", reader.ledger.account.address)


@pytest.mark.slow
def test_the_plugin_gates_hardware_scenarios(ledger: Services, pytester: pytest.Pytester,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``pytest scenarios/ --chain URL --contract ADDR`` in a project, as CI runs it (no recorder key)."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    recorded = write_scenario(pytester.path, include=True)
    record_run(ledger, source_of(recorded))
    missing = write_scenario(pytester.path)
    chain = ["-p", "no:cacheprovider", "-rs", "scenarios", "--chain", ledger.ledger.rpc_url,
             "--contract", ledger.ledger.address, "--ledger", str(ledger.home)]
    junit = pytester.path / "junit.xml"

    failed = pytester.runpytest_subprocess(*chain, f"--junitxml={junit}")
    failed.assert_outcomes(passed=1, failed=1)
    out = failed.stdout.str()
    assert f"no run recorded for scenario {missing.stem} (sha256" in out and "Traceback" not in out
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    props = {p.get("name"): p.get("value") for p in cases[recorded.stem].iter("property")}
    assert props["gate"] == "pass" and props["outcome"] == "pass" and len(props["run_id"]) == 36
    assert props["bundle_cid"].startswith("Qm") and props["recorder"].startswith("0x")

    skipped = pytester.runpytest_subprocess(*chain, "--ledger-missing=skip")
    skipped.assert_outcomes(passed=1, skipped=1)
    assert "needs a physical rig (hardware: true) and the ledger has no verified passing run" in skipped.stdout.str()

    baseline = pytester.runpytest_subprocess(*chain, "--require-baseline")
    baseline.assert_outcomes(failed=2)
    assert "no reviewer-accepted baseline for scenario" in baseline.stdout.str()


@pytest.mark.slow
def test_the_plugin_takes_the_benches_public_keys_and_requires_attestations(
        ledger: Services, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--public-key PEM`` / ``twinloop_public_keys``; an unsigned run fails unless ``--no-require-attestation``."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    private, public = standard_key(pytester.path)
    monkeypatch.setenv(SIGNING_KEY_ENV, str(private))
    keyed = write_scenario(pytester.path)
    record_run(ledger, source_of(keyed))  # signed with the bench's standard key
    monkeypatch.delenv(SIGNING_KEY_ENV)
    unsigned = write_scenario(pytester.path)
    record_run(ledger, source_of(unsigned), bench_key(ledger, "recorder"), signed=False)
    chain = ["-p", "no:cacheprovider", "-rs", "scenarios", "--chain", ledger.ledger.rpc_url,
             "--contract", ledger.ledger.address, "--ledger", str(ledger.home)]

    refused = pytester.runpytest_subprocess(*chain)
    refused.assert_outcomes(failed=2)
    out = refused.stdout.str()
    assert "attestation signature: run" in out and "its bundle carries no signed attestation" in out
    with_key = pytester.runpytest_subprocess(*chain, "--public-key", str(public))
    with_key.assert_outcomes(passed=1, failed=1)
    out = with_key.stdout.str()
    assert "its bundle carries no signed attestation" in out and "attestation signature: run" not in out
    pytester.runpytest_subprocess(*chain, "--public-key", str(public),
                                  "--no-require-attestation").assert_outcomes(passed=2)
    skipped = pytester.runpytest_subprocess(*chain, "--public-key", str(public), "--ledger-missing=skip")
    skipped.assert_outcomes(passed=1, skipped=1)  # unsigned evidence is missing evidence, not forged

    pytester.makeini("[pytest]\ntwinloop_public_keys = bench.pub.pem\ntwinloop_require_attestation = false\n")
    pytester.runpytest_subprocess(*chain).assert_outcomes(passed=2)
    pytester.runpytest_subprocess(*chain, "--require-attestation").assert_outcomes(passed=1, failed=1)


def test_the_plugin_says_when_the_chain_is_unreachable(pytester: pytest.Pytester,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    write_scenario(pytester.path)
    args = ["-p", "no:cacheprovider", "-rs", "scenarios", "--chain", "http://127.0.0.1:9",
            "--contract", "0x" + "11" * 20, "--ledger", str(pytester.path / "home")]
    failed = pytester.runpytest_subprocess(*args)
    failed.assert_outcomes(failed=1)
    out = failed.stdout.str()
    assert "ledger unreachable: chain at http://127.0.0.1:9 is unreachable" in out
    assert "direct cause" not in out and "Traceback" not in out
    pytester.runpytest_subprocess(*args, "--ledger-missing=skip").assert_outcomes(skipped=1)
