"""An embedded IPFS blockstore whose file import yields exactly the CIDs of Kubo's ``ipfs add``.

Kubo's defaults (CIDv0, sha2-256, 256 KiB chunks, balanced DAG of <=174 links, dag-pb + UnixFS
File leaves) are reproduced, so a CID made here names the same bytes on any IPFS node. With
``cid_version=1`` the layout is that of ``ipfs add --cid-version=1``: raw leaves (codec 0x55) and
dag-pb internal nodes, every CID a base32 CIDv1 (``bafk...`` for a raw block, ``bafy...`` for dag-pb).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from twinloop.errors import BlockNotFoundError, LedgerError, LedgerTamperedError
from twinloop.ledger.durable import make_dirs, replace_durably

CHUNK_SIZE = 262144
MAX_LINKS = 174
MAX_DEPTH = 16  # 174**15 chunks exceeds any real file; bounds recursion on a hostile DAG
UNIXFS_FILE = 2
_SHA256_PREFIX = b"\x12\x20"  # multihash code sha2-256, digest length 32
DAG_PB = 0x70
RAW = 0x55
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _b58encode(raw: bytes) -> str:
    """Encode bytes as base58btc (Bitcoin alphabet), leading zero bytes as '1'."""
    n, out = int.from_bytes(raw, "big"), []
    while n:
        n, rem = divmod(n, 58)
        out.append(_B58[rem])
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + "".join(reversed(out))


def cid_of(block: bytes, version: int = 0, codec: int = DAG_PB) -> str:
    """The CID of a block's bytes: CIDv0 (base58btc, dag-pb only) or CIDv1 (base32) of ``codec``."""
    return cid_from_bytes(_cid_prefix(version, codec) + _SHA256_PREFIX + hashlib.sha256(block).digest())


def _cid_prefix(version: int, codec: int) -> bytes:
    """What comes before the multihash in a binary CID of this version and codec."""
    if version == 0 and codec == DAG_PB:
        return b""
    if version == 1 and codec in (DAG_PB, RAW):
        return b"\x01" + bytes([codec])  # both codes are below 0x80: one-byte varints
    raise LedgerError(f"no CIDv{version} of codec 0x{codec:x} here (CIDv0 dag-pb, CIDv1 dag-pb or raw)")


def cid_from_bytes(raw: bytes) -> str:
    """The string form of a binary CID: base58btc for CIDv0, multibase base32 (``b...``) for CIDv1."""
    raw = bytes(raw)
    if len(raw) == 34 and raw.startswith(_SHA256_PREFIX):
        return _b58encode(raw)
    if len(raw) == 36 and raw[0] == 1 and raw[1] in (DAG_PB, RAW) and raw[2:4] == _SHA256_PREFIX:
        return "b" + base64.b32encode(raw).decode("ascii").lower().rstrip("=")
    raise LedgerError(f"not a sha2-256 CIDv0 or CIDv1 (dag-pb or raw): {raw.hex()}")


def cid_bytes(cid: str) -> bytes:
    """The binary form of a CID string (CIDv0: its multihash; CIDv1: version, codec, multihash).

    Only sha2-256 CIDv0 and base32 CIDv1 of dag-pb or raw are accepted, which also keeps a CID
    from naming a path outside the blockstore.
    """
    if cid.startswith("Qm"):
        return _multihash(cid)
    body = cid[1:]
    if cid.startswith("b") and body.isascii() and body.isalnum() and body == body.lower():
        try:
            raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
        except ValueError:
            raw = b""
        if len(raw) == 36 and cid_from_bytes_or_none(raw) == cid:
            return raw
    raise LedgerError(f"not a CIDv0 or base32 CIDv1 (sha2-256, dag-pb or raw): {cid!r}")


def cid_from_bytes_or_none(raw: bytes) -> str | None:
    """``cid_from_bytes``, or None where the bytes are no CID twinloop reads."""
    try:
        return cid_from_bytes(raw)
    except LedgerError:
        return None


def cid_codec(cid: str) -> int:
    """The multicodec of a CID: DAG_PB for CIDv0, the CIDv1's codec otherwise."""
    raw = cid_bytes(cid)
    return DAG_PB if len(raw) == 34 else raw[1]


