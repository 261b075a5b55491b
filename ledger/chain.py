"""Client for the RunLedger contract, plus a zero-config embedded anvil chain.

Transactions are signed locally with an eth_account key, never by the node;
web3 and requests failures are turned into twinloop ``LedgerError``s.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from vyper import compile_code
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception
from web3.types import RPCEndpoint, TxReceipt

from twinloop.ledger.anvil import AnvilNode
from twinloop.errors import (
    LedgerError,
    LedgerUnauthorisedError,
    LedgerUnavailableError,
    RunAlreadyRecordedError,
    RunNotFoundError,
)

VERDICTS = {"pass": 1, "fail": 2, "error": 3}
_VERDICT_NAMES = {code: name for name, code in VERDICTS.items()}
_MAX_LENGTHS = {"dut_id": 64, "dut_version": 64, "bundle_cid": 100}
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
RECEIPT_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 10.0
DEV_FUNDING_WEI = 10_000 * 10**18
_CONNECTION_ERRORS = (requests.ConnectionError, requests.Timeout, ConnectionError)


@functools.cache
def compile_run_ledger() -> tuple[list, str]:
    """ABI and deployment bytecode of RunLedger.vy, compiled once per process."""
    source = importlib.resources.files("twinloop.ledger").joinpath("contracts/RunLedger.vy")
    out = compile_code(source.read_text(encoding="utf-8"), output_formats=["abi", "bytecode"])
    return out["abi"], out["bytecode"]


def dut_key(dut_id: str, dut_version: str) -> str:
    """The indexed ``dut_key`` topic of RunRecorded, for finding runs by DUT version."""
    return "0x" + keccak(abi_encode(["string", "string"], [dut_id, dut_version])).hex()


@dataclass(frozen=True)
class LedgerEntry:
    """One run as stored on chain; recorder and timestamp are set by the contract."""

    run_id: str
    scenario_hash: str
    dut_id: str
    dut_version: str
    bundle_cid: str
    verdict: str
    recorder: str = ""
    timestamp: int = 0


def _run_id_bytes(run_id: str) -> bytes:
    try:
        return uuid.UUID(run_id).bytes
    except (ValueError, TypeError, AttributeError) as err:
        raise LedgerError(f"run id {run_id!r} is not a UUID") from err


def _record_args(entry: LedgerEntry) -> tuple[bytes, bytes, str, str, str, int]:
    """Validate an entry and convert it to the contract's ``record`` arguments."""
    run_id = _run_id_bytes(entry.run_id)
    digest = entry.scenario_hash.removeprefix("0x")
    try:
        scenario_hash = bytes.fromhex(digest)
    except ValueError:
        scenario_hash = b""
    if len(scenario_hash) != 32:
        raise LedgerError(
            f"run {entry.run_id}: scenario hash {entry.scenario_hash!r} is not 64 hex chars"
        )
    for field, limit in _MAX_LENGTHS.items():
        if len(getattr(entry, field).encode("utf-8")) > limit:
            raise LedgerError(f"run {entry.run_id}: {field} is longer than {limit} bytes")
    if entry.verdict not in VERDICTS:
        raise LedgerError(
            f"run {entry.run_id}: verdict {entry.verdict!r} is not one of {sorted(VERDICTS)}"
        )
    return (run_id, scenario_hash, entry.dut_id, entry.dut_version, entry.bundle_cid,
            VERDICTS[entry.verdict])


def _connect(rpc_url: str) -> Web3:
    return Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": HTTP_TIMEOUT_S}))


def _plain_revert(err: ContractLogicError, what: str) -> LedgerError:
    return LedgerError(f"{what} was reverted: {err.message or err}")


