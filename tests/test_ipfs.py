"""The embedded IPFS store: Kubo-identical CIDs, faithful round trips and tamper detection."""

from __future__ import annotations

import functools
import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from twinloop.ledger.ipfs import (CHUNK_SIZE, MAX_LINKS, BlockStore, EmbeddedIpfs, _decode, cid_of,
                         import_file)
from twinloop.errors import LedgerError, LedgerTamperedError, RunNotFoundError

EMPTY_CID = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
HELLO_CID = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
TWO_LEVEL = MAX_LINKS * CHUNK_SIZE + CHUNK_SIZE + 123  # root -> [full 174-leaf node, 2-leaf node]
SIZES = [
    0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 5_000_000,
    pytest.param(TWO_LEVEL, marks=pytest.mark.slow, id="two-level"),
]
needs_ipfs_cid = pytest.mark.skipif(
    shutil.which("ipfs_cid") is None,
    reason="/usr/bin/ipfs_cid (Debian package ipfs-cid) is not installed; no reference CIDs")


@functools.cache
def _payload(size: int) -> bytes:
    """Seeded random bytes, so each size is the same file on every run."""
    return random.Random(size).randbytes(size)


def _reference_cid(path: Path) -> str:
    """The CIDv0 that the independent ipfs_cid tool computes for a file."""
    out = subprocess.run(["ipfs_cid", str(path)], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("{"))
    return json.loads(line)["CIDv0"]


def _block_path(store: BlockStore, cid: str) -> Path:
    path = store.path(cid)
    assert path.is_file(), f"block {cid} was not stored at {path}"
    return path


def test_pinned_vectors() -> None:
    assert import_file(b"")[0] == EMPTY_CID
    assert import_file(b"hello world\n")[0] == HELLO_CID
    assert import_file(b"hello world\n")[1] == [(HELLO_CID, bytes.fromhex(
        "0a120802120c" + b"hello world\n".hex() + "180c"))]


@needs_ipfs_cid
@pytest.mark.parametrize("size", SIZES)
def test_cid_matches_ipfs_cid(size: int, tmp_path: Path) -> None:
    data = _payload(size)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    assert import_file(data)[0] == _reference_cid(path)


@pytest.mark.parametrize("size", SIZES)
def test_blocks_hash_to_their_cids_and_include_root(size: int) -> None:
    root, blocks = import_file(_payload(size))
    cids = [cid for cid, _ in blocks]
    assert root in cids and len(set(cids)) == len(cids)
    assert all(cid_of(block) == cid for cid, block in blocks)
    leaves = -(-size // CHUNK_SIZE)
    internal = 0 if leaves <= 1 else -(-leaves // MAX_LINKS) + (leaves > MAX_LINKS)
    assert len(blocks) == max(leaves, 1) + internal


@pytest.mark.slow
def test_large_file_has_balanced_two_level_dag() -> None:
    root, blocks = import_file(_payload(TWO_LEVEL))
    by_cid = dict(blocks)
    children, _, filesize, sizes = _decode(by_cid[root])
    assert filesize == TWO_LEVEL and len(children) == 2
    assert sizes == [MAX_LINKS * CHUNK_SIZE, CHUNK_SIZE + 123]
    assert [len(_decode(by_cid[c])[0]) for c in children] == [MAX_LINKS, 2]


@pytest.mark.parametrize("size", SIZES)
def test_add_then_cat_round_trips(size: int, tmp_path: Path) -> None:
    ipfs = EmbeddedIpfs(tmp_path / "ipfs")
    data = _payload(size)
    cid = ipfs.add(data)
    assert cid == import_file(data)[0]
    assert ipfs.cat(cid) == data
    assert EmbeddedIpfs(tmp_path / "ipfs").cat(cid) == data  # survives a fresh instance


def test_hello_world_round_trip(tmp_path: Path) -> None:
    ipfs = EmbeddedIpfs(tmp_path)
    assert ipfs.add(b"hello world\n") == HELLO_CID
    assert ipfs.cat(HELLO_CID) == b"hello world\n"
    assert ipfs.store.has(HELLO_CID)
    assert ipfs.store.path(HELLO_CID) == tmp_path / HELLO_CID[-2:] / f"{HELLO_CID}.data"


def test_same_bytes_same_cid_different_bytes_different_cid(tmp_path: Path) -> None:
    data = _payload(CHUNK_SIZE + 1)
    assert import_file(data) == import_file(bytes(data))
    assert EmbeddedIpfs(tmp_path / "a").add(data) == EmbeddedIpfs(tmp_path / "b").add(data)
    flipped = bytearray(data)
    flipped[-1] ^= 1
    assert import_file(bytes(flipped))[0] != import_file(data)[0]
    assert import_file(b"a")[0] != import_file(b"b")[0]


@pytest.mark.parametrize("which", ["leaf", "root"])
def test_flipped_byte_in_a_block_raises_tampered(which: str, tmp_path: Path) -> None:
    ipfs = EmbeddedIpfs(tmp_path)
    data = _payload(3 * CHUNK_SIZE)
    root, blocks = import_file(data)
    assert ipfs.add(data) == root
    target = root if which == "root" else next(cid for cid, _ in blocks if cid != root)
    path = _block_path(ipfs.store, target)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(LedgerTamperedError) as err:
        ipfs.cat(root)
    message = str(err.value)
    assert target in message and root in message and "do not hash" in message


def test_missing_block_raises_not_found(tmp_path: Path) -> None:
    ipfs = EmbeddedIpfs(tmp_path)
    data = _payload(2 * CHUNK_SIZE)
    root, blocks = import_file(data)
    ipfs.add(data)
    leaf = next(cid for cid, _ in blocks if cid != root)
    _block_path(ipfs.store, leaf).unlink()
    assert not ipfs.store.has(leaf)
    with pytest.raises(RunNotFoundError, match=leaf):
        ipfs.cat(root)
    with pytest.raises(RunNotFoundError, match=HELLO_CID):
        ipfs.cat(HELLO_CID)


def test_hash_valid_blocks_that_are_not_files_are_rejected(tmp_path: Path) -> None:
    ipfs = EmbeddedIpfs(tmp_path)
    garbage = b"\xff\xff not protobuf"
    ipfs.store.put(cid_of(garbage), garbage)
    with pytest.raises(LedgerTamperedError, match=cid_of(garbage)):
        ipfs.cat(cid_of(garbage))
    directory = bytes.fromhex("0a020801")  # UnixFS Directory, not a File
    ipfs.store.put(cid_of(directory), directory)
    with pytest.raises(LedgerTamperedError, match="not a UnixFS File"):
        ipfs.cat(cid_of(directory))
    lying = bytes.fromhex("0a07080212016118") + b"\x05"  # data "a" but filesize 5
    ipfs.store.put(cid_of(lying), lying)
    with pytest.raises(LedgerTamperedError, match="filesize"):
        ipfs.cat(cid_of(lying))


def test_store_refuses_bad_cids_and_mismatched_bytes(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    with pytest.raises(LedgerError, match="not a CIDv0"):
        store.get("../../etc/passwd")
    with pytest.raises(LedgerError, match="not a CIDv0"):
        EmbeddedIpfs(tmp_path).cat("bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby")
    with pytest.raises(LedgerError, match="refusing"):
        store.put(HELLO_CID, b"not hello")
    assert not store.has(HELLO_CID)
    assert list(tmp_path.rglob(".tmp-*")) == []
