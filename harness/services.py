"""The run's backing services: Ray for twins, IPFS and the chain for the ledger.

Embedded defaults need no set-up: a local Ray on 127.0.0.1, the embedded IPFS
blockstore and anvil, all under one home directory. A production chain is given
by URL, contract address and a recorder key from the environment; a Kubo node
by its RPC URL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from securesystemslib.signer import Signer

from twinloop.ledger.chain import RunLedgerClient
from twinloop.ledger.embedded import EmbeddedChain
from twinloop.ledger.dsse import signer_from_pem
from twinloop.ledger.ipfs import EmbeddedIpfs
from twinloop.ledger.kubo import IPFS_URL_ENV, KuboIpfs
from twinloop.ledger.store import IpfsStore
from twinloop.errors import ConfigError, TwinError
from twinloop.twins.cluster import ensure_ray, shutdown_ray

DEFAULT_HOME = Path(".twinloop")
KEY_ENV = "TWINLOOP_RECORDER_KEY"
#: A PEM private key (ed25519, ECDSA or RSA) that signs run attestations instead of the recorder's key.
SIGNING_KEY_ENV = "TWINLOOP_SIGNING_KEY"


@dataclass
class ServiceOptions:
    """Where the services are; ``None`` everywhere means the embedded defaults."""

    home: Path = DEFAULT_HOME
    ray_address: str | None = None
    chain_url: str | None = None
    contract: str | None = None
    ipfs_url: str | None = None  # a Kubo node's RPC API (else $TWINLOOP_IPFS_URL, else the embedded store)


def check_home(home: Path) -> Path:
    """``home`` as a usable directory (created if missing), or a ConfigError saying why not."""
    for part in (home, *home.parents):
        if part.exists() and not part.is_dir():
            raise ConfigError(f"--home {home}: {part} is a file, not a directory")
        if part.exists():
            break
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--home {home}: cannot create it: {err.strerror or err}") from err
    if not os.access(home, os.W_OK | os.X_OK):
        raise ConfigError(f"--home {home}: not writable")
    return home


class Services:
    """Starts what the options ask for and stops only what it started."""

    def __init__(self, options: ServiceOptions) -> None:
        self.options = options
        self.home = check_home(Path(options.home))
        ipfs_url = options.ipfs_url or os.environ.get(IPFS_URL_ENV)
        self.ipfs: IpfsStore = KuboIpfs(ipfs_url) if ipfs_url else EmbeddedIpfs(self.home / "ipfs")
        self._chain: EmbeddedChain | None = None
        self._ledger: RunLedgerClient | None = None
        self._started_ray = False

    @property
    def signer(self) -> Signer | None:
        """The bench's attestation signer from ``$TWINLOOP_SIGNING_KEY`` (a PEM file), or None: the recorder key."""
        path = os.environ.get(SIGNING_KEY_ENV)
        if not path:
            return None
        try:
            return signer_from_pem(Path(path).read_bytes())
        except OSError as err:
            raise ConfigError(f"${SIGNING_KEY_ENV}={path}: cannot read it: {err.strerror or err}") from err
        except ValueError as err:
            raise ConfigError(f"${SIGNING_KEY_ENV}={path}: not a PEM private key twinloop can sign with: "
                              f"{err}") from err

    @property
    def outbox(self) -> Path:
        """Bundles waiting to be committed (kept until IPFS and the chain have them)."""
        return self.home / "outbox"

    def start_ray(self, dashboard: bool = False) -> str | None:
        """Join ``ray_address`` (or ``$RAY_ADDRESS``) or start a local Ray on loopback; the dashboard URL."""
        import ray

        if ray.is_initialized():
            return ensure_ray()
        address = self.options.ray_address or os.environ.get("RAY_ADDRESS")
        try:
            url = ensure_ray(self.options.ray_address, dashboard=dashboard)
        except Exception as err:  # Ray reports start-up problems with many types
            hint = ""
            if address and os.environ.get("RAY_AUTH_MODE") != "token":
                hint = (" (if the cluster uses token authentication, as Ray 2.60 turns on where "
                        "~/.ray/auth_token exists, export RAY_AUTH_MODE=token and, if needed, RAY_AUTH_TOKEN)")
            raise TwinError(f"Ray did not start: {err}{hint}") from err
        self._started_ray = True
        return url

    @property
    def recorder(self) -> LocalAccount:
        """The recorder's key, found without reaching the chain: a run is signed and kept while the chain is down."""
        if self._ledger is not None and not self._ledger.read_only:
            return self._ledger.account
        if self.options.chain_url:
            key = os.environ.get(KEY_ENV)
            if not key:
                raise ConfigError(f"--chain needs the recorder's private key in ${KEY_ENV}")
            return Account.from_key(key)
        return EmbeddedChain(self.home).load_account()

    @property
    def ledger(self) -> RunLedgerClient:
        """The RunLedger client, starting the embedded anvil on first use."""
        return self.start_ledger()

    def start_ledger(self) -> RunLedgerClient:
        """Attach to the configured chain, or start anvil with RunLedger deployed."""
        if self._ledger is None:
            o = self.options
            if o.chain_url:
                if not o.contract:
                    raise ConfigError("--chain needs --contract (the RunLedger address)")
                key = os.environ.get(KEY_ENV)  # without one the client only reads (CI's gate needs no key)
                self._ledger = RunLedgerClient(o.chain_url, o.contract, Account.from_key(key) if key else None)
            else:
                self._chain = EmbeddedChain(self.home)
                self._ledger = self._chain.start()
        return self._ledger

    def stop(self) -> None:
        """Stop anvil and Ray if this object started them."""
        if self._chain is not None:
            self._chain.stop()
            self._chain, self._ledger = None, None
        if self._started_ray:
            shutdown_ray()
            self._started_ray = False

    def __enter__(self) -> "Services":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
