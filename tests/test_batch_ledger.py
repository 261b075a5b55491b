"""Batches of runs: RFC 6962 Merkle trees, Certificate-Transparency-style proof mutations, RunLedger.record_batch.

The tree vectors are those of the Certificate Transparency Go code
(github.com/transparency-dev/merkle, proof/verify_test.go at commit
02194e9afb6c1d95b5381350007963aa70fff472, the same 8 leaves as the CT C++
tests): the roots of the trees over the first 1..8 leaves and four audit
paths. The mutations follow that file's ``corruptInclusionProof``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from twinloop.errors import (
    BatchAlreadyRecordedError,
    BatchNotFoundError,
    LedgerError,
    LedgerTamperedError,
    LedgerUnauthorisedError,
)
from twinloop.harness.batch_verify import verify_batched_run
from twinloop.harness.record import RunRecord
from twinloop.harness.services import Services
from twinloop.ledger import bundle, merkle
from twinloop.ledger.batch import LEAF_SIZE, InclusionProof, build_manifest, parse_manifest, run_leaf
from twinloop.ledger.chain import LedgerEntry, RunLedgerClient

BUNDLE = Path(__file__).parent / "data" / "run-v2-thermal-cycling.json"

# --- RFC 6962 vectors (transparency-dev/merkle proof/verify_test.go) ------------------------------------

LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
ROOTS = [bytes.fromhex(h) for h in (  # MTH of the first 1, 2, ..., 8 leaves
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
EMPTY_ROOT = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
PROOFS = [  # (leaf index, tree size, audit path)
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]


def test_roots_match_the_rfc6962_vectors() -> None:
    assert merkle.root([]) == EMPTY_ROOT
    for n, expected in enumerate(ROOTS, start=1):
        assert merkle.root(LEAVES[:n]) == expected, n


@pytest.mark.parametrize(("index", "size", "path"), PROOFS)
def test_audit_paths_match_the_rfc6962_vectors(index: int, size: int, path: list[str]) -> None:
    proof = merkle.inclusion_proof(index, LEAVES[:size])
    assert [p.hex() for p in proof] == path
    assert merkle.verify_inclusion(LEAVES[index], index, size, proof, ROOTS[size - 1])


def test_every_leaf_of_every_tree_up_to_33_verifies() -> None:
    data = [bytes([i]) * (i % 5) for i in range(33)]
    for n in range(1, 34):
        root = merkle.root(data[:n])
        every = merkle.inclusion_proofs(data[:n])
        for i in range(n):
            proof = merkle.inclusion_proof(i, data[:n])
            assert every[i] == proof and merkle.verify_inclusion(data[i], i, n, proof, root), (i, n)


def _mutations(index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes) -> dict[str, tuple]:
    """CT's corruptInclusionProof (and a missing first sibling, and index == size): each must be rejected."""
    probes: dict[str, tuple] = {
        "wrong index -1": (leaf, index - 1, size, proof, root),
        "wrong index +1": (leaf, index + 1, size, proof, root),
        "wrong index ^2": (leaf, index ^ 2, size, proof, root),
        "wrong tree size *2": (leaf, index, size * 2, proof, root),
        "wrong tree size /2": (leaf, index, size // 2, proof, root),
        "wrong tree size: index + 1 - 1": (leaf, index, index, proof, root),
        "wrong leaf": (b"WrongLeaf", index, size, proof, root),
        "wrong root: empty tree": (leaf, index, size, proof, EMPTY_ROOT),
        "wrong root: random": (leaf, index, size, proof, SOME_HASH),
        "extra sibling: trailing empty": (leaf, index, size, [*proof, b""], root),
        "extra sibling: trailing root": (leaf, index, size, [*proof, root], root),
        "extra sibling: preceding empty": (leaf, index, size, [b"", *proof], root),
        "extra sibling: preceding root": (leaf, index, size, [root, *proof], root),
    }
    for i in range(len(proof)):
        changed = list(proof)
        changed[i] = bytes([changed[i][0] ^ 8]) + changed[i][1:]
        probes[f"changed sibling {i}"] = (leaf, index, size, changed, root)
    if proof:
        probes["missing sibling (last)"] = (leaf, index, size, proof[:-1], root)
        probes["missing sibling (first)"] = (leaf, index, size, proof[1:], root)
    if len(proof) > 1:
        probes["extra sibling: inserted"] = (leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], root)
    return probes


