"""Verify a run recorded in a batch: the batch on chain, the run's inclusion proof against its root, then the bundle.

A batched run has no slot or event of its own: the chain holds the batch's
RFC 6962 root, size and manifest digest. ``verify_batched_run`` checks the
**transaction** (it succeeded) and the **recorder role** (its sender held the
recorder role at the batch's block), then finds the run one of two ways:

* **from a stored proof** (``proof`` and ``bundle_cid`` given, as
  HOME/batches.jsonl keeps them): the leaf recomputed from the run's own bundle
  (run id, scenario hash, DUT, bundle digest, verdict) must be proven by the
  proof's audit path at its index against the root and size on chain
  (**inclusion proof**). The manifest is not read: the proof alone ties the
  bundle to the chain, in log2(size) hashes;
* **from the manifest** (otherwise): the manifest the chain names is read
  (``RunLedgerClient.read_manifest``: its bytes hash to the recorded CID and its
  runs to the root and size on chain; **batch manifest**), the run must be listed
  in it (**in batch**), the manifest entry's leaf must be proven at its index
  (**inclusion proof**: by the proof given, else by one recomputed from the
  manifest, which then adds nothing to the manifest check), and the leaf
  recomputed from the bundle must be the manifest's (**batch leaf**);

then every bundle check of a single run (``verify.check_bundle``: bundle
integrity, attestation, record matches chain, scenario file, re-judged
verdicts), against the run's entry (the manifest's, or the bundle's own).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from securesystemslib.signer import Key

from twinloop.errors import ConfigError, LedgerError, LedgerTamperedError, RunNotFoundError
from twinloop.harness.fleet_record import FleetRecord, read_bundle
from twinloop.harness.services import Services
from twinloop.harness.verify import Verification, check_bundle
from twinloop.ledger import merkle
from twinloop.ledger.batch import InclusionProof, parse_manifest, run_leaf
from twinloop.ledger.chain import BatchRecord, LedgerEntry
from twinloop.ledger.ipfs import cid_bytes, import_file


def _bundle_entry(data: bytes, cid: str) -> LedgerEntry | None:
    """The chain entry the bundle states for itself, or None if it cannot be read (check_bundle says why)."""
    try:
        record = read_bundle(data)
    except LedgerTamperedError:
        return None
    if isinstance(record, FleetRecord):
        fields = (record.run_id, hashlib.sha256(record.fleet.text.encode()).hexdigest(),
                  record.dut_id, record.dut_version, record.outcome)
    else:
        fields = (record.run_id, hashlib.sha256(record.scenario.text.encode()).hexdigest(),
                  record.dut.id, record.dut.version, record.outcome)
    run_id, scenario_hash, dut_id, dut_version, verdict = fields
    entry = LedgerEntry(run_id=run_id, scenario_hash=scenario_hash, dut_id=dut_id, dut_version=dut_version,
                        bundle_cid=cid, verdict=verdict)
    try:
        run_leaf(entry)
    except LedgerError:
        return None
    return entry


def _batch_for(services: Services, root: str | None, manifest_cid: str | None) -> tuple[BatchRecord, str | None]:
    """The batch on chain, and the manifest named by ``manifest_cid`` as a CIDv0 (the chain's form) if one is named.

    A CIDv1 of the recorded manifest's bytes names the same manifest.
    """
    ledger = services.ledger
    if root is None and manifest_cid is None:
        raise LedgerError("verifying a batched run needs the batch's root or its manifest's CID")
    if manifest_cid is None:
        return ledger.get_batch(root), None
    try:
        data = services.ipfs.cat(manifest_cid)
    except LedgerError:
        if root is None:
            raise
        return ledger.get_batch(root), manifest_cid  # not readable: reported as not the recorded manifest
    if root is None:
        root = "0x" + parse_manifest(data, f"the manifest {manifest_cid}").root.hex()
    return ledger.get_batch(root), import_file(data)[0]


def _on_chain(entry: LedgerEntry, batch: BatchRecord) -> LedgerEntry:
    """A batched run's entry with what the chain holds for it: its batch's recorder, block and transaction."""
    return replace(entry, recorder=batch.recorder, timestamp=batch.timestamp, block_number=batch.block_number,
                   tx_hash=batch.tx_hash, tx_status=batch.tx_status, log_index=batch.log_index,
                   recorder_roles=batch.recorder_roles)


def _check_proof(v: Verification, proof: InclusionProof, leaf: bytes, batch: BatchRecord, what: str,
                 index: int | None = None) -> bool:
    """The "inclusion proof" check: ``proof`` takes ``leaf`` to the root on chain, in a tree of the chain's size."""
    proven = (proof.tree_size == batch.size and (index is None or proof.index == index)
              and proof.leaf_hash == merkle.leaf_hash(leaf).hex()
              and merkle.verify_inclusion(leaf, proof.index, batch.size, proof.path_bytes(),
                                          bytes.fromhex(batch.root[2:])))
    return v.add("inclusion proof", proven,
                 f"{what} is proven as leaf {proof.index} of the tree of {batch.size} with root {batch.root} "
                 f"({len(proof.path)} sibling hashes, RFC 6962)",
                 f"the inclusion proof (leaf {proof.index} of {proof.tree_size}) does not prove {what}"
                 + ("" if index is None else f" (leaf {index})") + f" in the tree of {batch.size} with root "
                 f"{batch.root} on chain")


def _proven_entry(v: Verification, services: Services, batch: BatchRecord, proof: InclusionProof,
                  bundle_cid: str) -> LedgerEntry | None:
    """The run's entry from its bundle, once its leaf is proven against the chain's root (no manifest)."""
    try:
        entry = _bundle_entry(services.ipfs.cat(bundle_cid), bundle_cid)
    except LedgerError as err:
        v.add("inclusion proof", False, "", f"bundle {bundle_cid} cannot be read, so its leaf cannot be proven: {err}")
        return None
    if entry is None:
        v.add("inclusion proof", False, "", f"bundle {bundle_cid} is not a run or fleet bundle with a batch leaf")
        return None
    _check_proof(v, proof, run_leaf(entry), batch, f"the leaf of bundle {bundle_cid}")
    return _on_chain(entry, batch)


def _manifest_entry(v: Verification, services: Services, batch: BatchRecord, named: str | None,
                    proof: InclusionProof | None) -> LedgerEntry | None:
    """The run's entry as the batch manifest on chain lists it, its leaf proven, and matching the bundle's."""
    if named is not None and named != batch.manifest_cid:
        v.add("batch manifest", False, "", f"manifest {named} is not the manifest recorded for batch "
              f"{batch.root} ({batch.manifest_cid}): it was edited or belongs to another batch")
        return None
    try:
        manifest = services.ledger.read_manifest(batch, services.ipfs)
    except LedgerError as err:
        v.add("batch manifest", False, "", str(err))
        return None
    v.add("batch manifest", True, f"manifest {batch.manifest_cid} lists {manifest.size} runs hashing to the root "
          "and size on chain", "")
    try:
        index = manifest.index_of(v.run_id)
    except (RunNotFoundError, LedgerError) as err:
        v.add("in batch", False, "", f"not in batch {batch.root}: {err}")
        return None
    v.add("in batch", True, f"leaf {index} of {manifest.size} in batch {batch.root}", "")
    entry = manifest.runs[index]
    leaf = run_leaf(entry)
    _check_proof(v, proof or manifest.proof(index), leaf, batch, "the manifest's leaf", index)
    try:
        bundle = services.ipfs.cat(entry.bundle_cid)
    except LedgerError:
        bundle = None  # check_bundle reports it
    from_bundle = None if bundle is None else _bundle_entry(bundle, import_file(bundle)[0])
    if from_bundle is not None:  # what the run says of itself must be what was batched
        v.add("batch leaf", run_leaf(from_bundle) == leaf,
              "the leaf recomputed from the bundle (run id, scenario hash, DUT, bundle digest, verdict) "
              "is the manifest's leaf",
              "the leaf recomputed from the bundle differs from the manifest's leaf (run id, scenario hash, "
              "DUT, bundle digest or verdict)")
    return _on_chain(entry, batch)


def batch_argument(text: str) -> tuple[str | None, str | None]:
    """``verify --batch X``: (X, None) for a Merkle root (0x and 64 hex), (None, X) for a manifest's CIDv0 or CIDv1."""
    digits = text.removeprefix("0x")
    if text.startswith("0x") or (len(digits) == 64 and all(c in "0123456789abcdefABCDEF" for c in digits)):
        return text, None
    try:
        cid_bytes(text)
    except LedgerError:
        raise ConfigError(f"--batch {text}: neither a batch root (0x and 64 hex digits) nor a manifest CID "
                          "(Qm... or base32 b...)") from None
    return None, text


def batched_entry(run_id: str, services: Services, batch: str | None = None) -> LedgerEntry:
    """Run ``run_id`` as an on-chain batch's manifest lists it (checked against the chain's root and size).

    The batch is the one named (``verify --batch``'s argument), else the one
    HOME/batches.jsonl notes for the run; RunNotFoundError if neither has it.
    """
    from twinloop.harness.commit import BATCH_NOTES, batch_notes  # commit's notes; commit does not import this

    root, manifest_cid = batch_argument(batch) if batch is not None else (None, None)
    if batch is None:
        root = batch_notes(services.home).get(run_id, {}).get("root")
        if not isinstance(root, str):
            raise RunNotFoundError(f"run {run_id} is not recorded alone, and {services.home / BATCH_NOTES} names "
                                   "no batch for it (name one with --batch ROOT|MANIFEST_CID)")
    found, _ = _batch_for(services, root, manifest_cid)
    manifest = services.ledger.read_manifest(found, services.ipfs)
    return _on_chain(manifest.runs[manifest.index_of(run_id)], found)


def verify_batched_run(run_id: str, services: Services, *, root: str | None = None,
                       manifest_cid: str | None = None, proof: InclusionProof | None = None,
                       bundle_cid: str | None = None, scenario_file: Path | None = None,
                       no_scenario_file: bool = False, resimulate: bool = True, signer: Key | None = None,
                       require_attestation: bool = False) -> Verification:
    """Check run ``run_id`` of the batch with ``root`` (or the manifest ``manifest_cid``) end to end.

    With ``proof`` and ``bundle_cid`` (and no ``manifest_cid``) the run is
    proven from its bundle and the proof alone; otherwise from the manifest.
    BatchNotFoundError if no such batch is on chain. Everything else that is
    wrong shows as a failed check naming the run; ``ok`` only if none failed.
    """
    v = Verification(run_id)
    ledger = services.ledger
    batch, named = _batch_for(services, root, manifest_cid)
    v.add("transaction", batch.tx_status == 1, f"batch {batch.root} recorded by transaction {batch.tx_hash} "
          f"in block {batch.block_number}, which succeeded", f"transaction {batch.tx_hash} has status "
          f"{batch.tx_status}")
    v.add("recorder role", ledger.batch_recorder_was_authorised(batch),
          f"recorder {batch.recorder} held the recorder role at block {batch.block_number}",
          f"recorder {batch.recorder} did not hold the recorder role at block {batch.block_number}, "
          f"when batch {batch.root} was recorded")
    if proof is not None and bundle_cid is not None and manifest_cid is None:
        entry = _proven_entry(v, services, batch, proof, bundle_cid)
    else:
        entry = _manifest_entry(v, services, batch, named, proof)
    if entry is None:
        return v
    v.entry = entry
    check_bundle(v, entry, services, scenario_file, no_scenario_file=no_scenario_file, resimulate=resimulate,
                 signer=signer, require_attestation=require_attestation)
    return v
