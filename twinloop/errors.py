"""The one exception tree of twinloop, split by lifecycle phase.

Every error a user can cause or meet derives from ``TwinloopError``; the CLI
prints its message and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations


class TwinloopError(Exception):
    """Root of every error twinloop raises on purpose."""


class ConfigError(TwinloopError):
    """A scenario, rig profile or option is invalid; names file, line and key."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.file, self.line, self.key = file, line, key
        where = ":".join(str(p) for p in (file, line) if p is not None)
        parts = [where] if where else []
        if key:
            parts.append(f"key '{key}'")
        super().__init__(f"{', '.join(parts)}: {message}" if parts else message)


class TransportError(TwinloopError):
    """Talking to a device failed; the run's outcome becomes ``error``."""


class TransportUnavailableError(TransportError):
    """No transport for an address scheme, or its optional library is missing."""


class TransportInitError(TransportError):
    """The transport could not connect or set up the device."""


class TransportOperationError(TransportError):
    """A read or write was refused or returned garbage."""


class TransportTimeoutError(TransportError):
    """The device did not answer within the caller's timeout."""


class TwinError(TwinloopError):
    """A twin model or its actor failed or was misconfigured."""


class LedgerError(TwinloopError):
    """Committing to or reading from IPFS or the chain failed."""


class LedgerUnavailableError(LedgerError):
    """IPFS or the chain cannot be reached (or anvil cannot be started)."""


class LedgerTamperedError(LedgerError):
    """Stored bytes or a record do not match what was committed."""


class LedgerUnauthorisedError(LedgerError):
    """The signing address lacks the role the contract requires."""


class LedgerContractMismatchError(LedgerError):
    """The code at a ledger address is not the RunLedger this twinloop ships (a look-alike or another version)."""


class LedgerRevertedError(LedgerError):
    """The contract refused a transaction for a reason no narrower ledger error names."""


class BaselineRefusedError(LedgerRevertedError):
    """The run cannot become a baseline: it did not pass."""


class LedgerTransactionFailedError(LedgerError):
    """A transaction was mined with status 0 and replaying it gave no revert reason (e.g. out of gas)."""


class RunAlreadyRecordedError(LedgerError):
    """The run id is already on the chain; run ids are written once."""


class RunNotFoundError(LedgerError):
    """No chain record or bundle exists for the run id or CID asked for."""


class BlockNotFoundError(RunNotFoundError):
    """An IPFS block of a bundle (or manifest) is not in the store asked: the evidence is elsewhere, not forged."""


class BatchAlreadyRecordedError(LedgerError):
    """A batch with this Merkle root is already on the chain; batch roots are written once."""


class BatchNotFoundError(LedgerError):
    """No batch with this Merkle root is recorded on the chain."""


class BatchProofError(LedgerTamperedError):
    """A run's inclusion proof, manifest or leaf does not match the batch recorded on chain."""
