"""A Kubo node as the IPFS store, against a loopback server that speaks Kubo's documented RPC forms.

No Kubo daemon can run here: ``FakeKubo`` answers exactly the endpoints
twinloop calls (add, cat, pin/add, block/get, block/stat, dag/export,
dag/import) as https://docs.ipfs.tech/reference/kubo/rpc/ documents them: POST
only (GET gets 405), arguments in the query string, files as multipart
``file`` parts, JSON answers, errors as HTTP 500 ``{"Message", "Code", "Type"}``.
Its blocks live in an EmbeddedIpfs, so its CIDs are the ones Kubo computes.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import cbor2
import pytest

from twinloop.errors import (ConfigError, LedgerError, LedgerTamperedError, LedgerUnavailableError,
                             RunNotFoundError)
from twinloop.harness.commit import Committed
from twinloop.harness.fleet_record import read_bundle
from twinloop.harness.pipeline import Pipeline
from twinloop.harness.record import RunRecord
from twinloop.harness.services import KEY_ENV, ServiceOptions, Services
from twinloop.ledger.chain import RunLedgerClient
from twinloop.ledger.ipfs import CHUNK_SIZE, EmbeddedIpfs, cid_bytes, cid_from_bytes, import_file, links_of
from twinloop.ledger.kubo import IPFS_URL_ENV, KuboIpfs

BUNDLE = Path(__file__).parent / "data" / "run-v2-thermal-cycling.json"
BIG = bytes(range(256)) * (3 * CHUNK_SIZE // 256 + 17)  # four leaves under one root


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def write_car(root: str, blocks: list[tuple[str, bytes]]) -> bytes:
    """A CARv1 as go-car writes it: dag-cbor header {roots: [root], version: 1}, then (CID, block) sections."""
    link = b"\x00" + cid_bytes(root)
    header = b"\xa2\x65roots\x81\xd8\x2a\x58" + bytes([len(link)]) + link + b"\x67version\x01"
    sections = [cid_bytes(cid) + block for cid, block in blocks]
    return _varint(len(header)) + header + b"".join(_varint(len(s)) + s for s in sections)


def read_car(car: bytes) -> tuple[list[str], list[tuple[str, bytes]]]:
    """The header's roots and the (CID, block) sections of a CARv1; the fake's own reader."""
    from twinloop.ledger.ipfs import _read_varint
    size, pos = _read_varint(car, 0)
    header = cbor2.loads(car[pos:pos + size])
    roots = [cid_from_bytes(link.value[1:]) for link in header["roots"]]  # tag 42: 0x00 then the binary CID
    pos += size
    out = []
    while pos < len(car):
        size, pos = _read_varint(car, pos)
        section, pos = car[pos:pos + size], pos + size
        cid_len = 34 if section[0] == 0x12 else 36  # CIDv0: the bare multihash; CIDv1: version, codec, multihash
        out.append((cid_from_bytes(section[:cid_len]), section[cid_len:]))
    return roots, out


class FakeKubo(ThreadingHTTPServer):
    """Kubo's RPC API for the calls twinloop makes, over an EmbeddedIpfs; can be told to lie."""

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.node = EmbeddedIpfs(root)
        self.pins: set[str] = set()
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.lie_on_add = self.tamper_cat = self.tamper_block = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def dag(self, cid: str) -> list[tuple[str, bytes]]:
        """The blocks under a root, depth first (go-car's traversal order)."""
        block = self.node.store.get(cid)
        return [(cid, block)] + [b for child in links_of(cid, block) for b in self.dag(child)]