@contextmanager
def _guard(rpc_url: str, what: str,
           on_revert: Callable[[ContractLogicError, str], LedgerError] = _plain_revert
           ) -> Iterator[None]:
    """Turn web3/requests exceptions raised while doing ``what`` into LedgerErrors."""
    try:
        yield
    except ContractLogicError as err:
        raise on_revert(err, what) from err
    except _CONNECTION_ERRORS as err:
        raise LedgerUnavailableError(
            f"chain at {rpc_url} is unreachable while {what}: {err}"
        ) from err
    except TimeExhausted as err:
        raise LedgerError(f"no receipt from {rpc_url} while {what}: {err}") from err
    except (Web3Exception, requests.RequestException, ValueError) as err:
        raise LedgerError(f"{what} failed on {rpc_url}: {err}") from err


def _send(w3: Web3, rpc_url: str, account: LocalAccount, build: Callable[[dict], dict],
          what: str, on_revert: Callable[[ContractLogicError, str], LedgerError] = _plain_revert
          ) -> TxReceipt:
    """Build, sign, send and await one transaction; fail unless its status is 1."""
    with _guard(rpc_url, what, on_revert):
        nonce = w3.eth.get_transaction_count(account.address, "pending")
        tx = build({"from": account.address, "nonce": nonce})
        signed = account.sign_transaction(tx)
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT_S)
    if receipt["status"] != 1:
        raise LedgerError(
            f"{what}: transaction {tx_hash.to_0x_hex()} failed on {rpc_url} (status 0)"
        )
    return receipt


