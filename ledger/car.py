"""CARv1 files (https://ipld.io/specs/transport/car/carv1/): a bundle's blocks in one file any IPFS node imports.

A CAR is a header, ``varint(len) + DAG-CBOR {"roots": [CID, ...], "version": 1}``, then one section per
block, ``varint(len(cid) + len(block)) + cid + block``. Blocks are written depth-first from the root,
each once, in link order: the order of Kubo's ``ipfs dag export``. Reading checks the version, the
roots, that every block hashes to its CID and that every root's DAG is complete, before storing anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cbor2

from twinloop.errors import LedgerError, LedgerTamperedError
from twinloop.ledger.ipfs import (BlockStore, _read_varint, _varint, cid_bytes, cid_from_bytes_or_none,
                                  hashes_to, links_of)

CID_TAG = 42  # DAG-CBOR's tag for a link; its byte string starts with the 0x00 multibase prefix


@dataclass(frozen=True)
class Car:
    """A parsed CAR: its roots and its blocks in file order."""

    roots: list[str]
    blocks: dict[str, bytes]


def encode_header(roots: list[str]) -> bytes:
    """The varint-prefixed DAG-CBOR header (cbor2's canonical map order is DAG-CBOR's: length first)."""
    header = cbor2.dumps({"roots": [cbor2.CBORTag(CID_TAG, b"\0" + cid_bytes(c)) for c in roots], "version": 1},
                         canonical=True)
    return _varint(len(header)) + header


def section(cid: str, block: bytes) -> bytes:
    """One block as a CAR section."""
    raw = cid_bytes(cid)
    return _varint(len(raw) + len(block)) + raw + block


def dag_blocks(store: BlockStore, root: str) -> Iterable[tuple[str, bytes]]:
    """The blocks under ``root``, depth-first in link order, each once; every block's hash is checked."""
    seen: set[str] = set()
    stack = [root]
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        block = store.get(cid)
        if not hashes_to(cid, block):
            raise LedgerTamperedError(f"IPFS block {cid} under {root} is corrupted: its bytes do not hash to its CID")
        try:
            links = links_of(cid, block)
        except ValueError as err:
            raise LedgerTamperedError(f"IPFS block {cid} under {root} is malformed: {err}") from None
        yield cid, block
        stack.extend(reversed(links))


def export_car(store: BlockStore, root: str) -> bytes:
    """The CARv1 of the DAG under ``root`` (one root), as ``ipfs dag export`` writes it."""
    return encode_header([root]) + b"".join(section(cid, block) for cid, block in dag_blocks(store, root))


def _header(data: bytes, name: str) -> tuple[list[str], int]:
    """The roots of a CAR header and where the first section starts."""
    try:
        size, pos = _read_varint(data, 0)
    except ValueError:
        raise LedgerError(f"{name}: not a CAR file: no header length") from None
    raw = data[pos:pos + size]
    if size == 0 or len(raw) < size:
        raise LedgerError(f"{name}: truncated CAR header ({len(raw)} of {size} bytes)")
    try:
        header = cbor2.loads(raw)
    except (cbor2.CBORDecodeError, ValueError) as err:
        raise LedgerError(f"{name}: the CAR header is not CBOR: {err}") from None
    if not isinstance(header, dict) or "version" not in header:
        raise LedgerError(f"{name}: the CAR header is not a map with a version")
    if header["version"] != 1:
        raise LedgerError(f"{name}: CAR version {header['version']!r}; only CARv1 is read "
                          "(CARv2: export with 'ipfs dag export', which writes CARv1)")
    links = header.get("roots")
    if set(header) != {"roots", "version"} or not isinstance(links, list) or not links:
        raise LedgerError(f"{name}: a CARv1 header is {{roots: [CID, ...], version: 1}} with at least one root")
    roots = []
    for link in links:
        cid = None
        if isinstance(link, cbor2.CBORTag) and link.tag == CID_TAG and isinstance(link.value, bytes) \
                and link.value[:1] == b"\0":
            cid = cid_from_bytes_or_none(link.value[1:])
        if cid is None:
            raise LedgerError(f"{name}: CAR root {link!r} is not a sha2-256 CIDv0 or CIDv1 (dag-pb or raw)")
        roots.append(cid)
    if cbor2.dumps(header, canonical=True) != raw:
        raise LedgerError(f"{name}: the CAR header is not canonical DAG-CBOR")
    return roots, pos + size


def read_car(data: bytes, name: str = "CAR") -> Car:
    """Parse and check a whole CARv1; LedgerTamperedError names a block whose bytes do not match its CID."""
    roots, pos = _header(data, name)
    blocks: dict[str, bytes] = {}
    while pos < len(data):
        try:
            size, start = _read_varint(data, pos)
        except ValueError:
            raise LedgerError(f"{name}: truncated CAR section length at byte {pos}") from None
        end = start + size
        if end > len(data):
            raise LedgerError(f"{name}: truncated CAR: the section at byte {pos} needs {size} bytes, "
                              f"{len(data) - start} are left")
        # a sha2-256 CID is 34 bytes (CIDv0) or 36 (CIDv1 of dag-pb or raw): the first byte says which
        cid_len = 34 if data[start] == 0x12 else 36
        cid = cid_from_bytes_or_none(data[start:start + cid_len]) if size >= cid_len else None
        if cid is None:
            raise LedgerError(f"{name}: the section at byte {pos} does not start with a sha2-256 CIDv0 or CIDv1 "
                              f"(dag-pb or raw): {data[start:start + 8].hex()}...")
        block = data[start + cid_len:end]
        if not hashes_to(cid, block):
            raise LedgerTamperedError(f"{name}: block {cid} (section at byte {pos}) is tampered: its bytes do not "
                                      "hash to its CID")
        blocks.setdefault(cid, block)
        pos = end
    return Car(roots, blocks)


def import_car(data: bytes, store: BlockStore, name: str = "CAR") -> list[str]:
    """Check a CAR (every block, every root's whole DAG present here or in ``store``), then store its blocks."""
    car = read_car(data, name)
    for root in car.roots:
        stack, seen = [root], set()
        while stack:
            cid = stack.pop()
            if cid in seen:
                continue
            seen.add(cid)
            block = car.blocks.get(cid)
            if block is None:
                if cid == root or not store.has(cid):
                    what = "root" if cid == root else f"block {cid} under root"
                    raise LedgerError(f"{name}: {what} {root} is not in the CAR")
                continue
            try:
                stack.extend(links_of(cid, block))
            except ValueError as err:
                raise LedgerTamperedError(f"{name}: block {cid} is malformed dag-pb: {err}") from None
    for cid, block in car.blocks.items():
        store.put(cid, block)
    return car.roots
