"""What RunLedger records, as Python values: runs, batches, maintenance requests, and their packing.

The contract keeps one write-once storage slot per run (and per batch) that
packs the verdict, the recorder's roles, the block and the top bits of a
commitment to the details; ``RunSlot`` and ``BatchSlot`` unpack them, and
``details_commitment`` / ``batch_commitment`` recompute the commitment so a
slot can be checked against its event. ``record_args`` validates an entry and
turns it into the contract's ``record`` arguments.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eth_abi import encode as abi_encode
from eth_utils import keccak

from twinloop.errors import LedgerError
from twinloop.ledger.ipfs import cid_digest

if TYPE_CHECKING:
    from twinloop.ledger.batch import InclusionProof  # batch builds on these entries

VERDICTS = {"pass": 1, "fail": 2, "error": 3}
VERDICT_NAMES = {code: name for name, code in VERDICTS.items()}
ROLES = {"recorder": 1, "reviewer": 2, "admin": 4}  # the contract's `flag Role`, in order
MAX_LENGTHS = {"dut_id": 64, "dut_version": 64}
MAINTENANCE_LENGTHS = {"device": 64, "reason": 256}
COMMITMENT_SHIFT = 80  # the slot keeps the top 176 bits of the details' hash
BATCH_COMMITMENT_SHIFT = 136  # a batch's slot keeps the top 120 bits of the manifest's hash


def dut_key(dut_id: str, dut_version: str) -> str:
    """The indexed ``dut_key`` topic of RunRecorded, for finding runs by DUT version."""
    return "0x" + keccak(abi_encode(["string", "string"], [dut_id, dut_version])).hex()


def details_commitment(scenario_hash: bytes, key: bytes, bundle_digest: bytes, recorder: str) -> int:
    """The top 176 bits of the run details' hash, as the contract packs them into the run's slot."""
    digest = keccak(abi_encode(["bytes32", "bytes32", "bytes32", "address"],
                               [scenario_hash, key, bundle_digest, recorder]))
    return int.from_bytes(digest, "big") >> COMMITMENT_SHIFT


@dataclass(frozen=True)
class RunSlot:
    """The write-once storage slot of one run, unpacked."""

    verdict: int
    roles: int
    block_number: int
    commitment: int

    @classmethod
    def unpack(cls, value: int) -> RunSlot:
        return cls(verdict=value & 0xFF, roles=(value >> 8) & 0xFF,
                   block_number=(value >> 16) & (2**64 - 1), commitment=value >> COMMITMENT_SHIFT)


def batch_commitment(manifest_digest: bytes, recorder: str) -> int:
    """The top 120 bits of keccak256(abi_encode(manifest_digest, recorder)), as a batch's slot packs them."""
    digest = keccak(abi_encode(["bytes32", "address"], [manifest_digest, recorder]))
    return int.from_bytes(digest, "big") >> BATCH_COMMITMENT_SHIFT


@dataclass(frozen=True)
class BatchSlot:
    """The write-once storage slot of one batch, unpacked."""

    roles: int
    block_number: int
    size: int
    commitment: int

    @classmethod
    def unpack(cls, value: int) -> BatchSlot:
        return cls(roles=value & 0xFF, block_number=(value >> 8) & (2**64 - 1),
                   size=(value >> 72) & (2**64 - 1), commitment=value >> BATCH_COMMITMENT_SHIFT)


def role_names(flags: int) -> tuple[str, ...]:
    """The role names set in a Role bitmask, in the contract's order."""
    return tuple(name for name, bit in ROLES.items() if flags & bit)


@dataclass(frozen=True)
class LedgerEntry:
    """One run as recorded on chain.

    The first six fields are what a recorder sends; the rest are set by the
    chain and filled in when a run is read back (``get`` fills all of them;
    ``find_runs`` reads logs alone, so it leaves ``recorder_roles`` empty).
    ``recorder_roles`` are the roles the recorder held when the run was
    written, read from the run's write-once slot.
    """

    run_id: str
    scenario_hash: str
    dut_id: str
    dut_version: str
    bundle_cid: str
    verdict: str
    recorder: str = ""
    timestamp: int = 0
    block_number: int = 0
    tx_hash: str = ""
    tx_status: int | None = None
    log_index: int = -1
    recorder_roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchRecord:
    """One batch as recorded on chain: its root, size and manifest, and who wrote it when."""

    root: str  # 0x-hex
    size: int
    manifest_cid: str
    recorder: str
    block_number: int
    tx_hash: str
    tx_status: int | None
    log_index: int
    timestamp: int = 0
    recorder_roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchReceipt:
    """What ``record_batch`` returns: the root, the manifest's CID, the transaction and every run's proof."""

    root: str  # 0x-hex
    manifest_cid: str
    tx_hash: str
    proofs: dict[str, InclusionProof]  # by run id
    block_number: int = 0
    gas_used: int = 0


@dataclass(frozen=True)
class MaintenanceRequest:
    """One MaintenanceRequested event: a twin asked for maintenance of a device."""

    run_id: str
    dut_key: str
    device: str
    rul_seconds: int
    limit_seconds: int
    reason: str
    requester: str
    block_number: int
    tx_hash: str
    log_index: int


def run_id_bytes(run_id: str) -> bytes:
    """A run id (a UUID string) as the contract's bytes16."""
    try:
        return uuid.UUID(run_id).bytes
    except (ValueError, TypeError, AttributeError) as err:
        raise LedgerError(f"run id {run_id!r} is not a UUID") from err


def hash32(value: str, what: str) -> bytes:
    """A 0x-hex SHA-256 or keccak digest as 32 bytes; ``what`` names it in the error."""
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except (ValueError, AttributeError):
        raw = b""
    if len(raw) != 32:
        raise LedgerError(f"{what} {value!r} is not 64 hex chars")
    return raw


def record_args(entry: LedgerEntry) -> tuple[bytes, bytes, str, str, bytes, int]:
    """Validate an entry and convert it to the contract's ``record`` arguments."""
    run_id = run_id_bytes(entry.run_id)
    scenario_hash = hash32(entry.scenario_hash, f"run {entry.run_id}: scenario hash")
    for field, limit in MAX_LENGTHS.items():
        if len(getattr(entry, field).encode("utf-8")) > limit:
            raise LedgerError(f"run {entry.run_id}: {field} is longer than {limit} bytes")
    if entry.verdict not in VERDICTS:
        raise LedgerError(
            f"run {entry.run_id}: verdict {entry.verdict!r} is not one of {sorted(VERDICTS)}"
        )
    try:
        digest = cid_digest(entry.bundle_cid)
    except LedgerError as err:
        raise LedgerError(f"run {entry.run_id}: bundle CID {entry.bundle_cid!r} is not a CIDv0 "
                          "(Qm..., sha2-256); RunLedger records the CID's 32-byte digest") from err
    return (run_id, scenario_hash, entry.dut_id, entry.dut_version, digest, VERDICTS[entry.verdict])


def role_flag(role: str) -> int:
    """The contract's flag bit for a role name."""
    try:
        return ROLES[role]
    except KeyError:
        raise LedgerError(f"unknown role {role!r}: one of {', '.join(ROLES)}") from None