@pytest.mark.parametrize(("index", "size", "path"), PROOFS)
def test_ct_mutation_vectors_are_rejected(index: int, size: int, path: list[str]) -> None:
    proof = [bytes.fromhex(p) for p in path]
    root, leaf = ROOTS[size - 1], LEAVES[index]
    assert merkle.verify_inclusion(leaf, index, size, proof, root)
    accepted = [name for name, args in _mutations(index, size, proof, root, leaf).items()
                if merkle.verify_inclusion(*args)]
    assert accepted == []


def test_the_tree_size_is_not_always_bound_by_the_path_so_it_comes_from_the_chain() -> None:
    """Leaf 1 has the same path shape in trees of 5 and 6 leaves: the size a verifier uses must be the chain's."""
    index, size, path = PROOFS[3]
    proof = [bytes.fromhex(p) for p in path]
    assert merkle.verify_inclusion(LEAVES[index], index, size + 1, proof, ROOTS[size - 1])


def test_a_leaf_hashed_as_a_node_is_rejected() -> None:
    """Second preimage: an inner node's children presented as one leaf's data, or a node hash as a leaf hash."""
    leaves = LEAVES[:4]
    l0, l1, l2, l3 = (merkle.leaf_hash(d) for d in leaves)
    node01, node23 = merkle.node_hash(l0, l1), merkle.node_hash(l2, l3)
    root = ROOTS[3]
    assert merkle.node_hash(node01, node23) == root
    # without domain separation, "leaf" l0||l1 at index 0 of a 2-leaf tree would hash to the same root
    assert not merkle.verify_inclusion(l0 + l1, 0, 2, [node23], root)
    # the node's hash taken as a leaf hash does not verify as a leaf of the 4-leaf tree either
    assert not merkle.verify_inclusion_hash(node01, 0, 4, [node23], root)
    assert not merkle.verify_inclusion_hash(node01, 0, 4, merkle.inclusion_proof(0, leaves), root)
    # and a leaf's data made of two hashes is hashed with the 0x00 prefix, never 0x01
    assert merkle.leaf_hash(l0 + l1) != node01


def test_malformed_inputs_are_rejected() -> None:
    proof = merkle.inclusion_proof(0, LEAVES[:1])
    assert proof == [] and merkle.verify_inclusion(LEAVES[0], 0, 1, proof, ROOTS[0])
    for index, size in ((0, 0), (1, 0), (1, 1), (2, 1), (-1, 1)):
        assert not merkle.verify_inclusion(LEAVES[0], index, size, [], ROOTS[0]), (index, size)
    assert not merkle.verify_inclusion(LEAVES[0], 0, 1, [], b"")  # wrong root size
    with pytest.raises(ValueError):
        merkle.inclusion_proof(8, LEAVES)


# --- a run's leaf and the manifest ---------------------------------------------------------------------------

def _entry(i: int = 0, **overrides: str) -> LedgerEntry:
    from twinloop.ledger.ipfs import cid_of

    fields = {"run_id": str(uuid.UUID(int=i + 1)), "scenario_hash": hashlib.sha256(f"s{i % 3}".encode()).hexdigest(),
              "dut_id": "pm-600v-half-bridge", "dut_version": "1.0.0", "bundle_cid": cid_of(f"bundle {i}".encode()),
              "verdict": "pass"}
    fields.update(overrides)
    return LedgerEntry(**fields)