class _Handler(BaseHTTPRequestHandler):
    server: FakeKubo

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, message: str) -> None:
        self.reply(500, json.dumps({"Message": message, "Code": 0, "Type": "error"}).encode())

    def do_GET(self) -> None:  # Kubo refuses anything but POST on /api/v0
        self.server.requests.append(("GET", self.path, {}))
        self.reply(405, b"405 - Method Not Allowed\n", "text/plain")

    def file_part(self) -> tuple[str, bytes]:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body)
        [part] = [p for p in msg.iter_parts() if p.get_param("name", header="content-disposition") == "file"]
        return part.get_filename() or "", part.get_payload(decode=True)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        self.server.requests.append(("POST", url.path, q))
        cmd = url.path.removeprefix("/api/v0/")
        arg = q.get("arg", [""])[0]
        node, fake = self.server.node, self.server
        try:
            if cmd == "add":
                name, data = self.file_part()
                version = int(q.get("cid-version", ["0"])[0])  # Kubo: cid-version=1 turns raw-leaves on by default
                raw = q.get("raw-leaves", ["true" if version else "false"]) == ["true"]
                if raw != (version == 1):
                    raise LedgerError("the fake lays out CIDv0 without raw leaves and CIDv1 with them only")
                cid = node.add(data, version)  # 256 KiB chunks, balanced: Kubo's defaults
                fake.pins.add(cid)
                shown = node.add(data + b"!", version) if fake.lie_on_add else cid
                size = sum(len(b) for _, b in fake.dag(cid))
                self.reply(200, json.dumps({"Name": name, "Hash": shown, "Size": str(size)}).encode() + b"\n")
            elif cmd == "cat":
                data = node.cat(arg)
                self.reply(200, data[:-1] + b"?" if fake.tamper_cat else data, "text/plain")
            elif cmd == "block/get":
                block = node.store.get(arg)
                self.reply(200, block + b"\0" if fake.tamper_block else block, "text/plain")
            elif cmd == "block/stat":
                if q.get("offline") != ["true"]:
                    raise AssertionError("an online block/stat of a missing block would search the network")
                self.reply(200, json.dumps({"Key": arg, "Size": len(node.store.get(arg))}).encode() + b"\n")
            elif cmd == "pin/add":
                fake.dag(arg)
                fake.pins.add(arg)
                self.reply(200, json.dumps({"Pins": [arg]}).encode() + b"\n")
            elif cmd == "dag/export":
                once = list(dict(fake.dag(arg)).items())  # each block once, as Kubo's export does
                self.reply(200, write_car(arg, once), "application/vnd.ipld.car")
            elif cmd == "dag/import":  # one Root line per root the CAR's header names, pinned if pin-roots
                _, car = self.file_part()
                roots, blocks = read_car(car)
                for cid, block in blocks:
                    node.store.put(cid, block)
                lines = []
                for root in roots:
                    try:
                        fake.dag(root)
                        error = ""
                    except RunNotFoundError as err:
                        error = f"block was not found locally (offline): {err}"
                    if not error and q.get("pin-roots", ["true"]) == ["true"]:
                        fake.pins.add(root)
                    lines.append(json.dumps({"Root": {"Cid": {"/": root}, "PinErrorMsg": error}}).encode())
                self.reply(200, b"\n".join(lines) + b"\n")
            else:
                self.reply(404, b"404 page not found\n", "text/plain")
        except RunNotFoundError:
            self.error(f"block was not found locally (offline): ipld: could not find {arg}")
        except LedgerError as err:
            self.error(str(err))


@pytest.fixture
def kubo(tmp_path: Path) -> Iterator[FakeKubo]:
    server = FakeKubo(tmp_path / "kubo-node")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_add_and_cat_round_trip_with_kubos_cidv0_defaults(kubo: FakeKubo) -> None:
    ipfs = KuboIpfs(kubo.url)
    for data in (b"hello world\n", BIG):
        cid = ipfs.add(data)
        assert cid == import_file(data)[0] and ipfs.cat(cid) == data and ipfs.has(cid)
    method, path, q = kubo.requests[0]
    assert (method, path) == ("POST", "/api/v0/add")
    assert (q["cid-version"], q["chunker"], q["raw-leaves"], q["pin"]) == (["0"], ["size-262144"], ["false"], ["true"])
    assert {m for m, _, _ in kubo.requests} == {"POST"}
    assert import_file(BIG)[0] in kubo.pins


def test_cidv1_add_and_cat_through_kubo_use_raw_leaves(kubo: FakeKubo) -> None:
    ipfs = KuboIpfs(kubo.url)
    for data in (b"hello\n", BIG):
        cid = ipfs.add(data, cid_version=1)
        assert cid == import_file(data, 1)[0] and cid.startswith("bafk" if len(data) <= CHUNK_SIZE else "bafy")
        assert ipfs.cat(cid) == data and ipfs.has(cid)
    assert import_file(b"hello\n", 1)[0] == "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"
    _, _, q = kubo.requests[0]
    assert (q["cid-version"], q["raw-leaves"]) == (["1"], ["true"])
    kubo.tamper_cat = True
    with pytest.raises(LedgerTamperedError, match=f"for {cid} that hash to bafy"):
        ipfs.cat(cid)


def test_both_stores_have_the_one_store_interface(kubo: FakeKubo, tmp_path: Path) -> None:
    from twinloop.ledger.store import IpfsStore

    assert isinstance(KuboIpfs(kubo.url), IpfsStore) and isinstance(EmbeddedIpfs(tmp_path / "e"), IpfsStore)


def test_a_node_that_names_added_bytes_with_another_cid_is_refused(kubo: FakeKubo) -> None:
    kubo.lie_on_add = True
    with pytest.raises(LedgerTamperedError, match=f"but they are {import_file(b'run bundle')[0]}"):
        KuboIpfs(kubo.url).add(b"run bundle")


