"""A Kubo daemon as twinloop's IPFS store (``ledger/store.py``'s ``IpfsStore``), through its RPC API (``/api/v0``).

Every call is an HTTP POST (Kubo answers GET with 405) with arguments as query
parameters and files as multipart/form-data in a field named ``file``; errors
come back as HTTP 500 with ``{"Message": ..., "Code": ..., "Type": "error"}``.

Nothing the node returns is trusted: the CID it gives for added bytes must be
the one twinloop computes for them (``import_file``), bytes from ``cat`` are
re-hashed to their CID, a block from ``block/get`` must hash to its CID, and a
CAR from ``dag/export`` is checked block by block and reassembled.

ipfshttpclient is not used: it is unmaintained since 2021 and refuses every
Kubo since 0.8 (its version check), hence plain httpx.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

import httpx

from twinloop.errors import (BlockNotFoundError, ConfigError, LedgerError, LedgerTamperedError,
                             LedgerUnavailableError)
from twinloop.ledger.car import read_car
from twinloop.ledger.ipfs import (CHUNK_SIZE, EmbeddedIpfs, cid_bytes, cid_codec, cid_of, cid_version_of, hashes_to,
                                  import_file)

#: Environment variable naming the Kubo RPC URL when ``--ipfs`` is not given.
IPFS_URL_ENV = "TWINLOOP_IPFS_URL"
#: ``add`` parameters reproducing the embedded store's layout (CIDv0, 256 KiB chunks, balanced, no raw leaves);
#: ``add(..., cid_version=1)`` sends cid-version=1 and raw-leaves=true, as ``ipfs add --cid-version=1`` does.
ADD_PARAMS = {"cid-version": "0", "chunker": f"size-{CHUNK_SIZE}", "raw-leaves": "false", "trickle": "false",
              "hash": "sha2-256", "pin": "true", "progress": "false"}
_NOT_FOUND = ("not found", "could not find")  # Kubo's words for a missing block (ipld.ErrNotFound)


class _MemoryStore:
    """A read-only block store over a dict."""

    def __init__(self, blocks: dict[str, bytes], where: str) -> None:
        self.blocks, self.where = blocks, where

    def get(self, cid: str) -> bytes:
        if cid not in self.blocks:
            raise LedgerTamperedError(f"IPFS block {cid} is missing from {self.where}")
        return self.blocks[cid]


class _CarReader(EmbeddedIpfs):
    """EmbeddedIpfs's ``cat`` (hashes, UnixFS structure, sizes) over the blocks of a CAR."""

    def __init__(self, blocks: dict[str, bytes], where: str) -> None:  # no BlockStore on disk
        self.store = _MemoryStore(blocks, where)  # type: ignore[assignment]


