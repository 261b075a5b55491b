"""Verify a run recorded in a batch: the batch on chain, its manifest, the run's inclusion proof, then the bundle.

A batched run has no slot or event of its own: the chain holds the batch's
RFC 6962 root, size and manifest digest. ``verify_batched_run`` checks, in order:

* **transaction**: the batch's transaction succeeded;
* **recorder role**: its sender held the recorder role at the batch's block
  (before the BatchRecorded log, from the role events);
* **batch manifest**: the manifest the chain names is on IPFS, byte for byte,
  and its runs hash to the root and size on chain (a manifest named by CID
  must be that one);
* **in batch**: the run is listed in the manifest;
* **inclusion proof**: the run's leaf, recomputed from the manifest entry,
  is proven at its index against the root and size on chain (the proof given,
  e.g. from ``BatchReceipt.proofs``, else one recomputed from the manifest);
* **batch leaf**: the leaf recomputed from the run's bundle (run id, scenario
  hash, DUT, bundle digest, verdict) is the manifest's leaf;

then every bundle check of a single run (``verify.check_bundle``: bundle
integrity, attestation, record matches chain, scenario file, re-judged
verdicts), against the manifest's entry.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from securesystemslib.signer import Key

from twinloop.errors import LedgerError, LedgerTamperedError, RunNotFoundError
from twinloop.harness.fleet_record import FleetRecord, read_bundle
from twinloop.harness.services import Services
from twinloop.harness.verify import Verification, check_bundle
from twinloop.ledger import merkle
from twinloop.ledger.batch import InclusionProof, parse_manifest, run_leaf
from twinloop.ledger.chain import BatchRecord, LedgerEntry
from twinloop.ledger.ipfs import import_file


def _bundle_leaf(data: bytes, cid: str) -> bytes | None:
    """The run's leaf as its bundle states it, or None if the bundle cannot be read (check_bundle says why)."""
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
    try:
        return run_leaf(LedgerEntry(run_id=run_id, scenario_hash=scenario_hash, dut_id=dut_id,
                                    dut_version=dut_version, bundle_cid=cid, verdict=verdict))
    except LedgerError:
        return None


def _batch_for(services: Services, root: str | None, manifest_cid: str | None) -> BatchRecord:
    ledger = services.ledger
    if root is not None:
        return ledger.get_batch(root)
    if manifest_cid is None:
        raise LedgerError("verifying a batched run needs the batch's root or its manifest's CID")
    named = parse_manifest(services.ipfs.cat(manifest_cid), f"the manifest {manifest_cid}")
    return ledger.get_batch(named.root)


def verify_batched_run(run_id: str, services: Services, *, root: str | None = None,
                       manifest_cid: str | None = None, proof: InclusionProof | None = None,
                       scenario_file: Path | None = None, no_scenario_file: bool = False,
                       resimulate: bool = True, signer: Key | None = None,
                       require_attestation: bool = False) -> Verification:
    """Check run ``run_id`` of the batch with ``root`` (or the manifest ``manifest_cid``) end to end.

    BatchNotFoundError if no such batch is on chain. Everything else that is
    wrong shows as a failed check naming the run; ``ok`` only if none failed.
    """
    v = Verification(run_id)
    ledger = services.ledger
    batch = _batch_for(services, root, manifest_cid)
    v.add("transaction", batch.tx_status == 1, f"batch {batch.root} recorded by transaction {batch.tx_hash} "
          f"in block {batch.block_number}, which succeeded", f"transaction {batch.tx_hash} has status "
          f"{batch.tx_status}")
    v.add("recorder role", ledger.batch_recorder_was_authorised(batch),
          f"recorder {batch.recorder} held the recorder role at block {batch.block_number}",
          f"recorder {batch.recorder} did not hold the recorder role at block {batch.block_number}, "
          f"when batch {batch.root} was recorded")

    # the manifest: the one the chain names, and hashing to the chain's root and size
    if manifest_cid is not None and manifest_cid != batch.manifest_cid:
        v.add("batch manifest", False, "", f"manifest {manifest_cid} is not the manifest recorded for batch "
              f"{batch.root} ({batch.manifest_cid}): it was edited or belongs to another batch")
        return v
    try:
        data = services.ipfs.cat(batch.manifest_cid)
        if import_file(data)[0] != batch.manifest_cid:
            raise LedgerTamperedError(f"the manifest's bytes do not hash to {batch.manifest_cid}, the CID "
                                      f"recorded for batch {batch.root}")
        manifest = parse_manifest(data, f"the manifest {batch.manifest_cid} of batch {batch.root}")
    except LedgerError as err:
        v.add("batch manifest", False, "", str(err))
        return v
    if not v.add("batch manifest", "0x" + manifest.root.hex() == batch.root and manifest.size == batch.size,
                 f"manifest {batch.manifest_cid} lists {manifest.size} runs hashing to the root on chain",
                 f"manifest {batch.manifest_cid} hashes to root 0x{manifest.root.hex()} over {manifest.size} "
                 f"runs; the chain records root {batch.root} over {batch.size}"):
        return v

    try:
        index = manifest.index_of(run_id)
    except (RunNotFoundError, LedgerError) as err:
        v.add("in batch", False, "", f"not in batch {batch.root}: {err}")
        return v
    manifested = manifest.runs[index]
    v.add("in batch", True, f"leaf {index} of {manifest.size} in batch {batch.root}", "")
    v.entry = entry = replace(manifested, recorder=batch.recorder, timestamp=batch.timestamp,
                              block_number=batch.block_number, tx_hash=batch.tx_hash, tx_status=batch.tx_status,
                              log_index=batch.log_index, recorder_roles=batch.recorder_roles)

    # the proof: the manifest entry's leaf, at its index, against the root and size on chain
    leaf = run_leaf(manifested)
    proof = proof or manifest.proof(index)
    chain_root = bytes.fromhex(batch.root[2:])
    proven = (proof.index == index and proof.tree_size == batch.size
              and merkle.verify_inclusion(leaf, proof.index, batch.size, proof.path_bytes(), chain_root))
    v.add("inclusion proof", proven,
          f"leaf {index} is proven in the tree of {batch.size} with root {batch.root} "
          f"({len(proof.path)} sibling hashes, RFC 6962)",
          f"the inclusion proof (leaf {proof.index} of {proof.tree_size}) does not prove the manifest's leaf "
          f"{index} in the tree of {batch.size} with root {batch.root}")

    # the leaf once more, from the bundle: what the run says of itself must be what was batched
    try:
        bundle = services.ipfs.cat(entry.bundle_cid)
    except LedgerError:
        bundle = None  # check_bundle reports it
    if bundle is not None:
        cid = import_file(bundle)[0]
        from_bundle = _bundle_leaf(bundle, cid)
        if from_bundle is not None:
            v.add("batch leaf", from_bundle == leaf,
                  "the leaf recomputed from the bundle (run id, scenario hash, DUT, bundle digest, verdict) "
                  "is the manifest's leaf",
                  "the leaf recomputed from the bundle differs from the manifest's leaf (run id, scenario hash, "
                  "DUT, bundle digest or verdict)")
    check_bundle(v, entry, services, scenario_file, no_scenario_file=no_scenario_file, resimulate=resimulate,
                 signer=signer, require_attestation=require_attestation)
    return v
