"""Commit a run: bundle bytes to the outbox, then IPFS, then the RunLedger contract; replay the outbox."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from twinloop.errors import (BatchNotFoundError, ConfigError, LedgerError, LedgerTamperedError,
                             RunAlreadyRecordedError, RunNotFoundError)
from twinloop.harness.attestation import attest
from twinloop.harness.fleet_record import FleetRecord, read_bundle
from twinloop.harness.record import RunRecord
from twinloop.harness.services import Services
from twinloop.ledger.batch import InclusionProof, Manifest, build_manifest
from twinloop.ledger.chain import LedgerEntry
from twinloop.ledger.dsse import EthereumSigner
from twinloop.ledger.durable import fsync_dir, write_atomic

#: HOME/batches.jsonl: one JSON line per run committed in a batch: {run_id, root, manifest_cid, tx, bundle_cid,
#: proof: {index, tree_size, leaf_hash, path}} (the last two where known), so verify needs no manifest
BATCH_NOTES = "batches.jsonl"
#: HOME/batch-sending.json: the batch being sent (root and run ids), written before its transaction
BATCH_INTENT = "batch-sending.json"


@dataclass(frozen=True)
class Committed:
    """Where a committed run now lives."""

    run_id: str
    cid: str
    tx_hash: str
    record: RunRecord | FleetRecord  # as committed: a run's with its signed attestation


def commit(record: RunRecord | FleetRecord, services: Services) -> Committed:
    """Store the record (a run's or a fleet's) durably, add it to IPFS and record it on chain.

    A run's record is first signed: its in-toto test-result attestation, in a
    DSSE envelope, by the recorder's key (or the bench's configured signer).

    The bundle is written to the outbox first and removed only once the chain
    has it and its maintenance requests, so a failure at any later point
    loses nothing: ``sync`` finishes what is left, sending no request twice.
    """
    if isinstance(record, RunRecord) and record.attestation is None:
        record = attest(record, services.signer or EthereumSigner(services.recorder))
    data = record.to_bytes()
    pending = services.outbox / f"{record.run_id}.json"
    write_atomic(pending, data)
    try:
        cid = services.ipfs.add(data)
        tx_hash = services.ledger.record(record.ledger_entry(cid))
    except LedgerError as err:
        raise type(err)(f"{err} (run {record.run_id} is kept in {pending})") from err
    _maintain(record, services, pending)
    pending.unlink()
    return Committed(record.run_id, cid, tx_hash, record)


def request_maintenance(record: RunRecord, services: Services, since_block: int | None = None) -> list[str]:
    """Put the run's maintenance requests (an intelligent twin's decisions) on chain; the tx hashes.

    They follow the run's record, so a maintenance system watching the chain
    (``twinloop ledger watch``) can act on them. With ``since_block`` (the
    block of the run's record or batch: a commit cut short is being finished)
    a request already on chain since then, for this run, is not sent again.
    A failure here names the device; the run itself is already committed.
    """
    wanted = []
    for e in record.events:
        if e.kind == "maintenance_request":
            reason = str(e.data.get("maintenance") or e.message).encode()[:256].decode(errors="ignore")
            wanted.append((e.device or "", e.data.get("rul_s") or 0.0, e.data.get("below_s") or 0.0, reason))
    if wanted and since_block is not None:
        there = [(r.device, r.rul_seconds, r.limit_seconds, r.reason)
                 for r in services.ledger.maintenance_requests(since_block, run_id=record.run_id)]
        left = []
        for device, rul, limit, reason in wanted:
            key = (device, math.floor(rul), math.floor(limit), reason) if all(map(math.isfinite, (rul, limit))) \
                else None
            if key in there:
                there.remove(key)  # sent before the cut: each on chain once
            else:
                left.append((device, rul, limit, reason))
        wanted = left
    sent = []
    for device, rul, limit, reason in wanted:
        try:
            sent.append(services.ledger.request_maintenance(record.run_id, record.dut.id, record.dut.version,
                                                            device, rul, limit, reason))
        except LedgerError as err:
            raise type(err)(f"run {record.run_id} is committed, but its maintenance request for device "
                            f"'{device}' was not sent: {err}") from err
    return sent


def _maintain(record: RunRecord | FleetRecord, services: Services, pending: Path,
              since_block: int | None = None) -> None:
    """A run's maintenance requests, sent before its outbox copy goes (a fleet has none)."""
    if not isinstance(record, RunRecord):
        return
    try:
        request_maintenance(record, services, since_block)
    except LedgerError as err:
        raise type(err)(f"{err} (it stays in {pending}; 'twinloop ledger sync' sends what is left)") from err


def sync(services: Services) -> list[Committed]:
    """Commit every bundle waiting in the outbox (a chain or store that was down), one record each; oldest first.

    Each is committed exactly once. First the clean-up a cut-off sync left
    is finished (``_recover``: the batch named in HOME/batch-sending.json).
    Then a run the chain already holds with the same bundle, alone or in a
    batch HOME/batches.jsonl names, is taken as done. One that the chain
    holds with another bundle stays in the outbox and raises, since
    something is wrong.
    """
    recovered = _recover(services)
    done = [] if recovered is None else list(recovered.runs)
    noted, manifests = batch_notes(services.home), {}
    for pending in sorted(services.outbox.glob("*.json"), key=lambda f: f.stat().st_mtime):
        data = pending.read_bytes()
        record = read_bundle(data)
        cid = services.ipfs.add(data)
        found = _recorded(services, pending, record, cid, noted, manifests)
        if found is None:
            try:
                tx_hash = services.ledger.record(record.ledger_entry(cid))
            except RunAlreadyRecordedError:  # recorded since we looked (another sync)
                found = _recorded(services, pending, record, cid, noted, manifests)
                if found is None:
                    raise
            else:
                found = Committed(record.run_id, cid, tx_hash, record), None
        _maintain(record, services, pending, found[1])
        pending.unlink()
        done.append(found[0])
    return done


def _recorded(services: Services, pending: Path, record: RunRecord | FleetRecord, cid: str,
              noted: dict[str, dict[str, Any]], manifests: dict[str, Any]) -> tuple[Committed, int] | None:
    """The run as the chain already holds it, alone or in a batch HOME/batches.jsonl names, and the block it is in;
    None if the chain holds neither.

    The one check of both syncs: a run on chain with another bundle than the
    one waiting in ``pending`` raises LedgerTamperedError (the file stays).
    ``manifests`` caches the noted batches' manifests by root.
    """
    try:
        entry = services.ledger.get(record.run_id)
        where = ""
    except RunNotFoundError:
        root = noted.get(record.run_id, {}).get("root")
        found = _batched_entry(services, record.run_id, root, manifests) if isinstance(root, str) else None
        if found is None:
            return None
        entry, where = found, f" in batch {root}"
    if entry.bundle_cid != cid:
        raise LedgerTamperedError(f"run {record.run_id} waiting in {pending} is already on chain{where} with "
                                  f"bundle {entry.bundle_cid}, not {cid}; left in the outbox")
    return Committed(record.run_id, cid, entry.tx_hash, record), entry.block_number


def _batched_entry(services: Services, run_id: str, root: str, manifests: dict[str, Any]) -> LedgerEntry | None:
    """Run ``run_id`` as the on-chain batch with ``root`` lists it; None if no such batch or it is not in it."""
    if root not in manifests:
        try:
            batch = services.ledger.get_batch(root)
        except BatchNotFoundError:
            manifests[root] = None
        else:
            manifests[root] = (batch, services.ledger.read_manifest(batch, services.ipfs))
    if manifests[root] is None:
        return None
    batch, manifest = manifests[root]
    try:
        entry = manifest.runs[manifest.index_of(run_id)]
    except RunNotFoundError:
        return None
    return replace(entry, tx_hash=batch.tx_hash, block_number=batch.block_number, recorder=batch.recorder)


@dataclass(frozen=True)
class BatchCommitted:
    """One batch of outbox runs now on chain (``already``: found on chain, sent by an earlier, cut-off sync)."""

    root: str
    manifest_cid: str
    tx_hash: str
    runs: list[Committed]
    already: bool = False


def batch_notes(home: Path) -> dict[str, dict[str, Any]]:
    """HOME/batches.jsonl by run id: which batch (root, manifest CID, tx) each batched run went into."""
    notes: dict[str, dict[str, Any]] = {}
    path = Path(home) / BATCH_NOTES
    if not path.exists():
        return notes
    for line in path.read_text().splitlines():
        try:
            note = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        if isinstance(note, dict) and isinstance(note.get("run_id"), str):
            notes[note["run_id"]] = note
    return notes


def noted_batch(note: dict[str, Any]) -> dict[str, Any]:
    """``verify_batched_run``'s batch arguments from a HOME/batches.jsonl line: the root, the proof and bundle if noted.

    Nothing in the note is trusted: the proof must take the bundle's own leaf
    to the root on chain. A note without a (well-formed) proof is verified
    from the batch's manifest instead.
    """
    found: dict[str, Any] = {"root": note["root"]}
    proof, cid = note.get("proof"), note.get("bundle_cid")
    if isinstance(proof, dict) and isinstance(cid, str):
        try:
            made = InclusionProof(run_id=note["run_id"], index=int(proof["index"]), tree_size=int(proof["tree_size"]),
                                  leaf_hash=str(proof["leaf_hash"]), path=tuple(str(h) for h in proof["path"]))
            made.path_bytes()
        except (KeyError, TypeError, ValueError):
            return found
        found.update(proof=made, bundle_cid=cid)
    return found


def _note_batch(home: Path, run_ids: list[str], root: str, manifest_cid: str, tx_hash: str,
                manifest: Manifest | None) -> None:
    """Append a line per run to HOME/batches.jsonl (with its bundle and inclusion proof, from ``manifest``)."""
    known = batch_notes(home)
    proofs = {} if manifest is None else manifest.proofs()
    bundles = {} if manifest is None else {r.run_id: r.bundle_cid for r in manifest.runs}
    lines = []
    for run_id in run_ids:
        if known.get(run_id, {}).get("root") == root:
            continue
        note: dict[str, Any] = {"run_id": run_id, "root": root, "manifest_cid": manifest_cid, "tx": tx_hash}
        if run_id in proofs:
            proof = proofs[run_id]
            note.update(bundle_cid=bundles[run_id], proof={"index": proof.index, "tree_size": proof.tree_size,
                                                           "leaf_hash": proof.leaf_hash, "path": list(proof.path)})
        lines.append(json.dumps(note))
    if not lines:
        return
    path = Path(home) / BATCH_NOTES
    created = not path.exists()
    with open(path, "a") as handle:
        if handle.tell() and not path.read_bytes().endswith(b"\n"):
            handle.write("\n")  # after a line cut short
        handle.write("\n".join(lines) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    if created:
        fsync_dir(path.parent)


def _recover(services: Services) -> BatchCommitted | None:
    """Both syncs start here: the batch a cut-off sync named in its intent, noted and out of the outbox if on chain.

    If that batch never landed, the intent is dropped and its runs wait in the outbox as before.
    """
    intent = services.home / BATCH_INTENT
    if not intent.exists():
        return None
    try:
        sent = json.loads(intent.read_text())
        root, run_ids = sent["root"], list(sent["runs"])
    except (ValueError, KeyError, TypeError):
        intent.unlink()  # cut short while being written: its transaction was never sent
        return None
    try:
        batch = services.ledger.get_batch(root)
    except BatchNotFoundError:
        intent.unlink()  # the transaction never landed; its runs are still in the outbox
        return None
    try:
        manifest = services.ledger.read_manifest(batch, services.ipfs)
    except LedgerError:
        manifest = None  # noted without proofs: verify reads the manifest where it can
    _note_batch(services.home, run_ids, batch.root, batch.manifest_cid, batch.tx_hash, manifest)
    runs = []
    for run_id in run_ids:
        pending = services.outbox / f"{run_id}.json"
        if pending.exists():
            data = pending.read_bytes()
            runs.append(Committed(run_id, services.ipfs.add(data), batch.tx_hash, read_bundle(data)))
            _maintain(runs[-1].record, services, pending, batch.block_number)
            pending.unlink()
    intent.unlink()
    return BatchCommitted(batch.root, batch.manifest_cid, batch.tx_hash, runs, already=True)


def sync_batched(services: Services, size: int) -> tuple[list[Committed], list[BatchCommitted]]:
    """Commit the outbox in batches of up to ``size`` runs, one ``record_batch`` transaction each.

    Returns the runs found already on chain (alone, or in a noted batch, with
    the same bundle: done, as ``sync``) and the batches. Runs are batched in run-id order, so
    the same outbox gives the same roots: a batch whose root is already on
    chain (an earlier sync cut off after its transaction) is taken as done,
    and so is the batch named in HOME/batch-sending.json, written before each
    transaction. Each batched run gets a line in HOME/batches.jsonl (root,
    manifest CID, tx, bundle and inclusion proof), written before its outbox file is removed.
    """
    if size < 1:
        raise ConfigError(f"--batch {size}: a batch holds at least one run")
    ledger = services.ledger
    batches: list[BatchCommitted] = []
    finished = _recover(services)
    if finished is not None:
        batches.append(finished)
    singles: list[Committed] = []
    waiting: list[tuple[Path, Any, str]] = []
    noted, manifests = batch_notes(services.home), {}
    for pending in sorted(services.outbox.glob("*.json")):
        data = pending.read_bytes()
        record = read_bundle(data)
        cid = services.ipfs.add(data)
        found = _recorded(services, pending, record, cid, noted, manifests)
        if found is None:
            waiting.append((pending, record, cid))
            continue
        _maintain(record, services, pending, found[1])
        pending.unlink()
        singles.append(found[0])
    waiting.sort(key=lambda w: w[1].run_id)
    for start in range(0, len(waiting), size):
        chunk = waiting[start:start + size]
        entries = [record.ledger_entry(cid) for _, record, cid in chunk]
        run_ids = [record.run_id for _, record, _ in chunk]
        manifest, _ = build_manifest(entries)
        root = "0x" + manifest.root.hex()
        try:
            found = ledger.get_batch(root)
            already, manifest_cid, tx_hash, since = True, found.manifest_cid, found.tx_hash, found.block_number
        except BatchNotFoundError:
            write_atomic(services.home / BATCH_INTENT, json.dumps({"root": root, "runs": run_ids}).encode())
            try:
                receipt = ledger.record_batch(entries, services.ipfs)
            except LedgerError as err:
                (services.home / BATCH_INTENT).unlink(missing_ok=True)
                raise type(err)(f"{err} (runs {', '.join(run_ids)} are kept in {services.outbox})") from err
            already, manifest_cid, tx_hash, since = False, receipt.manifest_cid, receipt.tx_hash, None
        _note_batch(services.home, run_ids, root, manifest_cid, tx_hash, manifest)
        for pending, record, _ in chunk:  # each run's requests, then its outbox copy goes
            _maintain(record, services, pending, since)
            pending.unlink(missing_ok=True)
        (services.home / BATCH_INTENT).unlink(missing_ok=True)
        batches.append(BatchCommitted(root, manifest_cid, tx_hash,
                                      [Committed(r.run_id, c, tx_hash, r) for _, r, c in chunk], already))
    return singles, batches