def _redact(url: str) -> str:
    """The URL without a password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class KuboIpfs:
    """The ``IpfsStore`` on a Kubo node (CAR export/import through ``dag/export``/``dag/import``); never trusted.

    ``url`` is the RPC API's base, e.g. ``http://127.0.0.1:5001`` (basic-auth
    credentials may be given in it, as ``API.Authorizations`` needs).
    ``timeout`` bounds each call in seconds; ``has_timeout`` bounds ``has``.
    """

    def __init__(self, url: str, timeout: float = 60.0, has_timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--ipfs {_redact(url)}: expected the http(s) URL of a Kubo RPC API, "
                              "e.g. http://127.0.0.1:5001")
        self.url = url.rstrip("/")
        self.timeout, self.has_timeout = timeout, has_timeout
        self.location = f"the IPFS node at {_redact(self.url)}"

    def _post(self, cmd: str, params: dict[str, str], data: bytes | None = None,
              timeout: float | None = None) -> httpx.Response:
        """POST ``/api/v0/<cmd>``; Kubo's error JSON is a LedgerError, an unreachable node LedgerUnavailableError."""
        files = {"file": ("file", data, "application/octet-stream")} if data is not None else None
        try:
            response = httpx.post(f"{self.url}/api/v0/{cmd}", params=params, files=files,
                                  timeout=timeout or self.timeout)
        except httpx.TimeoutException as err:
            raise LedgerUnavailableError(f"{self.location} did not answer {cmd} within "
                                         f"{timeout or self.timeout:g} s: {err}") from err
        except httpx.HTTPError as err:  # refused, reset, DNS, TLS
            raise LedgerUnavailableError(f"{self.location} cannot be reached ({cmd}): {err}") from err
        if response.status_code != 200:
            try:
                message = str(json.loads(response.content)["Message"])
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {response.status_code}: {response.text[:200].strip()}"
            error = BlockNotFoundError if any(w in message for w in _NOT_FOUND) else LedgerError
            what = f"{cmd} {params['arg']}" if "arg" in params else cmd
            raise error(f"{self.location} refused {what}: {message}")
        return response

    def _lines(self, response: httpx.Response, cmd: str) -> list[dict]:
        """The objects of a JSON or newline-delimited JSON answer."""
        try:
            return [json.loads(line) for line in response.text.splitlines() if line.strip()]
        except ValueError as err:
            raise LedgerError(f"{self.location} answered {cmd} with something that is not JSON: {err}") from None

    def add(self, data: bytes, cid_version: int = 0) -> str:
        """Add and pin a file; its CID, refused unless it equals the one twinloop computes for the bytes."""
        expected = import_file(data, cid_version)[0]
        params = {**ADD_PARAMS, "cid-version": str(cid_version), "raw-leaves": "true" if cid_version else "false"}
        answers = [a for a in self._lines(self._post("add", params, data), "add") if "Hash" in a]
        got = answers[-1]["Hash"] if answers else None
        if got != expected:
            layout = "raw leaves" if cid_version else "no raw leaves"
            raise LedgerTamperedError(
                f"{self.location} stored {len(data)} bytes as {got}, but they are {expected} (CIDv{cid_version}, "
                f"{CHUNK_SIZE}-byte chunks, balanced DAG, {layout}); refusing a CID twinloop cannot reproduce")
        return got

    def cat(self, cid: str) -> bytes:
        """A file's bytes, refused unless they re-hash (``import_file``, the CID's version) to ``cid``."""
        version = cid_version_of(cid)
        data = self._post("cat", {"arg": cid, "progress": "false"}).content
        got = import_file(data, version)[0]
        if got != cid:
            raise LedgerTamperedError(f"{self.location} returned {len(data)} bytes for {cid} that hash to {got}"
                                      + (" (a CIDv1 is re-hashed with raw leaves)" if version else ""))
        return data

    def has(self, cid: str) -> bool:
        """Whether the node holds the block (``block/stat``, offline: it does not search the network)."""
        cid_bytes(cid)
        try:
            answer = self._lines(self._post("block/stat", {"arg": cid, "offline": "true"},
                                            timeout=self.has_timeout), "block/stat")
        except BlockNotFoundError:
            return False
        return bool(answer) and answer[0].get("Key") == cid

    def pin(self, cid: str) -> None:
        """Pin a DAG recursively on the node."""
        cid_bytes(cid)
        pins = [p for a in self._lines(self._post("pin/add", {"arg": cid, "recursive": "true"}), "pin/add")
                for p in a.get("Pins") or []]
        if cid not in pins:
            raise LedgerError(f"{self.location} did not pin {cid} (it answered pins {pins})")

    def block_get(self, cid: str) -> bytes:
        """One raw block, refused unless it hashes to ``cid``."""
        cid_bytes(cid)
        block = self._post("block/get", {"arg": cid}).content
        if not hashes_to(cid, block):
            got = cid_of(block, cid_version_of(cid), cid_codec(cid))
            raise LedgerTamperedError(f"{self.location} returned a block for {cid} that hashes to {got}")
        return block

    def export_car(self, cid: str) -> bytes:
        """``dag/export``: a CARv1, refused unless every block hashes to its CID and they reassemble to ``cid``."""
        version = cid_version_of(cid)
        car = self._post("dag/export", {"arg": cid, "progress": "false"}).content
        where = f"the CAR {self.location} exported for {cid}"
        parsed = read_car(car, where)
        if parsed.roots != [cid]:
            raise LedgerTamperedError(f"{where} names the roots {parsed.roots}, not {cid}")
        reader = _CarReader(parsed.blocks, where)
        if import_file(reader.cat(cid), version)[0] != cid:
            raise LedgerTamperedError(f"{self.location} exported a CAR for {cid} that reassembles to another file")
        return car

    def import_car(self, car: bytes, name: str = "CAR") -> list[str]:
        """``dag/import`` with its roots pinned; the header's roots, once the node reports each pinned.

        The CAR is checked here first (every block against its CID), so a
        tampered file is refused naming the block before the node sees it.
        """
        roots = read_car(car, name).roots
        answers = self._lines(self._post("dag/import", {"pin-roots": "true"}, car), "dag/import")
        try:  # one {"Root": {"Cid": {"/": CID}, "PinErrorMsg": ""}} line per root (Stats only with stats=true)
            reported = [(str(a["Root"]["Cid"]["/"]), str(a["Root"].get("PinErrorMsg") or ""))
                        for a in answers if "Root" in a]
        except (KeyError, TypeError, AttributeError):
            raise LedgerError(f"{self.location} answered dag/import with a Root that is not "
                              f"{{Cid: {{'/': CID}}, PinErrorMsg}}: {answers}") from None
        failed = [f"{cid}: {error}" for cid, error in reported if error]
        if failed:
            raise LedgerError(f"{self.location} imported {name} but did not pin its roots: {'; '.join(failed)}")
        pinned = [cid for cid, _ in reported]
        if sorted(pinned) != sorted(roots):
            raise LedgerError(f"{self.location} imported {name} and reports the roots {pinned}; its header names "
                              f"{roots}")
        return roots
