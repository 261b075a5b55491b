"""Commit a run: bundle bytes to the outbox, then IPFS, then the RunLedger contract."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from twinloop.errors import LedgerError
from twinloop.harness.fleet_record import FleetRecord
from twinloop.harness.record import RunRecord
from twinloop.harness.services import Services


@dataclass(frozen=True)
class Committed:
    """Where a committed run now lives."""

    run_id: str
    cid: str
    tx_hash: str


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

    The bundle is written to the outbox first and removed only once the chain
    has it, so a failure at any later point loses nothing.
    """
    data = record.to_bytes()
    pending = services.outbox / f"{record.run_id}.json"
    write_atomic(pending, data)
    try:
        cid = services.ipfs.add(data)
        tx_hash = services.ledger.record(record.ledger_entry(cid))
    except LedgerError as err:
        raise type(err)(f"{err} (run {record.run_id} is kept in {pending})") from err
    pending.unlink()
    return Committed(record.run_id, cid, tx_hash)
