"""Client for the RunLedger contract (version 2), plus a zero-config embedded anvil chain.

The contract's ABI and bytecode come from the shipped artifact
(``contracts/RunLedger.json``, see ``twinloop.ledger.artifact``); nothing is
compiled at run time, and a client refuses an address whose code is not that
artifact's runtime code. Transactions are signed locally with an eth_account
key, never by the node; every receipt's status is checked, and web3 and
requests failures and contract reverts are turned into twinloop
``LedgerError`` subclasses that name the account, the contract and the run.

A run is one storage slot on chain (the write-once guard, which also packs the
verdict, the recorder's roles when it wrote and the block) plus a
``RunRecorded`` event with the details, indexed by run id, scenario hash and
DUT key; ``get`` reads the slot, then the event in that slot's block.

A batch of runs is one slot too, keyed by the RFC 6962 Merkle root over the
runs' leaves (``record_batch``, ``get_batch``; leaves and the manifest in
``twinloop.ledger.batch``): the runs live in the manifest on IPFS and are
proven by inclusion proofs, not written one by one.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception
from web3.types import RPCEndpoint, TxReceipt

from twinloop.errors import (
    BaselineRefusedError,
    BatchAlreadyRecordedError,
    BatchNotFoundError,
    BatchProofError,
    LedgerContractMismatchError,
    LedgerError,
    LedgerRevertedError,
    LedgerTamperedError,
    LedgerTransactionFailedError,
    LedgerUnauthorisedError,
    LedgerUnavailableError,
    RunAlreadyRecordedError,
    RunNotFoundError,
)
from twinloop.ledger import artifact
from twinloop.ledger.batch import InclusionProof, Manifest, build_manifest, parse_manifest
from twinloop.ledger.anvil import AnvilNode
from twinloop.ledger.ipfs import cid_digest, cid_from_digest

VERDICTS = {"pass": 1, "fail": 2, "error": 3}
_VERDICT_NAMES = {code: name for name, code in VERDICTS.items()}
ROLES = {"recorder": 1, "reviewer": 2, "admin": 4}  # the contract's `flag Role`, in order
_MAX_LENGTHS = {"dut_id": 64, "dut_version": 64}
_MAINTENANCE_LENGTHS = {"device": 64, "reason": 256}
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
RECEIPT_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 10.0
DEV_FUNDING_WEI = 10_000 * 10**18
COMMITMENT_SHIFT = 80  # the slot keeps the top 176 bits of the details' hash
BATCH_COMMITMENT_SHIFT = 136  # a batch's slot keeps the top 120 bits of the manifest's hash
_CONNECTION_ERRORS = (requests.ConnectionError, requests.Timeout, ConnectionError)
_REVERT_PREFIX = "execution reverted: "

RevertMap = Callable[[str, str], LedgerError]


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


def _run_id_bytes(run_id: str) -> bytes:
    try:
        return uuid.UUID(run_id).bytes
    except (ValueError, TypeError, AttributeError) as err:
        raise LedgerError(f"run id {run_id!r} is not a UUID") from err


def _hash32(value: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except (ValueError, AttributeError):
        raw = b""
    if len(raw) != 32:
        raise LedgerError(f"{what} {value!r} is not 64 hex chars")
    return raw


def _record_args(entry: LedgerEntry) -> tuple[bytes, bytes, str, str, bytes, int]:
    """Validate an entry and convert it to the contract's ``record`` arguments."""
    run_id = _run_id_bytes(entry.run_id)
    scenario_hash = _hash32(entry.scenario_hash, f"run {entry.run_id}: scenario hash")
    for field, limit in _MAX_LENGTHS.items():
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


def _role_flag(role: str) -> int:
    try:
        return ROLES[role]
    except KeyError:
        raise LedgerError(f"unknown role {role!r}: one of {', '.join(ROLES)}") from None


def _topic(raw: bytes) -> str:
    """A 32-byte log topic: static values are left-padded, bytesN right-padded by the caller."""
    return "0x" + raw.rjust(32, b"\0").hex()


def _connect(rpc_url: str) -> Web3:
    return Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": HTTP_TIMEOUT_S}))


def _reason(err: ContractLogicError) -> str:
    return str(err.message or err).removeprefix(_REVERT_PREFIX)


def _plain_revert(reason: str, what: str) -> LedgerError:
    return LedgerRevertedError(f"{what} was reverted: {reason}")