def test_the_run_leaf_is_fixed_width_and_binds_every_field() -> None:
    base = _entry()
    leaf = run_leaf(base)
    assert len(leaf) == LEAF_SIZE == 114 and leaf[0] == 1
    assert leaf[1:17] == uuid.UUID(base.run_id).bytes and leaf[-1] == 1
    for change in ({"run_id": str(uuid.uuid4())}, {"scenario_hash": "00" * 32}, {"dut_id": "other"},
                   {"dut_version": "1.0.1"}, {"bundle_cid": _entry(1).bundle_cid}, {"verdict": "fail"}):
        assert run_leaf(replace(base, **change)) != leaf, change
    # dut_id/dut_version are bound through keccak(abi_encode(...)), so shifting text between them changes the leaf
    assert run_leaf(replace(base, dut_id="a", dut_version="bc")) != run_leaf(replace(base, dut_id="ab", dut_version="c"))


def test_the_manifest_round_trips_and_refuses_edits() -> None:
    entries = [_entry(i) for i in range(5)]
    manifest, data = build_manifest(entries)
    parsed = parse_manifest(data)
    assert parsed.root == manifest.root == merkle.root([run_leaf(e) for e in entries])
    assert [r.run_id for r in parsed.runs] == [e.run_id for e in entries]
    doc = json.loads(data)
    doc["runs"][2]["verdict"] = "fail"
    with pytest.raises(LedgerTamperedError, match="hash to root"):
        parse_manifest(bundle.encode(doc))
    doc = json.loads(data)
    doc["runs"].append(doc["runs"][0])
    doc["size"] += 1
    with pytest.raises(LedgerTamperedError, match="appears twice"):
        parse_manifest(bundle.encode(doc))
    with pytest.raises(LedgerError, match="twice"):
        build_manifest([entries[0], entries[0]])
    with pytest.raises(LedgerError, match="at least one"):
        build_manifest([])


# --- on anvil ------------------------------------------------------------------------------------------------

@pytest.fixture
def services(twinloop_ledger: Services) -> Services:
    """The session's embedded anvil and IPFS (skips without anvil unless TWINLOOP_REQUIRE_ANVIL is set)."""
    return twinloop_ledger


def _fresh(run_id: str) -> RunRecord:
    record = RunRecord.from_bytes(BUNDLE.read_bytes())
    return record.model_copy(update={"run_id": run_id, "attestation": None})


def _batch_of_bundles(services: Services, n: int, tag: int) -> tuple[list[RunRecord], list[LedgerEntry]]:
    """``n`` real bundles (thermal cycling under new run ids), attested by the recorder and on IPFS."""
    from twinloop.harness.attestation import attest
    from twinloop.ledger.dsse import EthereumSigner

    signer = EthereumSigner(services.ledger.account)
    records = [attest(_fresh(str(uuid.UUID(int=(tag << 32) + i))), signer) for i in range(n)]
    return records, [r.ledger_entry(services.ipfs.add(r.to_bytes())) for r in records]


def _gas(client: RunLedgerClient, tx_hash: str) -> int:
    return int(Web3(Web3.HTTPProvider(client.rpc_url)).eth.get_transaction_receipt(tx_hash)["gasUsed"])