class RunLedgerClient:
    """Reads and writes one deployed RunLedger contract as ``account``."""

    def __init__(self, rpc_url: str, address: str, account: LocalAccount) -> None:
        self.rpc_url = rpc_url
        self.account = account
        self._w3 = _connect(rpc_url)
        try:
            self.address = Web3.to_checksum_address(address)
        except ValueError as err:
            raise LedgerError(f"{address!r} is not an Ethereum address") from err
        with _guard(rpc_url, f"checking contract code at {self.address}"):
            code = self._w3.eth.get_code(self.address)
        if not code:
            raise LedgerError(f"no RunLedger contract at {self.address} on {rpc_url}")
        abi, _ = compile_run_ledger()
        self._contract: Contract = self._w3.eth.contract(address=self.address, abi=abi)

    @classmethod
    def deploy(cls, rpc_url: str, account: LocalAccount) -> RunLedgerClient:
        """Deploy a new RunLedger; ``account`` becomes its admin and first recorder."""
        abi, bytecode = compile_run_ledger()
        w3 = _connect(rpc_url)
        factory = w3.eth.contract(abi=abi, bytecode=bytecode)
        receipt = _send(w3, rpc_url, account, factory.constructor().build_transaction,
                        f"deploying RunLedger from {account.address}")
        return cls(rpc_url, receipt["contractAddress"], account)

    @property
    def chain_id(self) -> int:
        """Chain id of the node this client talks to."""
        with _guard(self.rpc_url, "reading the chain id"):
            return int(self._w3.eth.chain_id)

    def grant_recorder(self, address: str) -> str:
        """Let ``address`` record runs (admin only); returns the tx hash."""
        account = self._checksum(address)
        fn = self._contract.functions.grant_recorder(account)
        return self._transact(fn.build_transaction, f"granting recorder to {account}")

    def revoke_recorder(self, address: str) -> str:
        """Stop ``address`` recording runs (admin only); returns the tx hash."""
        account = self._checksum(address)
        fn = self._contract.functions.revoke_recorder(account)
        return self._transact(fn.build_transaction, f"revoking recorder from {account}")

    def is_recorder(self, address: str) -> bool:
        """Whether ``address`` currently holds the recorder role."""
        account = self._checksum(address)
        with _guard(self.rpc_url, f"reading the recorder role of {account}"):
            return bool(self._contract.functions.is_recorder(account).call())

    def record(self, entry: LedgerEntry) -> str:
        """Write one run (once per run id); returns the tx hash as 0x-hex."""
        fn = self._contract.functions.record(*_record_args(entry))
        run_id = str(uuid.UUID(entry.run_id))

        def on_revert(err: ContractLogicError, what: str) -> LedgerError:
            reason = str(err.message or err)
            if "run id already recorded" in reason:
                return RunAlreadyRecordedError(
                    f"run {run_id} is already recorded on RunLedger {self.address}")
            return self._revert_error(err, what)

        return self._transact(fn.build_transaction, f"recording run {run_id}", on_revert)

    def get(self, run_id: str) -> LedgerEntry:
        """The recorded run; RunNotFoundError if the run id was never recorded."""
        key = _run_id_bytes(run_id)
        with _guard(self.rpc_url, f"reading run {run_id} from RunLedger {self.address}"):
            run = self._contract.functions.get_run(key).call()
        (_, scenario_hash, dut_id, dut_version, bundle_cid, verdict, recorder,
         timestamp) = run
        if int(recorder, 16) == 0:
            raise RunNotFoundError(
                f"run {run_id} is not recorded on RunLedger {self.address} at {self.rpc_url}")
        return LedgerEntry(
            run_id=str(uuid.UUID(bytes=key)), scenario_hash=scenario_hash.hex(),
            dut_id=dut_id, dut_version=dut_version, bundle_cid=bundle_cid,
            verdict=_VERDICT_NAMES.get(verdict, f"unknown({verdict})"),
            recorder=Web3.to_checksum_address(recorder), timestamp=int(timestamp),
        )

    def recorded_tx(self, run_id: str) -> str | None:
        """Hash of the transaction that recorded the run (its RunRecorded log), or None if none is found."""
        key = _run_id_bytes(run_id)
        with _guard(self.rpc_url, f"finding the RunRecorded log of run {run_id}"):
            logs = self._contract.events.RunRecorded.get_logs(argument_filters={"run_id": key},
                                                              from_block=0)
        return logs[0]["transactionHash"].to_0x_hex() if logs else None

    def _transact(self, build: Callable[[dict], dict], what: str,
                  on_revert: Callable[[ContractLogicError, str], LedgerError] | None = None
                  ) -> str:
        receipt = _send(self._w3, self.rpc_url, self.account, build, what,
                        on_revert or self._revert_error)
        return receipt["transactionHash"].to_0x_hex()

    def _revert_error(self, err: ContractLogicError, what: str) -> LedgerError:
        reason = str(err.message or err)
        if "not a recorder" in reason:
            return LedgerUnauthorisedError(
                f"{self.account.address} is not a recorder on RunLedger {self.address}")
        if "not the admin" in reason:
            return LedgerUnauthorisedError(
                f"{self.account.address} is not the admin of RunLedger {self.address}")
        return LedgerError(f"RunLedger {self.address} refused {what}: {reason}")

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
    """A local anvil with a RunLedger deployed once and reused across restarts."""

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
        """The client for the recorded deployment, or None if it is gone or elsewhere."""
        try:
            deployment: dict[str, Any] = json.loads(self.deployment_path.read_text())
            address, chain_id = deployment["address"], int(deployment["chain_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        try:
            client = RunLedgerClient(rpc_url, address, account)
        except LedgerUnavailableError:
            raise
        except LedgerError:
            return None
        if client.chain_id != chain_id:
            return None
        if not client.is_recorder(account.address):
            raise LedgerUnauthorisedError(
                f"dev recorder {account.address} from {self.key_path} is not a recorder on "
                f"RunLedger {client.address}; delete {self.deployment_path} to deploy a new ledger")
        return client

    def _deploy(self, rpc_url: str, account: LocalAccount) -> RunLedgerClient:
        client = RunLedgerClient.deploy(rpc_url, account)
        chain_id = client.chain_id
        tmp = self.deployment_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"address": client.address, "chain_id": chain_id}, indent=2))
        os.replace(tmp, self.deployment_path)
        return client

    def __enter__(self) -> EmbeddedChain:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