@contextmanager
def _guard(rpc_url: str, what: str, on_revert: RevertMap = _plain_revert) -> Iterator[None]:
    """Turn web3/requests exceptions raised while doing ``what`` into LedgerErrors."""
    try:
        yield
    except ContractLogicError as err:
        raise on_revert(_reason(err), what) from err
    except _CONNECTION_ERRORS as err:
        raise LedgerUnavailableError(
            f"chain at {rpc_url} is unreachable while {what}: {err}"
        ) from err
    except TimeExhausted as err:
        raise LedgerError(f"no receipt from {rpc_url} while {what}: {err}") from err
    except (Web3Exception, requests.RequestException, ValueError) as err:
        raise LedgerError(f"{what} failed on {rpc_url}: {err}") from err


def _replay_reason(w3: Web3, tx: dict[str, Any], receipt: TxReceipt) -> str | None:
    """Why a mined transaction failed: replay it as a call on the state before its block, then after."""
    call = {k: tx[k] for k in ("from", "to", "data", "value", "gas") if k in tx}
    for block in (receipt["blockNumber"] - 1, receipt["blockNumber"]):
        try:
            w3.eth.call(call, block_identifier=block)  # type: ignore[arg-type]
        except ContractLogicError as err:
            return _reason(err)
        except Exception:  # out of gas, pruned state, ...: no reason to be had here
            continue
    return None


def _send(w3: Web3, rpc_url: str, account: LocalAccount, build: Callable[[dict], dict],
          what: str, on_revert: RevertMap = _plain_revert, gas: int | None = None) -> TxReceipt:
    """Build, sign, send and await one transaction; raise unless its receipt's status is 1.

    Without ``gas`` the node estimates it, and a revert shows up then, with its
    reason. With an explicit ``gas`` nothing is estimated and a failing
    transaction is mined with status 0 without web3 raising: the status is
    checked here, and the reason is recovered by replaying the call.
    """
    with _guard(rpc_url, what, on_revert):
        nonce = w3.eth.get_transaction_count(account.address, "pending")
        params: dict[str, Any] = {"from": account.address, "nonce": nonce}
        if gas is not None:
            params["gas"] = gas
        tx = build(params)
        signed = account.sign_transaction(tx)
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT_S)
    if receipt["status"] != 1:
        failed = f"transaction {tx_hash.to_0x_hex()} was mined with status 0 on {rpc_url}"
        reason = _replay_reason(w3, tx, receipt)
        if reason is not None:
            err = on_revert(reason, what)
            raise type(err)(f"{err} ({failed})")
        used, limit = receipt["gasUsed"], tx.get("gas")
        why = (f"it ran out of gas (limit {limit})" if limit is not None and used >= limit
               else f"replaying it gave no revert reason (gas used {used} of {limit})")
        raise LedgerTransactionFailedError(f"{what}: {failed}; {why}")
    return receipt


