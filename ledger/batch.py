"""Batches of runs: each run's Merkle leaf, the batch manifest, and inclusion proofs.

A batch is recorded on chain as the RFC 6962 Merkle root over its runs'
leaves (``twinloop.ledger.merkle``), its size and the digest of its manifest;
nothing per run is written on chain.

**The leaf of a run** (``run_leaf``, version 1) is 114 bytes, fixed width, so
it has one encoding only::

    0x01                       leaf encoding version (1 byte)
    run_id                     the UUID's 16 bytes
    scenario_hash              32 bytes (sha256 of the scenario text)
    dut_key                    32 bytes: keccak256(abi_encode(dut_id, dut_version)), as RunRecorded indexes it
    bundle_digest              32 bytes: the sha2-256 digest inside the bundle's CIDv0
    verdict                    1 byte: 1 pass, 2 fail, 3 error (the contract's codes)

and the tree hashes it as ``SHA-256(0x00 || leaf)``.

**The manifest** is canonical JSON (RFC 8785, like a run bundle), stored on
IPFS; its CIDv0's digest goes on chain next to the root::

    {"format": "twinloop.batch/1", "leaf": "twinloop.run-leaf/1", "size": N,
     "root": "<64 hex>", "runs": [{"run_id", "scenario_hash", "dut_id",
     "dut_version", "bundle_cid", "verdict"}, ...]}      # in leaf order

Anyone holding the manifest recomputes every leaf, the root and any run's
inclusion proof; ``parse_manifest`` refuses a manifest whose runs do not hash
to the root it names.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from twinloop.errors import BatchProofError, LedgerError
from twinloop.ledger import bundle, merkle
from twinloop.ledger.entries import VERDICTS, LedgerEntry, dut_key, record_args

MANIFEST_FORMAT = "twinloop.batch/1"
LEAF_FORMAT = "twinloop.run-leaf/1"
LEAF_VERSION = 1
LEAF_SIZE = 114
_RUN_FIELDS = ("run_id", "scenario_hash", "dut_id", "dut_version", "bundle_cid", "verdict")


def run_leaf(entry: Any) -> bytes:
    """The 114-byte Merkle leaf of one run (a LedgerEntry, or anything with its six fields)."""
    run_id, scenario_hash, dut_id, dut_version, digest, verdict = record_args(entry)
    assert verdict in VERDICTS.values()
    key = bytes.fromhex(dut_key(dut_id, dut_version)[2:])
    leaf = bytes([LEAF_VERSION]) + run_id + scenario_hash + key + digest + bytes([verdict])
    assert len(leaf) == LEAF_SIZE
    return leaf


@dataclass(frozen=True)
class InclusionProof:
    """Where one run sits in a batch's tree, and the audit path from its leaf to the root."""

    run_id: str
    index: int
    tree_size: int
    leaf_hash: str  # hex, SHA-256(0x00 || run_leaf)
    path: tuple[str, ...]  # hex sibling hashes, from the leaf up

    def path_bytes(self) -> list[bytes]:
        return [bytes.fromhex(h) for h in self.path]

    def verifies(self, leaf: bytes, root: bytes) -> bool:
        """Whether this proof takes ``leaf`` (the run's leaf bytes) to ``root``."""
        return merkle.verify_inclusion(leaf, self.index, self.tree_size, self.path_bytes(), root)


@dataclass(frozen=True)
class Manifest:
    """A batch manifest, parsed and checked against the root it names."""

    root: bytes
    runs: tuple[Any, ...]  # LedgerEntry, in leaf order
    leaves: tuple[bytes, ...] = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.runs)

    def index_of(self, run_id: str) -> int:
        """The leaf index of ``run_id``; RunNotFoundError if the run is not in this batch."""
        from twinloop.errors import RunNotFoundError

        wanted = _canonical_run_id(run_id)
        for i, entry in enumerate(self.runs):
            if entry.run_id == wanted:
                return i
        raise RunNotFoundError(f"run {wanted} is not in the batch with root 0x{self.root.hex()}")

    def proof(self, index: int, path: list[bytes] | None = None) -> InclusionProof:
        """Leaf ``index``'s inclusion proof (``path``: its audit path, if already computed)."""
        path = merkle.inclusion_proof(index, self.leaves) if path is None else path
        return InclusionProof(run_id=self.runs[index].run_id, index=index, tree_size=self.size,
                              leaf_hash=merkle.leaf_hash(self.leaves[index]).hex(),
                              path=tuple(p.hex() for p in path))

    def proofs(self) -> dict[str, InclusionProof]:
        """Every run's inclusion proof, by run id."""
        paths = merkle.inclusion_proofs(self.leaves)
        return {run.run_id: self.proof(i, paths[i]) for i, run in enumerate(self.runs)}


