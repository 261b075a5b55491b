"""A zero-config local chain: anvil on 127.0.0.1 with one RunLedger deployed once and reused.

For development and CI only: the recorder key is a dev key generated in the
twinloop home on first use (mode 0600); production benches attach to their
own chain with keys from a keystore or the environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3
from web3.types import RPCEndpoint

from twinloop.errors import LedgerContractMismatchError, LedgerError, LedgerUnauthorisedError
from twinloop.ledger import artifact
from twinloop.ledger.anvil import AnvilNode
from twinloop.ledger.chain import RunLedgerClient
from twinloop.ledger.durable import write_atomic
from twinloop.ledger.tx import connect, guard

DEV_FUNDING_WEI = 10_000 * 10**18


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
        w3 = connect(rpc_url)
        with guard(rpc_url, f"funding {address}"):
            w3.manager.request_blocking(
                RPCEndpoint("anvil_setBalance"), [Web3.to_checksum_address(address), hex(wei)])

    def _attach(self, rpc_url: str, account: LocalAccount) -> RunLedgerClient | None:
        """The client for the recorded deployment, or None if there is none or its contract is gone."""
        try:
            deployment: dict[str, Any] = json.loads(self.deployment_path.read_text())
            address, chain_id = deployment["address"], int(deployment["chain_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        w3 = connect(rpc_url)
        with guard(rpc_url, f"checking the deployment in {self.deployment_path}"):
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
        write_atomic(self.deployment_path, (json.dumps(record, indent=2) + "\n").encode())
        return client

    def __enter__(self) -> EmbeddedChain:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