class RunLedgerClient:
    """Reads and writes one deployed RunLedger contract as ``account``.

    Refuses (LedgerContractMismatchError) an address whose runtime code is not
    the shipped artifact's, so a newer twinloop never attaches its ABI to other
    bytecode and a look-alike contract is never trusted.
    """

    deploy_tx: str = ""  # set by deploy()
    deploy_block: int = 0

    def __init__(self, rpc_url: str, address: str, account: LocalAccount | None) -> None:
        """Attach to the RunLedger at ``address``; ``account`` signs, None makes a client that only reads."""
        self.rpc_url = rpc_url
        self.account = account or Account.create()  # a throwaway address for calls; never sends
        self.read_only = account is None
        self._w3 = _connect(rpc_url)
        self.artifact = artifact.load()
        try:
            self.address = Web3.to_checksum_address(address)
        except ValueError as err:
            raise LedgerError(f"{address!r} is not an Ethereum address") from err
        with _guard(rpc_url, f"checking contract code at {self.address}"):
            code = bytes(self._w3.eth.get_code(self.address))
        if not code:
            raise LedgerError(f"no RunLedger contract at {self.address} on {rpc_url}")
        found = "0x" + keccak(code).hex()
        if found != self.artifact.runtime_code_hash:
            raise LedgerContractMismatchError(
                f"the contract at {self.address} on {rpc_url} is not {self.artifact.version}: its "
                f"runtime code hash is {found}, expected {self.artifact.runtime_code_hash}")
        self._contract: Contract = self._w3.eth.contract(address=self.address, abi=self.artifact.abi)
        self._block_times: dict[int, int] = {}

    @classmethod
    def deploy(cls, rpc_url: str, account: LocalAccount) -> RunLedgerClient:
        """Deploy a new RunLedger; ``account`` becomes its admin and first recorder.

        The deployment's transaction hash and block are kept in ``deploy_tx``
        and ``deploy_block``.
        """
        shipped = artifact.load()
        w3 = _connect(rpc_url)
        factory = w3.eth.contract(abi=shipped.abi, bytecode=shipped.bytecode)
        receipt = _send(w3, rpc_url, account, factory.constructor().build_transaction,
                        f"deploying RunLedger from {account.address}")
        client = cls(rpc_url, receipt["contractAddress"], account)
        client.deploy_tx = receipt["transactionHash"].to_0x_hex()
        client.deploy_block = int(receipt["blockNumber"])
        return client

    @property
    def chain_id(self) -> int:
        """Chain id of the node this client talks to."""
        with _guard(self.rpc_url, "reading the chain id"):
            return int(self._w3.eth.chain_id)

    @property
    def version(self) -> str:
        """The contract version string of the shipped artifact (the deployed code matches it)."""
        return self.artifact.version

    def block_number(self) -> int:
        """The node's latest block number."""
        with _guard(self.rpc_url, "reading the block number"):
            return int(self._w3.eth.block_number)

    # roles -----------------------------------------------------------------

    def grant_role(self, role: str, address: str) -> str:
        """Give ``address`` a role ("recorder", "reviewer" or "admin"; admin only); returns the tx hash."""
        flag, account = _role_flag(role), self._checksum(address)
        fn = self._contract.functions.grant_role(flag, account)
        return self._transact(fn.build_transaction, f"granting {role} to {account}")

    def revoke_role(self, role: str, address: str) -> str:
        """Take a role from ``address`` (admin only); returns the tx hash."""
        flag, account = _role_flag(role), self._checksum(address)
        fn = self._contract.functions.revoke_role(flag, account)
        return self._transact(fn.build_transaction, f"revoking {role} from {account}")

    def grant_recorder(self, address: str) -> str:
        """Let ``address`` record runs (admin only); returns the tx hash."""
        return self.grant_role("recorder", address)

    def revoke_recorder(self, address: str) -> str:
        """Stop ``address`` recording runs (admin only); returns the tx hash."""
        return self.revoke_role("recorder", address)

    def has_role(self, role: str, address: str) -> bool:
        """Whether ``address`` holds ``role`` now."""
        flag, account = _role_flag(role), self._checksum(address)
        with _guard(self.rpc_url, f"reading the {role} role of {account}"):
            return bool(self._contract.functions.has_role(account, flag).call())

    def is_recorder(self, address: str) -> bool:
        """Whether ``address`` currently holds the recorder role."""
        return self.has_role("recorder", address)

    def had_role(self, role: str, account: str, block: int, log_index: int | None = None) -> bool:
        """Whether ``account`` held ``role`` at ``block``, rebuilt from the role events alone.

        By default the state at the end of ``block``; with ``log_index``, just
        before the log at that index in ``block`` (a run's RunRecorded log, so
        a grant or revocation later in the same block does not count).
        """
        flag, address = _role_flag(role), self._checksum(account)
        events = self._contract.events
        topics = [[events.RoleGranted.topic, events.RoleRevoked.topic],
                  _topic(flag.to_bytes(32, "big")), _topic(bytes.fromhex(address[2:]))]
        logs = self._logs(topics, 0, block, f"reading the {role} role history of {address}")
        held = False
        for log in sorted(logs, key=lambda g: (g["blockNumber"], g["logIndex"])):
            if log_index is not None and log["blockNumber"] == block and log["logIndex"] >= log_index:
                break
            held = log["topics"][0].to_0x_hex() == events.RoleGranted.topic
        return held

    def recorder_was_authorised(self, entry: LedgerEntry) -> bool:
        """Whether ``entry``'s recorder held the recorder role when its run was recorded."""
        if entry.block_number <= 0:
            raise LedgerError(f"run {entry.run_id}: the entry has no block number; read it with get()")
        return self.had_role("recorder", entry.recorder, entry.block_number,
                             entry.log_index if entry.log_index >= 0 else None)

    # runs --------------------------------------------------------------------

    def record(self, entry: LedgerEntry, *, gas: int | None = None) -> str:
        """Write one run (once per run id); returns the tx hash as 0x-hex.

        ``gas`` skips the node's estimate (one round trip less); a failing
        transaction is then mined with status 0, which raises all the same.
        """
        fn = self._contract.functions.record(*_record_args(entry))
        run_id = str(uuid.UUID(entry.run_id))
        return self._transact(fn.build_transaction, f"recording run {run_id}",
                              self._reverts(run_id), gas=gas)

    def get(self, run_id: str) -> LedgerEntry:
        """The recorded run; RunNotFoundError if the run id was never recorded.

        Reads the run's slot, then its RunRecorded event in the block the slot
        names, and checks that the event's details are the ones the slot was
        written with (LedgerTamperedError otherwise).
        """
        key = _run_id_bytes(run_id)
        run_id = str(uuid.UUID(bytes=key))
        slot = self._slot(key, run_id)
        topics = [self._contract.events.RunRecorded.topic, "0x" + key.hex().ljust(64, "0")]
        logs = self._logs(topics, slot.block_number, slot.block_number,
                          f"reading the RunRecorded log of run {run_id}")
        if not logs:
            raise LedgerError(
                f"run {run_id} is recorded on RunLedger {self.address} in block {slot.block_number}, "
                f"but {self.rpc_url} returns no RunRecorded log there (does the node keep logs?)")
        entry = self._run_entry(logs[0])
        scenario = bytes.fromhex(entry.scenario_hash)
        commitment = details_commitment(scenario, keccak(abi_encode(
            ["string", "string"], [entry.dut_id, entry.dut_version])),
            cid_digest(entry.bundle_cid), entry.recorder)
        if commitment != slot.commitment or VERDICTS.get(entry.verdict) != slot.verdict:
            raise LedgerTamperedError(
                f"run {run_id}: the RunRecorded log {entry.tx_hash} on RunLedger {self.address} does not "
                "match the details written in the run's slot")
        with _guard(self.rpc_url, f"reading the receipt of {entry.tx_hash}"):
            receipt = self._w3.eth.get_transaction_receipt(entry.tx_hash)
        return replace(entry, tx_status=int(receipt["status"]), recorder_roles=role_names(slot.roles))

    def recorded_tx(self, run_id: str) -> str | None:
        """Hash of the transaction that recorded the run, or None if it is not recorded."""
        try:
            return self.get(run_id).tx_hash
        except RunNotFoundError:
            return None

    def find_runs(self, scenario_hash: str | None = None, dut_id: str | None = None,
                  dut_version: str | None = None, *, from_block: int = 0,
                  to_block: int | str = "latest") -> list[LedgerEntry]:
        """Runs recorded for a scenario hash and/or a DUT version, from the logs alone, oldest first."""
        if (dut_id is None) != (dut_version is None):
            raise LedgerError("find_runs needs both dut_id and dut_version (runs are indexed by the pair)")
        scenario = (None if scenario_hash is None
                    else "0x" + _hash32(scenario_hash, "scenario hash").hex())
        dut = None if dut_id is None else dut_key(dut_id, dut_version or "")
        topics = [self._contract.events.RunRecorded.topic, None, scenario, dut]
        logs = self._logs(topics, from_block, to_block, "finding runs")
        return [self._run_entry(log) for log in sorted(
            logs, key=lambda g: (g["blockNumber"], g["logIndex"]))]

    # batches -----------------------------------------------------------------

    def record_batch(self, entries: list[LedgerEntry], ipfs: Any, *, gas: int | None = None) -> BatchReceipt:
        """Record many runs in one transaction: the Merkle root over their leaves, once per root.

        Builds the manifest (``twinloop.ledger.batch``), stores it with
        ``ipfs.add`` (it must return a CIDv0, whose digest goes on chain), sends
        ``record_batch(root, size, manifest_digest)`` and returns every run's
        inclusion proof. The runs are not written one by one: a run id recorded
        alone, or in another batch, is not refused here.
        """
        manifest, data = build_manifest(list(entries))
        root = "0x" + manifest.root.hex()
        manifest_cid = ipfs.add(data)
        try:
            manifest_digest = cid_digest(manifest_cid)
        except LedgerError as err:
            raise LedgerError(f"batch {root}: the manifest's CID {manifest_cid!r} is not a CIDv0 "
                              "(Qm..., sha2-256); RunLedger records its 32-byte digest") from err
        fn = self._contract.functions.record_batch(manifest.root, manifest.size, manifest_digest)
        what = f"recording a batch of {manifest.size} runs (root {root})"
        if self.read_only:
            raise LedgerUnauthorisedError(f"{what}: this client only reads RunLedger {self.address} "
                                          "(it was given no recorder key)")
        receipt = _send(self._w3, self.rpc_url, self.account, fn.build_transaction, what,
                        self._reverts(None, batch=root), gas)
        proofs = manifest.proofs()
        return BatchReceipt(root=root, manifest_cid=manifest_cid,
                            tx_hash=receipt["transactionHash"].to_0x_hex(), proofs=proofs,
                            block_number=int(receipt["blockNumber"]), gas_used=int(receipt["gasUsed"]))

    def get_batch(self, root: str | bytes) -> BatchRecord:
        """The recorded batch with this Merkle root; BatchNotFoundError if there is none.

        Reads the batch's slot, then its BatchRecorded event in the block the
        slot names, and checks the event against the slot (LedgerTamperedError
        otherwise).
        """
        key = root if isinstance(root, bytes) else _hash32(root, "batch root")
        if len(key) != 32:
            raise LedgerError(f"batch root {key.hex()} is not 32 bytes")
        name = "0x" + key.hex()
        with _guard(self.rpc_url, f"reading batch {name} from RunLedger {self.address}"):
            value = int(self._contract.functions.batches(key).call())
        if value == 0:
            raise BatchNotFoundError(
                f"no batch with root {name} is recorded on RunLedger {self.address} at {self.rpc_url}")
        slot = BatchSlot.unpack(value)
        event = self._contract.events.BatchRecorded
        logs = self._logs([event.topic, name], slot.block_number, slot.block_number,
                          f"reading the BatchRecorded log of batch {name}")
        if not logs:
            raise LedgerError(f"batch {name} is recorded on RunLedger {self.address} in block "
                              f"{slot.block_number}, but {self.rpc_url} returns no BatchRecorded log there")
        log = logs[0]
        args = self._decode(event, log).args
        recorder = Web3.to_checksum_address(args.recorder)
        digest = bytes(args.manifest_digest)
        if batch_commitment(digest, recorder) != slot.commitment or int(args.size) != slot.size:
            raise LedgerTamperedError(
                f"batch {name}: the BatchRecorded log {log['transactionHash'].to_0x_hex()} on RunLedger "
                f"{self.address} does not match the batch's slot")
        tx_hash = log["transactionHash"].to_0x_hex()
        with _guard(self.rpc_url, f"reading the receipt of {tx_hash}"):
            receipt = self._w3.eth.get_transaction_receipt(tx_hash)
        return BatchRecord(root=name, size=slot.size, manifest_cid=cid_from_digest(digest), recorder=recorder,
                           block_number=slot.block_number, tx_hash=tx_hash, tx_status=int(receipt["status"]),
                           log_index=int(log["logIndex"]), timestamp=self._block_time(log),
                           recorder_roles=role_names(slot.roles))

    def batch_recorder_was_authorised(self, batch: BatchRecord) -> bool:
        """Whether the batch's recorder held the recorder role when the batch was recorded."""
        return self.had_role("recorder", batch.recorder, batch.block_number,
                             batch.log_index if batch.log_index >= 0 else None)

    @staticmethod
    def read_manifest(batch: BatchRecord, ipfs: Any) -> Manifest:
        """The batch's manifest from ``ipfs``, checked against the root and size on chain."""
        data = ipfs.cat(batch.manifest_cid)
        manifest = parse_manifest(data, f"the manifest {batch.manifest_cid} of batch {batch.root}")
        if "0x" + manifest.root.hex() != batch.root or manifest.size != batch.size:
            raise BatchProofError(
                f"the manifest {batch.manifest_cid} hashes to root 0x{manifest.root.hex()} over "
                f"{manifest.size} runs; the chain records root {batch.root} over {batch.size}")
        return manifest

    # baselines ---------------------------------------------------------------

    def accept_baseline(self, run_id: str) -> str:
        """Make a recorded, passing run the baseline of its scenario and DUT version (reviewer only).

        A later acceptance for the same scenario and DUT version replaces it.
        """
        entry = self.get(run_id)
        fn = self._contract.functions.accept_baseline(
            _run_id_bytes(entry.run_id), bytes.fromhex(entry.scenario_hash),
            bytes.fromhex(dut_key(entry.dut_id, entry.dut_version)[2:]),
            cid_digest(entry.bundle_cid), entry.recorder)
        return self._transact(fn.build_transaction, f"accepting run {entry.run_id} as a baseline",
                              self._reverts(entry.run_id))

    def baseline(self, scenario_hash: str, dut_id: str, dut_version: str) -> str | None:
        """The run id of the accepted baseline for a scenario and DUT version, or None."""
        scenario = _hash32(scenario_hash, "scenario hash")
        key = bytes.fromhex(dut_key(dut_id, dut_version)[2:])
        with _guard(self.rpc_url, f"reading the baseline of {scenario.hex()[:12]} {dut_id} {dut_version}"):
            run = bytes(self._contract.functions.baseline(scenario, key).call())
        return None if not any(run) else str(uuid.UUID(bytes=run))

    # maintenance -------------------------------------------------------------

    def request_maintenance(self, run_id: str, dut_id: str, dut_version: str, device: str,
                            rul_seconds: float, limit_seconds: float, reason: str) -> str:
        """Emit MaintenanceRequested (recorder only); seconds are whole, rounded down. Returns the tx hash."""
        key = _run_id_bytes(run_id)
        for name, text in (("device", device), ("reason", reason)):
            if len(text.encode("utf-8")) > _MAINTENANCE_LENGTHS[name]:
                raise LedgerError(f"run {run_id}: maintenance {name} is longer than "
                                  f"{_MAINTENANCE_LENGTHS[name]} bytes")
        seconds = []
        for name, value in (("rul_seconds", rul_seconds), ("limit_seconds", limit_seconds)):
            if not math.isfinite(value) or value < 0:
                raise LedgerError(f"run {run_id}: maintenance {name} {value!r} is not a finite, "
                                  "non-negative number of seconds")
            seconds.append(math.floor(value))
        fn = self._contract.functions.request_maintenance(
            key, bytes.fromhex(dut_key(dut_id, dut_version)[2:]), device, *seconds, reason)
        return self._transact(fn.build_transaction,
                              f"requesting maintenance of {device} for run {uuid.UUID(bytes=key)}",
                              self._reverts(str(uuid.UUID(bytes=key))))

    def maintenance_requests(self, from_block: int = 0, to_block: int | str = "latest", *,
                             run_id: str | None = None) -> list[MaintenanceRequest]:
        """MaintenanceRequested events in a block range (optionally for one run), oldest first."""
        run_topic = None if run_id is None else "0x" + _run_id_bytes(run_id).hex().ljust(64, "0")
        event = self._contract.events.MaintenanceRequested
        logs = self._logs([event.topic, run_topic], from_block, to_block,
                          "reading maintenance requests")
        out = []
        for log in sorted(logs, key=lambda g: (g["blockNumber"], g["logIndex"])):
            args = self._decode(event, log).args
            out.append(MaintenanceRequest(
                run_id=str(uuid.UUID(bytes=bytes(args.run_id))), dut_key="0x" + bytes(args.dut_key).hex(),
                device=args.device, rul_seconds=int(args.rul_seconds),
                limit_seconds=int(args.limit_seconds), reason=args.reason,
                requester=Web3.to_checksum_address(args.requester),
                block_number=int(log["blockNumber"]), tx_hash=log["transactionHash"].to_0x_hex(),
                log_index=int(log["logIndex"])))
        return out

    def watch_maintenance(self, from_block: int | None = None, poll_s: float = 1.0, *,
                          confirmations: int = 0) -> Iterator[MaintenanceRequest]:
        """Yield maintenance requests as they are mined, polling every ``poll_s`` seconds; never ends.

        ``from_block=None`` starts after the block that is latest now (this
        call, not the first ``next()``); ``from_block=0`` replays every past
        request first. ``confirmations`` holds back the newest blocks (for a
        chain that may reorganise).
        """
        start = self.block_number() + 1 if from_block is None else from_block

        def poll() -> Iterator[MaintenanceRequest]:
            next_block = start
            while True:
                head = self.block_number() - confirmations
                if head >= next_block:
                    yield from self.maintenance_requests(next_block, head)
                    next_block = head + 1
                time.sleep(poll_s)

        return poll()

    # internals ---------------------------------------------------------------

    def _slot(self, key: bytes, run_id: str) -> RunSlot:
        with _guard(self.rpc_url, f"reading run {run_id} from RunLedger {self.address}"):
            value = int(self._contract.functions.runs(key).call())
        if value == 0:
            raise RunNotFoundError(
                f"run {run_id} is not recorded on RunLedger {self.address} at {self.rpc_url}")
        return RunSlot.unpack(value)

    def _logs(self, topics: list[Any], from_block: int, to_block: int | str, what: str) -> list[Any]:
        while topics and topics[-1] is None:
            topics = topics[:-1]
        params: Any = {"address": self.address, "fromBlock": from_block, "toBlock": to_block,
                       "topics": topics}
        with _guard(self.rpc_url, what):
            return list(self._w3.eth.get_logs(params))

    def _decode(self, event: Any, log: Any) -> Any:
        try:
            return event().process_log(log)
        except Exception as err:  # web3 raises several types for undecodable logs
            raise LedgerTamperedError(
                f"log {log['transactionHash'].to_0x_hex()} on RunLedger {self.address} cannot be "
                f"decoded as {event.event_name}: {err}") from err

    def _block_time(self, log: Any) -> int:
        stamp = log.get("blockTimestamp")
        if stamp is not None:
            return int(stamp, 16) if isinstance(stamp, str) else int(stamp)
        number = int(log["blockNumber"])
        if number not in self._block_times:
            with _guard(self.rpc_url, f"reading block {number}"):
                self._block_times[number] = int(self._w3.eth.get_block(number)["timestamp"])
        return self._block_times[number]

    def _run_entry(self, log: Any) -> LedgerEntry:
        args = self._decode(self._contract.events.RunRecorded, log).args
        return LedgerEntry(
            run_id=str(uuid.UUID(bytes=bytes(args.run_id))), scenario_hash=bytes(args.scenario_hash).hex(),
            dut_id=args.dut_id, dut_version=args.dut_version,
            bundle_cid=cid_from_digest(bytes(args.bundle_digest)),
            verdict=_VERDICT_NAMES.get(args.verdict, f"unknown({args.verdict})"),
            recorder=Web3.to_checksum_address(args.recorder), timestamp=self._block_time(log),
            block_number=int(log["blockNumber"]), tx_hash=log["transactionHash"].to_0x_hex(),
            tx_status=1,  # logs exist only for transactions that succeeded
            log_index=int(log["logIndex"]))

    def _transact(self, build: Callable[[dict], dict], what: str,
                  on_revert: RevertMap | None = None, gas: int | None = None) -> str:
        if self.read_only:
            raise LedgerUnauthorisedError(f"{what}: this client only reads RunLedger {self.address} "
                                          "(it was given no recorder key)")
        receipt = _send(self._w3, self.rpc_url, self.account, build, what,
                        on_revert or self._reverts(None), gas)
        return receipt["transactionHash"].to_0x_hex()

    def _reverts(self, run_id: str | None, batch: str | None = None) -> RevertMap:
        """Map the contract's revert reasons to twinloop errors naming the account, contract and run."""
        me, ledger = self.account.address, f"RunLedger {self.address}"
        run = f"run {run_id}" if run_id else "the run"

        def mapped(reason: str, what: str) -> LedgerError:
            if "not a recorder" in reason:
                return LedgerUnauthorisedError(f"{me} is not a recorder on {ledger} ({what})")
            if "not a reviewer" in reason:
                return LedgerUnauthorisedError(f"{me} is not a reviewer on {ledger} ({what})")
            if "not the admin" in reason:
                return LedgerUnauthorisedError(f"{me} is not an admin of {ledger} ({what})")
            if "run id already recorded" in reason:
                return RunAlreadyRecordedError(f"{run} is already recorded on {ledger}")
            if "batch already recorded" in reason:
                return BatchAlreadyRecordedError(f"the batch with root {batch} is already recorded on {ledger}")
            if "run not recorded" in reason:
                return RunNotFoundError(f"{run} is not recorded on {ledger}")
            if "run did not pass" in reason:
                return BaselineRefusedError(
                    f"{run} cannot be a baseline on {ledger}: only a passing run can")
            if "run details do not match" in reason:
                return LedgerTamperedError(
                    f"{ledger} refused {what}: the details given do not match those written for {run}")
            return LedgerRevertedError(f"{ledger} refused {what}: {reason or 'reverted without a reason'}")

        return mapped

    @staticmethod
    def _checksum(address: str) -> str:
        try:
            return Web3.to_checksum_address(address)
        except ValueError as err:
            raise LedgerError(f"{address!r} is not an Ethereum address") from err


