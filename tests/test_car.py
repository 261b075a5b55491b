"""CARv1 export and import: spec-exact bytes, round trips for CIDv0 and CIDv1, and refusals."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest

from twinloop.errors import LedgerError, LedgerTamperedError
from twinloop.harness.cli import main
from twinloop.harness.services import KEY_ENV, Services
from twinloop.ledger.car import encode_header, export_car, import_car, read_car, section
from twinloop.ledger.chain import LedgerEntry
from twinloop.ledger.ipfs import CHUNK_SIZE, BlockStore, EmbeddedIpfs, import_file

HELLO = b"hello world\n"
# The CAR of "hello world\n" (CIDv0 QmT78z...), by hand from the CARv1 spec:
HELLO_CAR = bytes.fromhex(
    "38"                                      # header length 56
    "a2" "65" + b"roots".hex() +              # DAG-CBOR map(2), "roots"
    "81" "d82a" "5823" "00"                   # array(1), tag 42, bytes(35), multibase identity prefix
    "1220" "46d44814b9c5af141c3aaab7c05dc5e844ead5f91f12858b021eba45768b4c0e"  # sha2-256 multihash
    "67" + b"version".hex() + "01"            # "version": 1
    "36"                                      # section length 54 = 34-byte CIDv0 + 20-byte block
    "1220" "46d44814b9c5af141c3aaab7c05dc5e844ead5f91f12858b021eba45768b4c0e"
    "0a120802120c" + HELLO.hex() + "180c")    # dag-pb { Data: UnixFS File "hello world\n", filesize 12 }
# The same bytes with CIDv1 raw leaves: one raw block, CID 01 55 1220 <sha256("hello world\n")>.
HELLO_V1_CAR = bytes.fromhex(
    "3a" "a265" + b"roots".hex() + "81d82a5825" "00" "01551220"
    "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447" "67" + b"version".hex() + "01"
    "30" "01551220" "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447" + HELLO.hex())
SIZES = [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3_000_000]


def _payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def _car(data: bytes, tmp_path: Path, cid_version: int = 0) -> tuple[str, bytes]:
    ipfs = EmbeddedIpfs(tmp_path / "src")
    root = ipfs.add(data, cid_version)
    return root, export_car(ipfs.store, root)


def test_hello_world_car_is_the_hand_computed_bytes(tmp_path: Path) -> None:
    assert _car(HELLO, tmp_path) == ("QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o", HELLO_CAR)
    assert _car(HELLO, tmp_path, 1) == ("bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4", HELLO_V1_CAR)
    car = read_car(HELLO_CAR)
    assert car.roots == ["QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"]
    assert car.blocks == dict(import_file(HELLO)[1])


@pytest.mark.parametrize("cid_version", [0, 1])
@pytest.mark.parametrize("size", SIZES)
def test_round_trip_reproduces_cid_and_bytes(size: int, cid_version: int, tmp_path: Path) -> None:
    data = _payload(size)
    root, car = _car(data, tmp_path, cid_version)
    assert root == import_file(data, cid_version)[0]
    parsed = read_car(car)
    assert parsed.roots == [root] and list(parsed.blocks)[0] == root  # depth-first from the root
    assert sorted(parsed.blocks.items()) == sorted(import_file(data, cid_version)[1])
    assert import_car(car, BlockStore(tmp_path / "dst")) == [root]
    assert EmbeddedIpfs(tmp_path / "dst").cat(root) == data
    assert export_car(BlockStore(tmp_path / "dst"), root) == car


def test_blocks_are_depth_first_in_link_order_each_once(tmp_path: Path) -> None:
    data = bytes(3 * CHUNK_SIZE) + b"tail"  # three equal zero chunks: one block, written once
    root, car = _car(data, tmp_path)
    order = list(read_car(car).blocks)
    assert order[0] == root and len(order) == 3  # root, the zero chunk, the tail
    assert order[1:] == [cid for cid, _ in import_file(data)[1] if cid != root]


def test_tampered_block_is_refused_naming_its_cid(tmp_path: Path) -> None:
    root, car = _car(_payload(CHUNK_SIZE + 1), tmp_path)
    tampered = bytearray(car)
    tampered[-3] ^= 1  # inside the last block (a 9-byte leaf)
    last = list(read_car(car).blocks)[-1]
    with pytest.raises(LedgerTamperedError, match=f"block {last} .*tampered"):
        import_car(bytes(tampered), BlockStore(tmp_path / "dst"))
    assert not list((tmp_path / "dst").rglob("*.data"))  # nothing stored from a refused CAR


def test_wrong_version_is_refused(tmp_path: Path) -> None:
    header = bytes.fromhex("a265") + b"roots" + bytes.fromhex("80") + b"\x67version\x02"
    with pytest.raises(LedgerError, match="CAR version 2; only CARv1"):
        read_car(bytes([len(header)]) + header)
    no_roots = bytes.fromhex("a265") + b"roots" + bytes.fromhex("80") + b"\x67version\x01"
    with pytest.raises(LedgerError, match="at least one root"):
        read_car(bytes([len(no_roots)]) + no_roots)
    with pytest.raises(LedgerError, match="not CBOR|not a map"):
        read_car(b"\x03\xff\xff\xff")


def test_missing_root_block_is_refused(tmp_path: Path) -> None:
    root, _ = _car(HELLO, tmp_path)
    other = import_file(b"other")
    car = encode_header([root]) + section(other[0], other[1][0][1])
    with pytest.raises(LedgerError, match=f"root {root} is not in the CAR"):
        import_car(car, BlockStore(tmp_path / "dst"))


def test_missing_inner_block_is_refused(tmp_path: Path) -> None:
    root, car = _car(_payload(CHUNK_SIZE + 1), tmp_path)
    blocks = read_car(car).blocks
    leaf = list(blocks)[1]
    partial = encode_header([root]) + b"".join(section(c, b) for c, b in blocks.items() if c != leaf)
    with pytest.raises(LedgerError, match=f"block {leaf} under root {root} is not in the CAR"):
        import_car(partial, BlockStore(tmp_path / "dst"))


@pytest.mark.parametrize("cut", [1, 20, 60, -1])
def test_truncated_file_is_refused(cut: int, tmp_path: Path) -> None:
    _, car = _car(HELLO, tmp_path)
    with pytest.raises(LedgerError, match="truncated"):
        read_car(car[:cut])


def test_export_import_into_a_fresh_home_cats_the_bundle(tmp_path: Path) -> None:
    bundle = b'{"run_id":"x","samples":[1,2,3]}' * 20000
    root, car = _car(bundle, tmp_path)
    path = tmp_path / "run.car"
    path.write_bytes(car)
    assert main(["ledger", "import", str(path), "--home", str(tmp_path / "fresh")]) == 0
    assert EmbeddedIpfs(tmp_path / "fresh" / "ipfs").cat(root) == bundle


def test_cli_exports_a_recorded_run_and_imports_it(twinloop_ledger: Services, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    ledger = twinloop_ledger.ledger
    bundle = _payload(CHUNK_SIZE + 7)
    cid = twinloop_ledger.ipfs.add(bundle)
    run_id = str(uuid.uuid4())
    ledger.record(LedgerEntry(run_id, "5e" * 32, "pump-ctrl", "2.4.1", cid, "pass"))
    where = ["--chain", ledger.rpc_url, "--contract", ledger.address, "--home", str(twinloop_ledger.home)]
    monkeypatch.delenv(KEY_ENV, raising=False)  # reading a run needs no key

    assert main(["ledger", "export", run_id, *where]) == 0
    car = capsysbinary.readouterr().out
    assert read_car(car).roots == [cid]
    path = tmp_path / "run.car"
    assert main(["ledger", "export", run_id, "-o", str(path), *where]) == 0
    assert path.read_bytes() == car and b"written to" in capsysbinary.readouterr().out

    fresh = tmp_path / "fresh"
    assert main(["ledger", "import", str(path), "--home", str(fresh)]) == 0
    assert capsysbinary.readouterr().out.decode().split() == [cid]
    assert EmbeddedIpfs(fresh / "ipfs").cat(cid) == bundle

    tampered = bytearray(car)
    tampered[-1] ^= 1
    path.write_bytes(bytes(tampered))
    assert main(["ledger", "import", str(path), "--home", str(tmp_path / "other")]) == 2
    assert b"is tampered" in capsysbinary.readouterr().err
    assert main(["ledger", "export", str(uuid.uuid4()), *where]) == 2


def test_the_embedded_store_has_the_one_store_interface(tmp_path: Path) -> None:
    """pin, block_get, export_car and import_car on EmbeddedIpfs, as on KuboIpfs (``ledger/store.py``)."""
    from twinloop.ledger.store import IpfsStore

    source, target = EmbeddedIpfs(tmp_path / "a"), EmbeddedIpfs(tmp_path / "b")
    assert isinstance(source, IpfsStore)
    data = _payload(2 * CHUNK_SIZE + 3)
    for version in (0, 1):
        root = source.add(data, version)
        source.pin(root)
        car = source.export_car(root)
        assert car == export_car(source.store, root)
        assert target.import_car(car, "run.car") == [root] and target.cat(root) == data
        leaf, block = import_file(data, version)[1][0]
        assert target.block_get(leaf) == block
    source.store.path(leaf).unlink()  # a leaf of the last file gone: its DAG cannot be pinned
    with pytest.raises(LedgerError, match=leaf):
        source.pin(root)
    target.store.path(leaf).write_bytes(block + b"!")
    with pytest.raises(LedgerTamperedError, match=f"IPFS block {leaf} is corrupted"):
        target.block_get(leaf)
