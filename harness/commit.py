"""Commit a run: bundle bytes to the outbox, then IPFS, then the RunLedger contract."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from twinloop.harness.services import Services
from twinloop.ledger import bundle
from twinloop.ledger.chain import LedgerEntry
from twinloop.errors import LedgerError


@dataclass(frozen=True)
class Committed:
    """Where a committed run now lives."""

    run_id: str
    cid: str
    tx_hash: str


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def commit(record: dict, services: Services) -> Committed:
    """Store the record durably, add it to IPFS and record it on chain.

    The bundle is written to the outbox first and removed only once the chain
    has it, so a failure at any later point loses nothing.
    """
    data = bundle.encode(record)
    run_id = record["run_id"]
    pending = services.outbox / f"{run_id}.json"
    _write_atomic(pending, data)
    try:
        cid = services.ipfs.add(data)
        entry = LedgerEntry(run_id=run_id, scenario_hash=record["scenario"]["sha256"],
                            dut_id=record["dut"]["id"], dut_version=record["dut"]["version"],
                            bundle_cid=cid, verdict=record["outcome"])
        tx_hash = services.ledger.record(entry)
    except LedgerError as err:
        raise type(err)(f"{err} (run {run_id} is kept in {pending})") from err
    pending.unlink()
    return Committed(run_id, cid, tx_hash)