def _load_or_create_key(path: Path) -> LocalAccount:
    """The dev-only recorder key in ``path``, generated (mode 0600) on first use."""
    if path.exists():
        try:
            return Account.from_key(path.read_text(encoding="ascii").strip())
        except (ValueError, UnicodeDecodeError) as err:
            raise LedgerError(f"{path} does not hold a valid private key") from err
    account = Account.create()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(account.key.to_0x_hex() + "\n")
    return account


class EmbeddedChain:
    """A local anvil with a RunLedger deployed once and reused across restarts.

    ``chain/deployment.json`` records the contract's address, the chain id,
    the contract version and its runtime code hash. Attaching refuses a
    contract whose code is not the shipped artifact's (an older RunLedger, or
    a look-alike the file was pointed at) rather than deploying a new one
    silently; a deployment whose contract is gone (a fresh chain) is replaced.
    """

    def __init__(self, home: Path) -> None:
        self.dir = Path(home) / "chain"
        self.state_path = self.dir / "anvil-state.json"
        self.deployment_path = self.dir / "deployment.json"
        self.key_path = self.dir / "dev-recorder.key"
        self._node = AnvilNode(self.state_path)
        self._client: RunLedgerClient | None = None

    @property
    def client(self) -> RunLedgerClient:
        """The ledger client signing as the dev recorder."""
        if self._client is None:
            raise LedgerError(f"embedded chain in {self.dir} is not started")
        return self._client

    @property
    def rpc_url(self) -> str:
        """JSON-RPC URL of the running anvil (127.0.0.1 only)."""
        return self.client.rpc_url

    @property
    def account(self) -> LocalAccount:
        """The dev-only recorder account loaded from ``dev-recorder.key``."""
        return self.client.account

    def load_account(self) -> LocalAccount:
        """The dev-only recorder account, without starting anvil (made on first use)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        return _load_or_create_key(self.key_path)

    def start(self) -> RunLedgerClient:
        """Start anvil, fund the dev recorder, and attach to (or deploy) RunLedger."""
        if self._client is not None:
            return self._client
        self.dir.mkdir(parents=True, exist_ok=True)
        rpc_url = self._node.start()
        try:
            account = _load_or_create_key(self.key_path)
            self._set_balance(rpc_url, account.address)
            self._client = self._attach(rpc_url, account) or self._deploy(rpc_url, account)
        except BaseException:
            self._node.stop()
            raise
        return self._client

    def stop(self) -> None:
        """Stop anvil; it dumps the chain state to ``anvil-state.json``."""
        self._client = None
        self._node.stop()

    def fund(self, address: str, wei: int = DEV_FUNDING_WEI) -> None:
        """Give ``address`` a balance of ``wei`` (anvil_setBalance)."""
        self._set_balance(self.rpc_url, address, wei)

    def _set_balance(self, rpc_url: str, address: str, wei: int = DEV_FUNDING_WEI) -> None:
        w3 = _connect(rpc_url)
        with _guard(rpc_url, f"funding {address}"):
            w3.manager.request_blocking(
                RPCEndpoint("anvil_setBalance"), [Web3.to_checksum_address(address), hex(wei)])

    def _attach(self, rpc_url: str, account: LocalAccount) -> RunLedgerClient | None:
        """The client for the recorded deployment, or None if there is none or its contract is gone."""
        try:
            deployment: dict[str, Any] = json.loads(self.deployment_path.read_text())
            address, chain_id = deployment["address"], int(deployment["chain_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        w3 = _connect(rpc_url)
        with _guard(rpc_url, f"checking the deployment in {self.deployment_path}"):
            if int(w3.eth.chain_id) != chain_id:
                return None
            code = bytes(w3.eth.get_code(Web3.to_checksum_address(address)))
        if not code:
            return None  # a fresh chain: the recorded contract is gone, deploy anew
        try:
            client = RunLedgerClient(rpc_url, address, account)
        except LedgerContractMismatchError as err:
            found = "0x" + keccak(code).hex()
            recorded = deployment.get("runtime_code_hash")
            if recorded == found:
                why = (f"{self.deployment_path} records {deployment.get('version', 'another version')} "
                       "there, which this twinloop cannot read")
            elif recorded is None:
                why = f"{self.deployment_path} was written by an older twinloop (no code hash in it)"
            else:
                why = (f"{self.deployment_path} records code hash {recorded} for it: the file points at "
                       "another contract")
            raise LedgerContractMismatchError(
                f"{err}; {why}. Its records stay on the chain; delete {self.deployment_path} to deploy "
                f"a new {artifact.load().version}") from err
        if not client.is_recorder(account.address):
            raise LedgerUnauthorisedError(
                f"dev recorder {account.address} from {self.key_path} is not a recorder on "
                f"RunLedger {client.address}; delete {self.deployment_path} to deploy a new ledger")
        return client

    def _deploy(self, rpc_url: str, account: LocalAccount) -> RunLedgerClient:
        client = RunLedgerClient.deploy(rpc_url, account)
        record = {"address": client.address, "chain_id": client.chain_id,
                  "contract": client.artifact.name, "version": client.version,
                  "runtime_code_hash": client.artifact.runtime_code_hash,
                  "deploy_tx": client.deploy_tx, "deploy_block": client.deploy_block}
        tmp = self.deployment_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, self.deployment_path)
        return client

    def __enter__(self) -> EmbeddedChain:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