def test_a_batch_of_10_is_one_slot_and_every_run_verifies_by_its_proof(services: Services) -> None:
    ledger = services.ledger
    records, entries = _batch_of_bundles(services, 10, 0xB10)
    receipt = ledger.record_batch(entries, services.ipfs)
    assert receipt.gas_used < 60_000 and set(receipt.proofs) == {e.run_id for e in entries}
    batch = ledger.get_batch(receipt.root)
    assert (batch.size, batch.manifest_cid, batch.tx_hash, batch.tx_status) == (
        10, receipt.manifest_cid, receipt.tx_hash, 1)
    assert batch.recorder == ledger.account.address and "recorder" in batch.recorder_roles
    manifest = ledger.read_manifest(batch, services.ipfs)
    assert [r.run_id for r in manifest.runs] == [e.run_id for e in entries] and manifest.index_of(entries[7].run_id) == 7
    for entry in entries:
        proof = receipt.proofs[entry.run_id]
        assert proof.verifies(run_leaf(entry), bytes.fromhex(receipt.root[2:]))
        v = verify_batched_run(entry.run_id, services, root=receipt.root, proof=proof, no_scenario_file=True,
                               require_attestation=True)
        assert v.ok, [c for c in v.checks if c.status == "failed"]
        names = {c.name for c in v.checks}
        assert {"transaction", "recorder role", "batch manifest", "in batch", "inclusion proof", "batch leaf",
                "bundle integrity", "attestation signature", "record matches chain",
                "re-judged verdicts"} <= names
    by_cid = verify_batched_run(entries[3].run_id, services, manifest_cid=receipt.manifest_cid, no_scenario_file=True)
    assert by_cid.ok and by_cid.entry.tx_hash == receipt.tx_hash
    with pytest.raises(BatchAlreadyRecordedError, match=receipt.root):
        ledger.record_batch(entries, services.ipfs)


@pytest.fixture(scope="module")
def batch_of_6(twinloop_ledger: Services) -> tuple[list[LedgerEntry], object]:
    """Six real bundles recorded in one batch (shared by the mutation tests: a batch is written once)."""
    _, entries = _batch_of_bundles(twinloop_ledger, 6, 0xB15)
    return entries, twinloop_ledger.ledger.record_batch(entries, twinloop_ledger.ipfs)


def _mutated_proofs(good: InclusionProof, root: bytes, leaf: bytes) -> dict[str, InclusionProof]:
    """``_mutations`` as InclusionProofs (index, tree size, path, leaf hash); the wrong roots are tested apart."""
    out = {}
    for name, (m_leaf, m_index, m_size, m_path, m_root) in _mutations(
            good.index, good.tree_size, good.path_bytes(), root, leaf).items():
        if m_root == root:
            out[name] = replace(good, index=m_index, tree_size=m_size, path=tuple(p.hex() for p in m_path),
                                leaf_hash=merkle.leaf_hash(m_leaf).hex())
    return out


@pytest.mark.parametrize("via", ["proof and bundle", "manifest"])
@pytest.mark.parametrize("index", [0, 5])
def test_ct_mutation_vectors_are_rejected_by_verify_batched_run(services: Services, batch_of_6: tuple,
                                                                index: int, via: str) -> None:
    """Each mutation of a real run's proof fails "inclusion proof", verified from its bundle or from the manifest."""
    entries, receipt = batch_of_6
    run = entries[index]
    good = receipt.proofs[run.run_id]
    bundle_cid = run.bundle_cid if via == "proof and bundle" else None

    def check(proof: InclusionProof, cid: str | None = bundle_cid) -> set[str]:
        v = verify_batched_run(run.run_id, services, root=receipt.root, proof=proof, bundle_cid=cid,
                               no_scenario_file=True)
        return {c.name for c in v.checks if c.status == "failed"}

    assert check(good) == set()
    mutated = _mutated_proofs(good, bytes.fromhex(receipt.root[2:]), run_leaf(run))
    assert {"wrong index +1", "wrong tree size *2", "wrong leaf", "changed sibling 0", "missing sibling (last)",
            "extra sibling: inserted"} <= set(mutated)
    passed = [name for name, proof in mutated.items() if "inclusion proof" not in check(proof)]
    assert passed == []
    if via == "proof and bundle":  # the leaf itself wrong: another run's bundle under this run's proof
        assert "inclusion proof" in check(good, entries[(index + 1) % 6].bundle_cid)
    for wrong_root in (EMPTY_ROOT, SOME_HASH):  # a root that is not on chain has no batch to be proven in
        with pytest.raises(BatchNotFoundError):
            verify_batched_run(run.run_id, services, root="0x" + wrong_root.hex(), proof=good, bundle_cid=bundle_cid,
                               no_scenario_file=True)


