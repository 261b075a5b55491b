"""The embedded IPFS store: Kubo-identical CIDs, faithful round trips and tamper detection."""

from __future__ import annotations

import functools
import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from twinloop.ledger.ipfs import (CHUNK_SIZE, MAX_LINKS, RAW, BlockStore, EmbeddedIpfs, _decode, cid_codec,
                                  cid_of, import_file)
from twinloop.errors import LedgerError, LedgerTamperedError, RunNotFoundError

EMPTY_CID = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
HELLO_CID = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
# ipfs add --cid-version=1 (raw leaves): a file of at most one chunk is one raw block, its CID the
# sha2-256 of the bytes. Empty and "hello\n" are the CIDs Kubo prints (the latter in Kubo's gateway fixtures).
V1_EMPTY = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
V1_HELLO_WORLD = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
V1_HELLO = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"
TWO_LEVEL = MAX_LINKS * CHUNK_SIZE + CHUNK_SIZE + 123  # root -> [full 174-leaf node, 2-leaf node]
SIZES = [
    0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 5_000_000,
    pytest.param(TWO_LEVEL, marks=pytest.mark.slow, id="two-level"),
]
# CIDv1 roots of _payload(size), pinned so CI checks them without any tool. ipfs_cid has no flag for
# --cid-version=1 (its "CIDv1" is the CIDv0 root re-encoded, a DAG without raw leaves), and no Kubo
# can run here: the multi-chunk values are this importer's own, kept as regression vectors.
V1_ROOTS = {
    0: V1_EMPTY,
    1: "bafkreiekgmp53zydf4z2ohq3fysx3aawny2i4ah4wf4rj5el3nl2drrqa4",
    CHUNK_SIZE: "bafkreih2bk74eu5axngebs6vftmmkcaqboysjjy726xzy5hksnqmfgw5fy",
    CHUNK_SIZE + 1: "bafybeidbbs6ocod3v27jtr4uhvc6n55y3gbrtur3bvjsnraudtbxkozi2y",
    5_000_000: "bafybeia7lw2cn5p3iscw3yazt4ekjn7tocnvyu4qoqaxd7wqmecyrkldmy",
    TWO_LEVEL: "bafybeidpdeca7m3sx4z2iavwybkqxshzvfomewpo3umqb4bjohgzho5n7q",
}
needs_ipfs_cid = pytest.mark.skipif(
    shutil.which("ipfs_cid") is None,
    reason="/usr/bin/ipfs_cid (Debian package ipfs-cid) is not installed; no reference CIDs")


@functools.cache
def _payload(size: int) -> bytes:
    """Seeded random bytes, so each size is the same file on every run."""
    return random.Random(size).randbytes(size)


def _reference_cid(path: Path, key: str = "CIDv0") -> str:
    """The CID that the independent ipfs_cid tool computes for a file (it takes no options)."""
    out = subprocess.run(["ipfs_cid", str(path)], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("{"))
    return json.loads(line)[key]


def _block_path(store: BlockStore, cid: str) -> Path:
    path = store.path(cid)
    assert path.is_file(), f"block {cid} was not stored at {path}"
    return path


def test_pinned_vectors() -> None:
    assert import_file(b"")[0] == EMPTY_CID
    assert import_file(b"hello world\n")[0] == HELLO_CID
    assert import_file(b"hello world\n")[1] == [(HELLO_CID, bytes.fromhex(
        "0a120802120c" + b"hello world\n".hex() + "180c"))]


def test_pinned_cidv1_raw_leaf_vectors() -> None:
    assert import_file(b"", cid_version=1) == (V1_EMPTY, [(V1_EMPTY, b"")])
    assert import_file(b"hello world\n", cid_version=1) == (V1_HELLO_WORLD, [(V1_HELLO_WORLD, b"hello world\n")])
    assert import_file(b"hello\n", cid_version=1)[0] == V1_HELLO
    assert cid_of(b"hello\n", 1, RAW) == V1_HELLO


@pytest.mark.parametrize("size", SIZES)
def test_cidv1_raw_leaves_layout(size: int) -> None:
    """Raw leaves are the chunks themselves; internal nodes are CIDv1 dag-pb linking CIDv1s with Tsize = chunk size."""
    data = _payload(size)
    root, blocks = import_file(data, cid_version=1)
    assert root == V1_ROOTS[size]
    by_cid = dict(blocks)
    leaves = [cid for cid, _ in blocks if cid_codec(cid) == RAW]
    assert all(cid.startswith("bafk") and cid == cid_of(by_cid[cid], 1, RAW) for cid in leaves)
    assert all(cid.startswith("bafy") and cid == cid_of(by_cid[cid], 1) for cid in by_cid if cid not in leaves)
    assert len(leaves) == len({data[i:i + CHUNK_SIZE] for i in range(0, max(size, 1), CHUNK_SIZE)})
    if size > CHUNK_SIZE:
        children, inline, filesize, sizes = _decode(by_cid[root])
        assert inline == b"" and filesize == size and sum(sizes) == size
        assert all(c.startswith("baf") for c in children)


@needs_ipfs_cid
@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE])
def test_cidv1_of_a_single_block_file_is_ipfs_cids_cidv1(size: int, tmp_path: Path) -> None:
    """What ipfs_cid's CIDv1 can check: a one-block file's dag-pb root (no raw leaves) as CIDv1."""
    path = tmp_path / "payload.bin"
    path.write_bytes(_payload(size))
    root, blocks = import_file(_payload(size))
    assert cid_of(dict(blocks)[root], 1) == _reference_cid(path, "CIDv1")


@pytest.mark.parametrize("size", SIZES)
def test_cidv1_add_then_cat_round_trips(size: int, tmp_path: Path) -> None:
    ipfs = EmbeddedIpfs(tmp_path)
    data = _payload(size)
    root = ipfs.add(data, cid_version=1)
    assert root == V1_ROOTS[size] and ipfs.cat(root) == data


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
    with pytest.raises(RunNotFoundError, match="bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby"):
        EmbeddedIpfs(tmp_path).cat("bafybeicg2rebjoofv4kbyovkw7af3rpiitvnl6i7ckcywaq6xjcxnc2mby")
    for bad in ("bafyBEIcg2", "bafy/../../x", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvykv",
                "bagaaierasords4njcts6vs7qvdjfcvgnume4hqohf65zsfguprqphs3icwea"):
        with pytest.raises(LedgerError, match="not a CIDv0 or base32 CIDv1"):
            store.path(bad)
    with pytest.raises(LedgerError, match="refusing"):
        store.put(V1_HELLO, b"not hello")
    with pytest.raises(LedgerError, match="refusing"):
        store.put(HELLO_CID, b"not hello")
    assert not store.has(HELLO_CID)
    assert list(tmp_path.rglob(".tmp-*")) == []