def test_bytes_the_node_altered_are_refused_naming_the_cid(kubo: FakeKubo) -> None:
    ipfs = KuboIpfs(kubo.url)
    cid = ipfs.add(BIG)
    kubo.tamper_cat = True
    with pytest.raises(LedgerTamperedError, match=f"for {cid} that hash to Qm"):
        ipfs.cat(cid)


def test_pin_and_block_get(kubo: FakeKubo) -> None:
    ipfs = KuboIpfs(kubo.url)
    cid, blocks = import_file(BIG)
    kubo.node.add(BIG)  # there, but not pinned
    kubo.pins.clear()
    ipfs.pin(cid)
    assert kubo.pins == {cid} and ("POST", "/api/v0/pin/add", {"arg": [cid], "recursive": ["true"]}) in kubo.requests
    leaf, block = blocks[0]
    assert ipfs.block_get(leaf) == block
    kubo.tamper_block = True
    with pytest.raises(LedgerTamperedError, match=f"a block for {leaf} that hashes to"):
        ipfs.block_get(leaf)


def test_dag_export_and_import_round_trip(kubo: FakeKubo, tmp_path: Path) -> None:
    ipfs = KuboIpfs(kubo.url)
    cid = ipfs.add(BIG)
    car = ipfs.export_car(cid)
    assert read_car(car) == ([cid], list(dict(kubo.dag(cid)).items()))
    other = FakeKubo(tmp_path / "second-node")
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        second = KuboIpfs(other.url)
        assert not second.has(cid)
        assert second.import_car(car) == [cid]
        assert second.cat(cid) == BIG and cid in other.pins
    finally:
        other.shutdown()
        other.server_close()


def test_dag_import_reports_the_roots_the_car_header_names(kubo: FakeKubo, tmp_path: Path) -> None:
    """Not the first block: a CAR need not start with its root (here: leaves first, root last)."""
    cid, blocks = import_file(BIG)
    leaves_first = [b for b in blocks if b[0] != cid] + [b for b in blocks if b[0] == cid]
    car = write_car(cid, leaves_first)
    assert KuboIpfs(kubo.url).import_car(car, "run.car") == [cid]
    assert cid in kubo.pins and kubo.node.cat(cid) == BIG
    # a CIDv1 raw-leaf DAG too
    v1, v1_blocks = import_file(BIG, 1)
    assert KuboIpfs(kubo.url).import_car(write_car(v1, v1_blocks)) == [v1] and v1 in kubo.pins


def test_a_car_missing_a_block_is_imported_but_its_root_not_pinned(kubo: FakeKubo) -> None:
    cid, blocks = import_file(BIG)
    with pytest.raises(LedgerError, match=f"did not pin its roots: {cid}: block was not found"):
        KuboIpfs(kubo.url).import_car(write_car(cid, blocks[:-1]), "cut.car")
    assert cid not in kubo.pins


def test_a_tampered_car_is_refused_before_the_node_sees_it(kubo: FakeKubo) -> None:
    cid, blocks = import_file(BIG)
    car = bytearray(write_car(cid, blocks))
    car[-1] ^= 1
    with pytest.raises(LedgerTamperedError, match="bad.car: block .* is tampered"):
        KuboIpfs(kubo.url).import_car(bytes(car), "bad.car")
    assert not [r for r in kubo.requests if r[1] == "/api/v0/dag/import"]


def test_a_car_with_a_corrupted_block_is_refused(kubo: FakeKubo, monkeypatch: pytest.MonkeyPatch) -> None:
    ipfs = KuboIpfs(kubo.url)
    cid = ipfs.add(BIG)
    bad = [(c, b if i != 1 else b[:-1] + b"\1") for i, (c, b) in enumerate(dict(kubo.dag(cid)).items())]
    monkeypatch.setattr(kubo, "dag", lambda root: bad)
    with pytest.raises(LedgerTamperedError, match="is tampered: its bytes do not hash to its CID"):
        ipfs.export_car(cid)
    monkeypatch.setattr(kubo, "dag", lambda root: [bad[0]])
    with pytest.raises(LedgerTamperedError, match="missing from the CAR"):
        ipfs.export_car(cid)


def test_a_missing_block_is_not_had_and_kubos_error_message_is_surfaced(kubo: FakeKubo) -> None:
    ipfs = KuboIpfs(kubo.url)
    cid = import_file(b"never added")[0]
    assert not ipfs.has(cid)
    with pytest.raises(RunNotFoundError, match=f"could not find {cid}"):
        ipfs.cat(cid)
    with pytest.raises(LedgerError, match=f"refused pin/add {cid}: block was not found locally"):
        ipfs.pin(cid)


