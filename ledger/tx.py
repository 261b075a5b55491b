"""Sending RunLedger transactions and turning web3's failures into twinloop LedgerErrors.

Transactions are signed locally with an eth_account key, never by the node;
every receipt's status is checked (a transaction sent with an explicit gas
value can be mined with status 0 without web3 raising), and web3 and
requests failures and contract reverts become ``LedgerError`` subclasses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception
from web3.types import TxReceipt

from twinloop.errors import LedgerError, LedgerRevertedError, LedgerTransactionFailedError, LedgerUnavailableError

RECEIPT_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 10.0
CONNECTION_ERRORS = (requests.ConnectionError, requests.Timeout, ConnectionError)
REVERT_PREFIX = "execution reverted: "

#: (revert reason, what was being done) -> the error to raise
RevertMap = Callable[[str, str], LedgerError]


def connect(rpc_url: str) -> Web3:
    """A Web3 over HTTP with a bounded request timeout."""
    return Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": HTTP_TIMEOUT_S}))


def revert_reason(err: ContractLogicError) -> str:
    """The contract's revert message, without web3's prefix."""
    return str(err.message or err).removeprefix(REVERT_PREFIX)


def plain_revert(reason: str, what: str) -> LedgerError:
    """The default RevertMap: a LedgerRevertedError saying what was reverted and why."""
    return LedgerRevertedError(f"{what} was reverted: {reason}")


@contextmanager
def guard(rpc_url: str, what: str, on_revert: RevertMap = plain_revert) -> Iterator[None]:
    """Turn web3/requests exceptions raised while doing ``what`` into LedgerErrors."""
    try:
        yield
    except ContractLogicError as err:
        raise on_revert(revert_reason(err), what) from err
    except CONNECTION_ERRORS as err:
        raise LedgerUnavailableError(
            f"chain at {rpc_url} is unreachable while {what}: {err}"
        ) from err
    except TimeExhausted as err:
        raise LedgerError(f"no receipt from {rpc_url} while {what}: {err}") from err
    except (Web3Exception, requests.RequestException, ValueError) as err:
        raise LedgerError(f"{what} failed on {rpc_url}: {err}") from err


def replay_reason(w3: Web3, tx: dict[str, Any], receipt: TxReceipt) -> str | None:
    """Why a mined transaction failed: replay it as a call on the state before its block, then after."""
    call = {k: tx[k] for k in ("from", "to", "data", "value", "gas") if k in tx}
    for block in (receipt["blockNumber"] - 1, receipt["blockNumber"]):
        try:
            w3.eth.call(call, block_identifier=block)  # type: ignore[arg-type]
        except ContractLogicError as err:
            return revert_reason(err)
        except Exception:  # out of gas, pruned state, ...: no reason to be had here
            continue
    return None


def send(w3: Web3, rpc_url: str, account: LocalAccount, build: Callable[[dict], dict],
          what: str, on_revert: RevertMap = plain_revert, gas: int | None = None) -> TxReceipt:
    """Build, sign, send and await one transaction; raise unless its receipt's status is 1.

    Without ``gas`` the node estimates it, and a revert shows up then, with its
    reason. With an explicit ``gas`` nothing is estimated and a failing
    transaction is mined with status 0 without web3 raising: the status is
    checked here, and the reason is recovered by replaying the call.
    """
    with guard(rpc_url, what, on_revert):
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
        reason = replay_reason(w3, tx, receipt)
        if reason is not None:
            err = on_revert(reason, what)
            raise type(err)(f"{err} ({failed})")
        used, limit = receipt["gasUsed"], tx.get("gas")
        why = (f"it ran out of gas (limit {limit})" if limit is not None and used >= limit
               else f"replaying it gave no revert reason (gas used {used} of {limit})")
        raise LedgerTransactionFailedError(f"{what}: {failed}; {why}")
    return receipt