def test_a_run_is_verified_from_its_bundle_and_proof_without_the_manifest(services: Services,
                                                                          batch_of_6: tuple) -> None:
    entries, receipt = batch_of_6
    run = entries[2]
    v = verify_batched_run(run.run_id, services, root=receipt.root, proof=receipt.proofs[run.run_id],
                           bundle_cid=run.bundle_cid, no_scenario_file=True, require_attestation=True)
    assert v.ok, [c for c in v.checks if c.status == "failed"]
    names = [c.name for c in v.checks]
    assert "inclusion proof" in names and "batch manifest" not in names and "in batch" not in names
    assert v.entry.tx_hash == receipt.tx_hash and v.entry.bundle_cid == run.bundle_cid


def test_a_run_not_in_the_batch_is_refused(services: Services) -> None:
    _, entries = _batch_of_bundles(services, 3, 0xB11)
    receipt = services.ledger.record_batch(entries, services.ipfs)
    stranger = str(uuid.uuid4())
    v = verify_batched_run(stranger, services, root=receipt.root, no_scenario_file=True)
    assert not v.ok and v.entry is None
    [failed] = [c for c in v.checks if c.status == "failed"]
    assert failed.name == "in batch" and stranger in failed.detail and receipt.root in failed.detail


def test_a_wrong_root_is_refused(services: Services) -> None:
    _, entries = _batch_of_bundles(services, 3, 0xB12)
    receipt = services.ledger.record_batch(entries, services.ipfs)
    wrong = "0x" + hashlib.sha256(b"not a batch").hexdigest()
    with pytest.raises(BatchNotFoundError, match=f"no batch with root {wrong}"):
        verify_batched_run(entries[0].run_id, services, root=wrong, no_scenario_file=True)
    # a valid proof for another tree does not verify against this root
    other_manifest, _ = build_manifest([_entry(i) for i in range(3)])
    foreign = other_manifest.proof(0)
    v = verify_batched_run(entries[0].run_id, services, root=receipt.root, proof=foreign, no_scenario_file=True)
    assert [c.name for c in v.checks if c.status == "failed"] == ["inclusion proof"]


def test_a_manifest_edited_after_the_fact_is_refused(services: Services) -> None:
    _, entries = _batch_of_bundles(services, 4, 0xB13)
    receipt = services.ledger.record_batch(entries, services.ipfs)
    doc = json.loads(services.ipfs.cat(receipt.manifest_cid))
    doc["runs"][1]["verdict"] = "fail"  # rewrite history for one run, and re-root the manifest to match
    edited_entries = [LedgerEntry(**r) for r in doc["runs"]]
    edited, data = build_manifest(edited_entries)
    edited_cid = services.ipfs.add(data)
    # named by its CID: it is not the manifest the chain recorded, and its root is not on chain
    with pytest.raises(BatchNotFoundError):
        verify_batched_run(entries[1].run_id, services, manifest_cid=edited_cid, no_scenario_file=True)
    v = verify_batched_run(entries[1].run_id, services, root=receipt.root, manifest_cid=edited_cid,
                           no_scenario_file=True)
    [failed] = [c for c in v.checks if c.status == "failed"]
    assert failed.name == "batch manifest" and "is not the manifest recorded" in failed.detail
    # the edited manifest kept the old root (only the verdict changed): its runs do not hash to it
    doc["root"] = receipt.root[2:]
    with pytest.raises(LedgerTamperedError, match="hash to root"):
        parse_manifest(bundle.encode(doc))
    # the manifest's blocks rewritten in the store: the chain's CID no longer matches the bytes
    store = services.ipfs.store  # type: ignore[union-attr]
    store.path(receipt.manifest_cid).write_bytes(store.get(edited_cid))
    v = verify_batched_run(entries[1].run_id, services, root=receipt.root, no_scenario_file=True)
    [failed] = [c for c in v.checks if c.status == "failed"]
    assert failed.name == "batch manifest" and not v.ok