def test_a_node_that_is_down_is_unavailable_naming_its_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(LedgerUnavailableError, match=f"the IPFS node at {url} cannot be reached"):
        KuboIpfs(url).add(b"x")


def test_a_silent_node_times_out_as_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()  # accepts the connection, never answers
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(LedgerUnavailableError, match=f"{url} did not answer cat within 0.3 s"):
            KuboIpfs(url, timeout=0.3).cat(import_file(b"x")[0])


def test_the_fake_refuses_get_as_kubo_does(kubo: FakeKubo) -> None:
    import httpx
    response = httpx.get(f"{kubo.url}/api/v0/cat", params={"arg": import_file(b"x")[0]})
    assert response.status_code == 405


def test_only_http_urls_and_no_password_in_messages() -> None:
    with pytest.raises(ConfigError, match="expected the http"):
        KuboIpfs("/ip4/127.0.0.1/tcp/5001")
    assert "secret" not in KuboIpfs("https://bench:secret@ipfs.example:5001").location


def test_services_choose_the_kubo_node_by_option_or_environment(tmp_path: Path, kubo: FakeKubo,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(Services(ServiceOptions(home=tmp_path / "a")).ipfs, EmbeddedIpfs)
    chosen = Services(ServiceOptions(home=tmp_path / "b", ipfs_url=kubo.url)).ipfs
    assert isinstance(chosen, KuboIpfs) and chosen.url == kubo.url
    monkeypatch.setenv(IPFS_URL_ENV, kubo.url)
    assert isinstance(Services(ServiceOptions(home=tmp_path / "c")).ipfs, KuboIpfs)


def _bench_on(kubo: FakeKubo, session: RunLedgerClient, home: Path) -> Services:
    """A bench's services on the session's chain, with ``kubo`` as its IPFS store."""
    return Services(ServiceOptions(home=home, chain_url=session.rpc_url, contract=session.address,
                                   ipfs_url=kubo.url))


def _commit_copy(services: Services, run_id: str) -> Committed:
    """Commit the recorded test bundle again under ``run_id`` (unsigned: commit signs it)."""
    record = RunRecord.from_bytes(BUNDLE.read_bytes()).model_copy(update={"run_id": run_id, "attestation": None})
    return Pipeline(services).commit(record)


def test_a_run_committed_through_a_kubo_node_verifies(twinloop_ledger: Services, kubo: FakeKubo, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    session = twinloop_ledger.ledger
    monkeypatch.setenv(KEY_ENV, session.account.key.hex())
    with _bench_on(kubo, session, tmp_path / "bench") as services:
        committed = _commit_copy(services, "5e1d0c2a-7b3f-4c1e-9a8d-6f0b2c3d4e51")
        assert kubo.node.has(committed.cid) and committed.cid in kubo.pins
        assert not (tmp_path / "bench" / "ipfs").exists()  # nothing went to the embedded store
        v = Pipeline(services).verify(committed.run_id, no_scenario_file=True)
        assert v.ok, v.checks


def test_ledger_export_and_import_go_through_a_kubo_node(twinloop_ledger: Services, kubo: FakeKubo, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """``ledger export RUN --ipfs URL`` (dag/export) and ``ledger import FILE.car --ipfs URL`` (dag/import)."""
    from twinloop.harness.cli import main

    session = twinloop_ledger.ledger
    monkeypatch.setenv(KEY_ENV, session.account.key.hex())
    with _bench_on(kubo, session, tmp_path / "bench") as services:
        committed = _commit_copy(services, "5e1d0c2a-7b3f-4c1e-9a8d-6f0b2c3d4e52")
    where = ["--chain", session.rpc_url, "--contract", session.address, "--home", str(tmp_path / "bench")]
    car = tmp_path / "run.car"
    assert main(["ledger", "export", committed.run_id, "-o", str(car), "--ipfs", kubo.url, *where]) == 0
    assert "written to" in capsys.readouterr().out
    assert read_car(car.read_bytes())[0] == [committed.cid]
    assert ("POST", "/api/v0/dag/export", {"arg": [committed.cid], "progress": ["false"]}) in kubo.requests

    other = FakeKubo(tmp_path / "second-node")
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        assert main(["ledger", "import", str(car), "--ipfs", other.url, "--home", str(tmp_path / "ci")]) == 0
        assert capsys.readouterr().out.split() == [committed.cid]
        assert committed.cid in other.pins and read_bundle(other.node.cat(committed.cid)).run_id == committed.run_id
    finally:
        other.shutdown()
        other.server_close()
    assert not (tmp_path / "bench" / "ipfs").exists() and not (tmp_path / "ci" / "ipfs").exists()