def hashes_to(cid: str, block: bytes) -> bool:
    """Whether a block's sha2-256 digest is the one its CID names."""
    return cid_bytes(cid)[-32:] == hashlib.sha256(block).digest()


def _multihash(cid: str) -> bytes:
    """The sha2-256 multihash inside a base58btc CIDv0; rejects anything else (guarding paths)."""
    digits = [_B58.find(ch) for ch in cid]
    n = functools.reduce(lambda acc, digit: acc * 58 + digit, digits, 0)
    if -1 in digits or not cid.startswith("Qm") or n >> 256 != 0x1220:
        raise LedgerError(f"not a CIDv0 sha2-256 CID: {cid!r}")
    return n.to_bytes(34, "big")


def cid_version_of(cid: str) -> int:
    """0 for a CIDv0 (``Qm...``), 1 for a base32 CIDv1; LedgerError for anything else twinloop does not read."""
    return 0 if len(cid_bytes(cid)) == 34 else 1


def cid_digest(cid: str) -> bytes:
    """The 32-byte sha2-256 digest inside a CIDv0 (``Qm...``); LedgerError for anything else."""
    return _multihash(cid)[2:]


def cid_from_digest(digest: bytes) -> str:
    """The CIDv0 (``Qm...``) naming a 32-byte sha2-256 digest; the inverse of ``cid_digest``."""
    if len(digest) != 32:
        raise LedgerError(f"a sha2-256 digest has 32 bytes, not {len(digest)}")
    return _b58encode(_SHA256_PREFIX + bytes(digest))