def _canonical_run_id(run_id: str) -> str:
    try:
        return str(uuid.UUID(run_id))
    except (ValueError, TypeError, AttributeError) as err:
        raise LedgerError(f"run id {run_id!r} is not a UUID") from err


def build_manifest(entries: list[Any]) -> tuple[Manifest, bytes]:
    """The manifest of a batch of runs, in the order given, and its canonical bytes."""

    if not entries:
        raise LedgerError("a batch needs at least one run")
    runs, seen = [], set()
    for e in entries:
        run = LedgerEntry(**{k: getattr(e, k) for k in _RUN_FIELDS})
        run = LedgerEntry(**{**{k: getattr(run, k) for k in _RUN_FIELDS},
                             "run_id": _canonical_run_id(run.run_id),
                             "scenario_hash": run.scenario_hash.removeprefix("0x").lower()})
        if run.run_id in seen:
            raise LedgerError(f"run {run.run_id} appears twice in the batch")
        seen.add(run.run_id)
        runs.append(run)
    leaves = tuple(run_leaf(r) for r in runs)
    manifest = Manifest(root=merkle.root(leaves), runs=tuple(runs), leaves=leaves)
    data = bundle.encode({
        "format": MANIFEST_FORMAT, "leaf": LEAF_FORMAT, "size": manifest.size, "root": manifest.root.hex(),
        "runs": [{k: getattr(r, k) for k in _RUN_FIELDS} for r in runs],
    })
    return manifest, data


def parse_manifest(data: bytes, what: str = "the batch manifest") -> Manifest:
    """Parse manifest bytes and check them: every run well formed, once, and the leaves hashing to the root.

    BatchProofError (a LedgerTamperedError) says what is wrong; the manifest's own root is checked
    against the chain by the caller.
    """

    try:
        doc = bundle.decode(data)
    except ValueError as err:
        raise BatchProofError(f"{what} is not JSON: {err}") from err
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or doc.get("leaf") != LEAF_FORMAT:
        raise BatchProofError(f"{what} is not a {MANIFEST_FORMAT} manifest with {LEAF_FORMAT} leaves")
    runs_doc = doc.get("runs")
    if not isinstance(runs_doc, list) or not runs_doc or doc.get("size") != len(runs_doc):
        raise BatchProofError(f"{what}: its size {doc.get('size')!r} does not match the runs it lists")
    runs, seen = [], set()
    for i, item in enumerate(runs_doc):
        if not isinstance(item, dict) or set(item) != set(_RUN_FIELDS) or not all(
                isinstance(v, str) for v in item.values()):
            raise BatchProofError(f"{what}: run #{i} does not have exactly the fields {', '.join(_RUN_FIELDS)}")
        run = LedgerEntry(**item)
        if run.run_id != _canonical_run_id(run.run_id) or len(run.scenario_hash) != 64 or (
                run.scenario_hash != run.scenario_hash.lower()):
            raise BatchProofError(f"{what}: run #{i} ({run.run_id}) is not in canonical form "
                                      "(lower-case UUID and 64 lower-case hex scenario hash)")
        if run.run_id in seen:
            raise BatchProofError(f"{what}: run {run.run_id} appears twice")
        seen.add(run.run_id)
        runs.append(run)
    try:
        leaves = tuple(run_leaf(r) for r in runs)
    except LedgerError as err:
        raise BatchProofError(f"{what}: {err}") from err
    computed = merkle.root(leaves)
    named = str(doc.get("root", ""))
    if computed.hex() != named:
        raise BatchProofError(f"{what}: its runs hash to root 0x{computed.hex()}, but it names root 0x{named}")
    return Manifest(root=computed, runs=tuple(runs), leaves=leaves)