def test_a_bundle_that_disagrees_with_its_leaf_is_refused(services: Services) -> None:
    records, entries = _batch_of_bundles(services, 2, 0xB14)
    entries[0] = replace(entries[0], verdict="fail")  # batched with a verdict its bundle does not have
    receipt = services.ledger.record_batch(entries, services.ipfs)
    v = verify_batched_run(entries[0].run_id, services, root=receipt.root, no_scenario_file=True)
    failed = {c.name for c in v.checks if c.status == "failed"}
    assert {"batch leaf", "re-judged verdicts"} <= failed and "inclusion proof" not in failed


def test_only_recorders_record_batches(services: Services) -> None:
    ledger = services.ledger
    outsider = Account.create()
    services._chain.fund(outsider.address)
    client = RunLedgerClient(ledger.rpc_url, ledger.address, outsider)
    with pytest.raises(LedgerUnauthorisedError, match="not a recorder"):
        client.record_batch([_entry(100)], services.ipfs)
    reader = RunLedgerClient(ledger.rpc_url, ledger.address, None)
    with pytest.raises(LedgerUnauthorisedError, match="only reads"):
        reader.record_batch([_entry(101)], services.ipfs)


def test_single_record_gas_is_unchanged_and_a_batch_of_100_is_under_2000_per_run(services: Services) -> None:
    ledger = services.ledger
    single = _gas(ledger, ledger.record(_entry(200, run_id=str(uuid.uuid4()))))
    assert single < 60_000  # ~52k, as before batches
    entries = [_entry(300 + i, run_id=str(uuid.uuid4())) for i in range(100)]
    receipt = ledger.record_batch(entries, services.ipfs)
    assert receipt.gas_used / 100 < 2_000, receipt.gas_used