def _varint(n: int) -> bytes:
    """Protobuf unsigned varint encoding."""
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _lfield(num: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _vfield(num: int, value: int) -> bytes:
    """A varint protobuf field (wire type 0)."""
    return _varint(num << 3) + _varint(value)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Read a varint at ``pos``; returns (value, next position)."""
    value = shift = 0
    while pos < len(buf) and shift < 64:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ValueError("truncated or overlong varint")


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Yield (field number, value) of a protobuf message; only wire types 0 and 2 occur here."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        if key & 7 == 0:
            value, pos = _read_varint(buf, pos)
            yield key >> 3, value
        elif key & 7 == 2:
            size, pos = _read_varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("truncated length-delimited field")
            yield key >> 3, buf[pos:pos + size]
            pos += size
        else:
            raise ValueError(f"unsupported protobuf wire type {key & 7}")


@dataclass(frozen=True)
class _Node:
    """A built node: its CID and the sizes its parent's link and UnixFS data need."""

    cid: str
    cid_bytes: bytes  # what a dag-pb link's Hash holds: the multihash (CIDv0) or the binary CIDv1
    tsize: int  # block size plus the Tsizes of its links (dag-pb cumulative size)
    filesize: int  # file bytes under this node


class _Builder:
    """Kubo's balanced layout (go-unixfs importer/balanced) over fixed-size chunks."""

    def __init__(self, data: bytes, cid_version: int) -> None:
        if cid_version not in (0, 1):
            raise LedgerError(f"cid_version is 0 or 1, not {cid_version!r}")
        self.data, self.pos, self.version = data, 0, cid_version
        self.blocks: dict[str, bytes] = {}

    def done(self) -> bool:
        """True once every byte has gone into a leaf."""
        return self.pos >= len(self.data)

    def store(self, block: bytes, codec: int, tsize: int, filesize: int) -> _Node:
        """Name a block (first one wins: equal chunks are one block) and describe it for its parent."""
        raw = _cid_prefix(self.version, codec) + _SHA256_PREFIX + hashlib.sha256(block).digest()
        cid = cid_from_bytes(raw)
        self.blocks.setdefault(cid, block)
        return _Node(cid, raw, tsize, filesize)

    def node(self, data: bytes | None, children: list[_Node]) -> _Node:
        """Encode one dag-pb node (Links before Data, as dag-pb canonical order requires)."""
        filesize = len(data or b"") + sum(c.filesize for c in children)
        unixfs = _vfield(1, UNIXFS_FILE) + (b"" if data is None else _lfield(2, data))
        unixfs += _vfield(3, filesize) + b"".join(_vfield(4, c.filesize) for c in children)
        links = b"".join(_lfield(2, _lfield(1, c.cid_bytes) + _lfield(2, b"") + _vfield(3, c.tsize))
                         for c in children)
        block = links + _lfield(1, unixfs)
        return self.store(block, DAG_PB, len(block) + sum(c.tsize for c in children), filesize)

    def leaf(self) -> _Node:
        """The next CHUNK_SIZE bytes as a leaf: UnixFS File data (CIDv0) or a raw block (CIDv1)."""
        chunk = self.data[self.pos:self.pos + CHUNK_SIZE]
        self.pos += len(chunk)
        if self.version == 1:
            return self.store(chunk, RAW, len(chunk), len(chunk))
        return self.node(chunk, [])

    def fill(self, children: list[_Node], depth: int) -> _Node:
        """Fill a node of the given depth with up to MAX_LINKS children, depth-first."""
        while len(children) < MAX_LINKS and not self.done():
            children.append(self.leaf() if depth == 1 else self.fill([], depth - 1))
        return self.node(None, children)


def import_file(data: bytes, cid_version: int = 0) -> tuple[str, list[tuple[str, bytes]]]:
    """Import bytes as ``ipfs add [--cid-version=1]`` does; gives the root CID and all distinct blocks.

    CIDv0 (the default, and what the chain stores) wraps every chunk in a UnixFS File node; CIDv1
    uses raw leaves as Kubo does, so a file of at most one chunk is a single raw block (``bafk...``).
    """
    builder = _Builder(bytes(data), cid_version)
    if builder.done():
        # the empty file: go-unixfs's NewLeafNode(nil): a raw empty block, or a File node without Data
        root = builder.leaf() if cid_version == 1 else builder.node(None, [])
    else:
        root, depth = builder.leaf(), 1
        while not builder.done():
            root, depth = builder.fill([root], depth), depth + 1
    return root.cid, list(builder.blocks.items())


def _link_cid(link: bytes) -> str:
    """The CID a dag-pb PBLink points to; ValueError unless it is one sha2-256 CID."""
    hashes = [v for n, v in _fields(link) if n == 1 and isinstance(v, bytes)]
    child = cid_from_bytes_or_none(hashes[0]) if len(hashes) == 1 else None
    if child is None:
        raise ValueError("link without a sha2-256 CID")
    return child


def links_of(cid: str, block: bytes) -> list[str]:
    """The CIDs a block links to: a dag-pb node's links, none for a raw block; ValueError if malformed."""
    if cid_codec(cid) == RAW:
        return []
    links = []
    for num, value in _fields(block):
        if num == 2 and isinstance(value, bytes):
            links.append(_link_cid(value))
        elif num != 1 or not isinstance(value, bytes):
            raise ValueError(f"unexpected dag-pb field {num}")
    return links


def _decode(block: bytes) -> tuple[list[str], bytes, int, list[int]]:
    """Decode a dag-pb UnixFS File node into (child CIDs, inline data, filesize, blocksizes)."""
    links: list[str] = []
    unixfs = b""
    for num, value in _fields(block):
        if num == 2 and isinstance(value, bytes):
            links.append(_link_cid(value))
        elif num == 1 and isinstance(value, bytes):
            unixfs = value
        else:
            raise ValueError(f"unexpected dag-pb field {num}")
    ufs = list(_fields(unixfs))
    ints = {n: v for n, v in ufs if n in (1, 3) and isinstance(v, int)}
    data = next((v for n, v in reversed(ufs) if n == 2 and isinstance(v, bytes)), b"")
    blocksizes = [v for n, v in ufs if n == 4 and isinstance(v, int)]
    if ints.get(1) != UNIXFS_FILE or 3 not in ints or len(blocksizes) != len(links):
        raise ValueError("not a UnixFS File node")
    return links, data, ints[3], blocksizes


class BlockStore:
    """Blocks as files ``root/<last two CID chars>/<cid>.data``, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, cid: str) -> Path:
        """Where a block lives; the CID is validated so it cannot escape ``root``."""
        cid_bytes(cid)
        return self.root / cid[-2:] / f"{cid}.data"

    def has(self, cid: str) -> bool:
        """Whether a block file exists for the CID (its bytes are not checked)."""
        return self.path(cid).is_file()

    def get(self, cid: str) -> bytes:
        """The stored bytes of a block, unverified; a missing block raises ``BlockNotFoundError``."""
        try:
            return self.path(cid).read_bytes()
        except FileNotFoundError:
            raise BlockNotFoundError(
                f"IPFS block {cid} is not in the blockstore at {self.root}") from None

    def put(self, cid: str, data: bytes) -> None:
        """Store a block durably (temp file, fsync, rename, fsync of its directory); the bytes must hash to the CID."""
        path = self.path(cid)
        if not hashes_to(cid, data):
            raise LedgerError(f"refusing to store block under {cid}: its bytes hash to "
                              f"{cid_of(data, 1 if cid[0] == 'b' else 0, cid_codec(cid))}")
        make_dirs(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".data")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            replace_durably(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class EmbeddedIpfs:
    """The ``IpfsStore`` (``ledger/store.py``) over a local BlockStore, verifying every block on the way out."""

    def __init__(self, root: Path) -> None:
        self.store = BlockStore(root)

    @property
    def location(self) -> str:
        """Where the bundles are, for messages."""
        return f"the local IPFS store ({self.store.root})"

    def has(self, cid: str) -> bool:
        """Whether the file's root block is stored (as ``KuboIpfs.has``)."""
        return self.store.has(cid)

    def add(self, data: bytes, cid_version: int = 0) -> str:
        """Import and store a file's blocks; returns its root CID (identical to Kubo's)."""
        root, blocks = import_file(data, cid_version)
        for cid, block in blocks:
            self.store.put(cid, block)
        return root

    def pin(self, cid: str) -> None:
        """Check the whole DAG under ``cid`` is here and intact (nothing is ever removed from this store)."""
        from twinloop.ledger.car import dag_blocks  # car builds on this module

        for _ in dag_blocks(self.store, cid):
            pass

    def block_get(self, cid: str) -> bytes:
        """One block's bytes, refused unless they hash to ``cid``."""
        block = self.store.get(cid)
        if not hashes_to(cid, block):
            raise LedgerTamperedError(f"IPFS block {cid} is corrupted: its bytes do not hash to its CID")
        return block

    def export_car(self, cid: str) -> bytes:
        """The DAG under ``cid`` as a CARv1 (``ledger/car.py``), every block checked."""
        from twinloop.ledger import car

        return car.export_car(self.store, cid)

    def import_car(self, data: bytes, name: str = "CAR") -> list[str]:
        """Check a CARv1 (every block, every root's whole DAG) and store its blocks; its roots."""
        from twinloop.ledger import car

        return car.import_car(data, self.store, name)

    def cat(self, cid: str) -> bytes:
        """Reassemble a file, checking each block's hash, the UnixFS structure and every size."""
        parts: list[bytes] = []
        self._read(cid, cid, parts, 0)
        return b"".join(parts)

    def _read(self, cid: str, root: str, parts: list[bytes], depth: int) -> int:
        """Append the content under ``cid`` to ``parts``; returns its length in bytes."""
        block = self.store.get(cid)
        if not hashes_to(cid, block):
            raise LedgerTamperedError(
                f"IPFS block {cid} of file {root} is corrupted: its bytes do not hash to its CID")
        if cid_codec(cid) == RAW:  # a raw leaf: the file's bytes themselves, no UnixFS wrapper
            parts.append(block)
            return len(block)
        try:
            links, data, filesize, blocksizes = _decode(block)
        except ValueError as exc:
            raise LedgerTamperedError(
                f"IPFS block {cid} of file {root} is malformed: {exc}") from None
        if depth > MAX_DEPTH:
            raise LedgerTamperedError(f"IPFS file {root} is nested deeper than {MAX_DEPTH} levels")
        parts.append(data)
        total = len(data)
        for child, expected in zip(links, blocksizes):
            got = self._read(child, root, parts, depth + 1)
            if got != expected:
                raise LedgerTamperedError(
                    f"IPFS block {child} of file {root} holds {got} bytes, "
                    f"its parent {cid} says {expected}")
            total += got
        if total != filesize:
            raise LedgerTamperedError(
                f"IPFS block {cid} of file {root} holds {total} bytes, "
                f"its filesize says {filesize}")
        return total
