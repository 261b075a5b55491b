"""Commit a run: bundle bytes to the outbox, then IPFS, then the RunLedger contract; replay the outbox."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from twinloop.errors import LedgerError, LedgerTamperedError, RunAlreadyRecordedError
from twinloop.harness.attestation import attest
from twinloop.harness.fleet_record import FleetRecord, read_bundle
from twinloop.harness.record import RunRecord
from twinloop.harness.services import Services
from twinloop.ledger.dsse import EthereumSigner


@dataclass(frozen=True)
class Committed:
    """Where a committed run now lives."""

    run_id: str
    cid: str
    tx_hash: str
    record: RunRecord | FleetRecord  # as committed: a run's with its signed attestation


def write_atomic(path: Path, data: bytes) -> None:
    """Write, fsync and rename, so a crash leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def commit(record: RunRecord | FleetRecord, services: Services) -> Committed:
    """Store the record (a run's or a fleet's) durably, add it to IPFS and record it on chain.

    A run's record is first signed: its in-toto test-result attestation, in a
    DSSE envelope, by the recorder's key (or the bench's configured signer).

    The bundle is written to the outbox first and removed only once the chain
    has it, so a failure at any later point loses nothing.
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
    pending.unlink()
    if isinstance(record, RunRecord):
        request_maintenance(record, services)
    return Committed(record.run_id, cid, tx_hash, record)


def request_maintenance(record: RunRecord, services: Services) -> list[str]:
    """Put the run's maintenance requests (an intelligent twin's decisions) on chain; the tx hashes.

    They follow the run's record, so a maintenance system watching the chain
    (``twinloop ledger watch``) can act on them. A failure here names the
    device; the run itself is already committed and its bundle keeps the event.
    """
    sent = []
    for e in record.events:
        if e.kind != "maintenance_request":
            continue
        reason = str(e.data.get("maintenance") or e.message).encode()[:256].decode(errors="ignore")
        try:
            sent.append(services.ledger.request_maintenance(
                record.run_id, record.dut.id, record.dut.version, e.device or "", e.data.get("rul_s") or 0.0,
                e.data.get("below_s") or 0.0, reason))
        except LedgerError as err:
            raise type(err)(f"run {record.run_id} is committed, but its maintenance request for device "
                            f"'{e.device}' was not sent: {err}") from err
    return sent


def sync(services: Services) -> list[Committed]:
    """Commit every bundle waiting in the outbox (a chain or store that was down); oldest first.

    Each is committed exactly once: a run the chain already holds with the
    same bundle is taken as done. One that the chain holds with another
    bundle stays in the outbox and raises, since something is wrong.
    """
    done = []
    for pending in sorted(services.outbox.glob("*.json"), key=lambda f: f.stat().st_mtime):
        data = pending.read_bytes()
        record = read_bundle(data)
        cid = services.ipfs.add(data)
        try:
            tx_hash = services.ledger.record(record.ledger_entry(cid))
        except RunAlreadyRecordedError:
            entry = services.ledger.get(record.run_id)
            if entry.bundle_cid != cid:
                raise LedgerTamperedError(f"run {record.run_id} waiting in {pending} is already on chain with "
                                          f"bundle {entry.bundle_cid}, not {cid}; left in the outbox") from None
            tx_hash = entry.tx_hash
        else:
            if isinstance(record, RunRecord):
                request_maintenance(record, services)
        pending.unlink()
        done.append(Committed(record.run_id, cid, tx_hash, record))
    return done
