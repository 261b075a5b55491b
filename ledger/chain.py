"""Client for the RunLedger contract (version 3): roles, runs, batches, baselines, maintenance.

The contract's ABI and bytecode come from the shipped artifact
(``contracts/RunLedger.json``, see ``twinloop.ledger.artifact``); nothing is
compiled at run time, and a client refuses an address whose code is not that
artifact's runtime code. Transactions go through ``twinloop.ledger.tx``
(signed locally, every receipt's status checked, failures and reverts turned
into ``LedgerError`` subclasses that name the account, the contract and the
run); the values recorded are in ``twinloop.ledger.entries``; the
zero-config local anvil is ``twinloop.ledger.embedded``.

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

import math
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract

from twinloop.errors import (
    BaselineRefusedError,
    BatchAlreadyRecordedError,
    BatchNotFoundError,
    BatchProofError,
    LedgerContractMismatchError,
    LedgerError,
    LedgerRevertedError,
    LedgerTamperedError,
    LedgerUnauthorisedError,
    RunAlreadyRecordedError,
    RunNotFoundError,
)
from twinloop.ledger import artifact
from twinloop.ledger.batch import Manifest, build_manifest, parse_manifest
from twinloop.ledger.entries import (
    MAINTENANCE_LENGTHS,
    ROLES,
    VERDICT_NAMES,
    VERDICTS,
    BatchReceipt,
    BatchRecord,
    BatchSlot,
    LedgerEntry,
    MaintenanceRequest,
    RunSlot,
    batch_commitment,
    details_commitment,
    dut_key,
    hash32,
    record_args,
    role_flag,
    role_names,
    run_id_bytes,
)
from twinloop.ledger.ipfs import cid_digest, cid_from_digest
from twinloop.ledger.tx import RevertMap, connect, guard, send

__all__ = ["VERDICTS", "ROLES", "BatchReceipt", "BatchRecord", "LedgerEntry", "MaintenanceRequest",
           "RunLedgerClient", "dut_key", "role_names"]


def _topic(raw: bytes) -> str:
    """A 32-byte log topic: static values are left-padded, bytesN right-padded by the caller."""
    return "0x" + raw.rjust(32, b"\0").hex()



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
        self._w3 = connect(rpc_url)
        self.artifact = artifact.load()
        try:
            self.address = Web3.to_checksum_address(address)
        except ValueError as err:
            raise LedgerError(f"{address!r} is not an Ethereum address") from err
        with guard(rpc_url, f"checking contract code at {self.address}"):
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
        w3 = connect(rpc_url)
        factory = w3.eth.contract(abi=shipped.abi, bytecode=shipped.bytecode)
        receipt = send(w3, rpc_url, account, factory.constructor().build_transaction,
                        f"deploying RunLedger from {account.address}")
        client = cls(rpc_url, receipt["contractAddress"], account)
        client.deploy_tx = receipt["transactionHash"].to_0x_hex()
        client.deploy_block = int(receipt["blockNumber"])
        return client

    @property
    def chain_id(self) -> int:
        """Chain id of the node this client talks to."""
        with guard(self.rpc_url, "reading the chain id"):
            return int(self._w3.eth.chain_id)

    @property
    def version(self) -> str:
        """The contract version string of the shipped artifact (the deployed code matches it)."""
        return self.artifact.version

    def block_number(self) -> int:
        """The node's latest block number."""
        with guard(self.rpc_url, "reading the block number"):
            return int(self._w3.eth.block_number)

    # roles -----------------------------------------------------------------

    def grant_role(self, role: str, address: str) -> str:
        """Give ``address`` a role ("recorder", "reviewer" or "admin"; admin only); returns the tx hash."""
        flag, account = role_flag(role), self._checksum(address)
        fn = self._contract.functions.grant_role(flag, account)
        return self._transact(fn.build_transaction, f"granting {role} to {account}")

    def revoke_role(self, role: str, address: str) -> str:
        """Take a role from ``address`` (admin only); returns the tx hash."""
        flag, account = role_flag(role), self._checksum(address)
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
        flag, account = role_flag(role), self._checksum(address)
        with guard(self.rpc_url, f"reading the {role} role of {account}"):
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
        flag, address = role_flag(role), self._checksum(account)
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
        fn = self._contract.functions.record(*record_args(entry))
        run_id = str(uuid.UUID(entry.run_id))
        return self._transact(fn.build_transaction, f"recording run {run_id}",
                              self._reverts(run_id), gas=gas)

    def get(self, run_id: str) -> LedgerEntry:
        """The recorded run; RunNotFoundError if the run id was never recorded.

        Reads the run's slot, then its RunRecorded event in the block the slot
        names, and checks that the event's details are the ones the slot was
        written with (LedgerTamperedError otherwise).
        """
        key = run_id_bytes(run_id)
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
        with guard(self.rpc_url, f"reading the receipt of {entry.tx_hash}"):
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
                    else "0x" + hash32(scenario_hash, "scenario hash").hex())
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
        receipt = send(self._w3, self.rpc_url, self.account, fn.build_transaction, what,
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
        key = root if isinstance(root, bytes) else hash32(root, "batch root")
        if len(key) != 32:
            raise LedgerError(f"batch root {key.hex()} is not 32 bytes")
        name = "0x" + key.hex()
        with guard(self.rpc_url, f"reading batch {name} from RunLedger {self.address}"):
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
        with guard(self.rpc_url, f"reading the receipt of {tx_hash}"):
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
            run_id_bytes(entry.run_id), bytes.fromhex(entry.scenario_hash),
            bytes.fromhex(dut_key(entry.dut_id, entry.dut_version)[2:]),
            cid_digest(entry.bundle_cid), entry.recorder)
        return self._transact(fn.build_transaction, f"accepting run {entry.run_id} as a baseline",
                              self._reverts(entry.run_id))

    def baseline(self, scenario_hash: str, dut_id: str, dut_version: str) -> str | None:
        """The run id of the accepted baseline for a scenario and DUT version, or None."""
        scenario = hash32(scenario_hash, "scenario hash")
        key = bytes.fromhex(dut_key(dut_id, dut_version)[2:])
        with guard(self.rpc_url, f"reading the baseline of {scenario.hex()[:12]} {dut_id} {dut_version}"):
            run = bytes(self._contract.functions.baseline(scenario, key).call())
        return None if not any(run) else str(uuid.UUID(bytes=run))

    # maintenance -------------------------------------------------------------

    def request_maintenance(self, run_id: str, dut_id: str, dut_version: str, device: str,
                            rul_seconds: float, limit_seconds: float, reason: str) -> str:
        """Emit MaintenanceRequested (recorder only); seconds are whole, rounded down. Returns the tx hash."""
        key = run_id_bytes(run_id)
        for name, text in (("device", device), ("reason", reason)):
            if len(text.encode("utf-8")) > MAINTENANCE_LENGTHS[name]:
                raise LedgerError(f"run {run_id}: maintenance {name} is longer than "
                                  f"{MAINTENANCE_LENGTHS[name]} bytes")
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
        run_topic = None if run_id is None else "0x" + run_id_bytes(run_id).hex().ljust(64, "0")
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
        with guard(self.rpc_url, f"reading run {run_id} from RunLedger {self.address}"):
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
        with guard(self.rpc_url, what):
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
            with guard(self.rpc_url, f"reading block {number}"):
                self._block_times[number] = int(self._w3.eth.get_block(number)["timestamp"])
        return self._block_times[number]

    def _run_entry(self, log: Any) -> LedgerEntry:
        args = self._decode(self._contract.events.RunRecorded, log).args
        return LedgerEntry(
            run_id=str(uuid.UUID(bytes=bytes(args.run_id))), scenario_hash=bytes(args.scenario_hash).hex(),
            dut_id=args.dut_id, dut_version=args.dut_version,
            bundle_cid=cid_from_digest(bytes(args.bundle_digest)),
            verdict=VERDICT_NAMES.get(args.verdict, f"unknown({args.verdict})"),
            recorder=Web3.to_checksum_address(args.recorder), timestamp=self._block_time(log),
            block_number=int(log["blockNumber"]), tx_hash=log["transactionHash"].to_0x_hex(),
            tx_status=1,  # logs exist only for transactions that succeeded
            log_index=int(log["logIndex"]))

    def _transact(self, build: Callable[[dict], dict], what: str,
                  on_revert: RevertMap | None = None, gas: int | None = None) -> str:
        if self.read_only:
            raise LedgerUnauthorisedError(f"{what}: this client only reads RunLedger {self.address} "
                                          "(it was given no recorder key)")
        receipt = send(self._w3, self.rpc_url, self.account, build, what,
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

