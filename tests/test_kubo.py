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

import pytest

from twinloop.errors import (ConfigError, LedgerError, LedgerTamperedError, LedgerUnavailableError,
                             RunNotFoundError)
from twinloop.harness.pipeline import Pipeline
from twinloop.harness.record import RunRecord
from twinloop.harness.services import KEY_ENV, ServiceOptions, Services
from twinloop.ledger.ipfs import CHUNK_SIZE, EmbeddedIpfs, _decode, cid_digest, import_file
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
    link = b"\x00\x12\x20" + cid_digest(root)
    header = b"\xa2\x65roots\x81\xd8\x2a\x58\x23" + link + b"\x67version\x01"
    sections = [b"\x12\x20" + cid_digest(cid) + block for cid, block in blocks]
    return _varint(len(header)) + header + b"".join(_varint(len(s)) + s for s in sections)


def read_car(car: bytes) -> list[tuple[str, bytes]]:
    """The (CID, block) sections of a CARv1 with a 35-byte CIDv0 root link; the fake's own reader."""
    from twinloop.ledger.ipfs import _b58encode, _read_varint
    size, pos = _read_varint(car, 0)
    pos += size
    out = []
    while pos < len(car):
        size, pos = _read_varint(car, pos)
        section, pos = car[pos:pos + size], pos + size
        out.append((_b58encode(section[:34]), section[34:]))
    return out


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
        return [(cid, block)] + [b for child in _decode(block)[0] for b in self.dag(child)]


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
                cid = node.add(data)  # CIDv0, 256 KiB chunks, balanced, no raw leaves: Kubo's defaults
                fake.pins.add(cid)
                shown = node.add(data + b"!") if fake.lie_on_add else cid
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
            elif cmd == "dag/import":
                _, car = self.file_part()
                blocks = read_car(car)
                for cid, block in blocks:
                    node.store.put(cid, block)
                root = blocks[0][0]
                fake.pins.add(root)
                self.reply(200, json.dumps({"Root": {"Cid": {"/": root}, "PinErrorMsg": ""}}).encode() + b"\n")
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
    car = ipfs.dag_export(cid)
    assert len(read_car(car)) == len(import_file(BIG)[1])
    other = FakeKubo(tmp_path / "second-node")
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        second = KuboIpfs(other.url)
        assert not second.has(cid)
        assert second.dag_import(car) == [cid]
        assert second.cat(cid) == BIG and cid in other.pins
    finally:
        other.shutdown()
        other.server_close()


def test_a_car_with_a_corrupted_block_is_refused(kubo: FakeKubo, monkeypatch: pytest.MonkeyPatch) -> None:
    ipfs = KuboIpfs(kubo.url)
    cid = ipfs.add(BIG)
    bad = [(c, b if i != 1 else b[:-1] + b"\1") for i, (c, b) in enumerate(dict(kubo.dag(cid)).items())]
    monkeypatch.setattr(kubo, "dag", lambda root: bad)
    with pytest.raises(LedgerTamperedError, match="is tampered: its bytes do not hash to its CID"):
        ipfs.dag_export(cid)
    monkeypatch.setattr(kubo, "dag", lambda root: [bad[0]])
    with pytest.raises(LedgerTamperedError, match="missing from the CAR"):
        ipfs.dag_export(cid)


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


def test_a_run_committed_through_a_kubo_node_verifies(twinloop_ledger: Services, kubo: FakeKubo, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    session = twinloop_ledger.ledger
    monkeypatch.setenv(KEY_ENV, session.account.key.hex())
    options = ServiceOptions(home=tmp_path / "bench", chain_url=session.rpc_url, contract=session.address,
                             ipfs_url=kubo.url)
    with Services(options) as services:
        record = RunRecord.from_bytes(BUNDLE.read_bytes()).model_copy(
            update={"run_id": "5e1d0c2a-7b3f-4c1e-9a8d-6f0b2c3d4e51", "attestation": None})
        committed = Pipeline(services).commit(record)
        assert kubo.node.has(committed.cid) and committed.cid in kubo.pins
        assert not (tmp_path / "bench" / "ipfs").exists()  # nothing went to the embedded store
        v = Pipeline(services).verify(committed.run_id, no_scenario_file=True)
        assert v.ok, v.checks