def test_bench_json_carries_the_batch_gas_per_run(services: Services, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from twinloop.ledger import bench

    monkeypatch.setattr(bench, "QUICK_RUNS", 2)
    monkeypatch.setattr(bench, "SMALL", 1)
    monkeypatch.setattr(bench, "IMPORT_MB", 1)  # the speed rows, small
    monkeypatch.setattr(bench, "LONG_RUN_ROWS", 600)
    monkeypatch.setattr(bench, "QUICK_AMONG", 5)
    assert bench.main(["--quick", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    per_run = figures["gas_per_run"]
    assert figures["import_mb_per_s"] > 0 and figures["commit_s"] > 0 and figures["verify_s"] > 0
    assert figures["long_run_verified"] and figures["among_verified"] and figures["verify_among_s"] > 0
    assert figures["verify_among_runs"] == 5 and figures["get_among_ms"] > 0  # the same keys, quick or full
    if figures["ipfs_cid_mb_per_s"] is not None:  # Debian's ipfs_cid is installed: the same CID as ours
        assert figures["ipfs_cid_same_cid"] and figures["import_vs_ipfs_cid"] > 0
        assert figures["ipfs_cid_startup_s"] >= 0
    assert {"single", "batch_10", "batch_100", "batch_1000"} <= set(per_run)
    assert per_run["batch_100"] < 2_000 and per_run["batch_1000"] < per_run["batch_100"] < per_run["batch_10"]
    assert 45_000 < per_run["single"] < 60_000


def test_twinloop_verify_checks_a_batched_run_by_root_or_manifest(services: Services,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from twinloop.harness.cli import main

    ledger = services.ledger
    _, entries = _batch_of_bundles(services, 3, 0xC11)
    receipt = ledger.record_batch(entries, services.ipfs)
    where = ["--chain", ledger.rpc_url, "--contract", ledger.address, "--home", str(services.home),
             "--no-scenario-file"]
    for batch in (receipt.root, receipt.manifest_cid):
        assert main(["verify", entries[1].run_id, "--batch", batch, *where]) == 0
        out = capsys.readouterr().out
        assert "inclusion proof" in out and "VERIFIED" in out and "NOT VERIFIED" not in out
    other, = _batch_of_bundles(services, 1, 0xC12)[1]
    ledger.record(other)
    assert main(["verify", other.run_id, "--batch", receipt.root, *where]) == 1  # not in that batch
    assert "NOT VERIFIED" in capsys.readouterr().out


TINY_FLEET = """\
fleet: batched-pumps
seed: 5
horizon: 30 d
dt: 1 h
groups:
  - name: pumps
    model: pump_bearing
    units: 40
    params: {k: 1.2e-8}
    vary: {k: {lognormal: 0.4}}
    profile: {speed: 1480 rpm, load: {cycle: [100, 60], every: 12 h}}
"""


def _forged_fleet(path: Path) -> "FleetRecord":
    """A fleet record (no Ray: simulated in this process) whose first group claims one failure fewer."""
    from twinloop.harness.fleet_record import FleetInfo, FleetRecord, FleetRun, GroupOutcome
    from twinloop.harness.runner import software_versions
    from twinloop.twins.fleet import run_local
    from twinloop.twins.fleet_spec import load_fleet

    source = load_fleet(path)
    plan = source.plan
    groups = [GroupOutcome.model_validate(vars(g)) for g in run_local(plan)]
    groups[0] = groups[0].model_copy(update={"failed": groups[0].failed + 1})
    return FleetRecord(run_id=str(uuid.uuid4()), fleet=FleetInfo(name=plan.fleet, path=str(path),
                                                                 sha256=source.sha256, text=source.text),
                       seed=plan.seed, horizon_s=plan.horizon, dt_s=plan.dt, steps=plan.steps, units=plan.units,
                       software=software_versions(), started_at="2025-01-01T00:00:00Z",
                       finished_at="2025-01-01T00:00:01Z", groups=groups,
                       run=FleetRun(ray="local", shards=1, array="numpy", wall_s=1.0, stepping_s=1.0, twin_steps=1,
                                    twin_steps_per_s=1.0, restarts=0))


def test_verify_batch_takes_a_cidv1_manifest_and_honours_no_resimulate(services: Services, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from twinloop.harness.cli import main

    ledger = services.ledger
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(TINY_FLEET)
    fleet = _forged_fleet(fleet_file)
    _, entries = _batch_of_bundles(services, 2, 0xC13)
    entries.append(fleet.ledger_entry(services.ipfs.add(fleet.to_bytes())))
    receipt = ledger.record_batch(entries, services.ipfs)
    where = ["--chain", ledger.rpc_url, "--contract", ledger.address, "--home", str(services.home)]

    # the manifest named by its CIDv1 (raw leaf, bafk...): the same bytes as the CIDv0 on chain
    v1 = services.ipfs.add(services.ipfs.cat(receipt.manifest_cid), cid_version=1)
    assert v1.startswith("bafk")
    assert main(["verify", entries[0].run_id, "--batch", v1, "--no-scenario-file", *where]) == 0
    out = capsys.readouterr().out
    assert "inclusion proof" in out and "NOT VERIFIED" not in out
    assert main(["verify", entries[0].run_id, "--batch", "not-a-cid", "--no-scenario-file", *where]) == 2
    assert "neither a batch root" in capsys.readouterr().err

    # the forged fleet: caught by simulating it again, skipped (and so verified) with --no-resimulate
    assert main(["verify", fleet.run_id, "--batch", receipt.root, "--scenario", str(fleet_file), *where]) == 1
    assert "re-simulated" in capsys.readouterr().out
    assert main(["verify", fleet.run_id, "--batch", receipt.root, "--scenario", str(fleet_file),
                 "--no-resimulate", *where]) == 0
    out = capsys.readouterr().out
    assert "not simulated again" in out and "NOT VERIFIED" not in out
