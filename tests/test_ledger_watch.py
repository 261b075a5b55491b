"""``twinloop ledger watch`` against the real anvil: maintenance requests POSTed to a real webhook, and a
delivery that fails (a webhook answering 500, a command exiting non-zero) printed without ending the watch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from twinloop.harness.cli import main
from twinloop.harness.pipeline import Pipeline
from twinloop.harness.record import Event, RunRecord
from twinloop.harness.services import KEY_ENV, Services
from twinloop.ledger.chain import MaintenanceRequest

BUNDLE = Path(__file__).parent / "data" / "run-v2-thermal-cycling.json"


class Webhook(ThreadingHTTPServer):
    """A maintenance system's endpoint on 127.0.0.1: keeps each POST; answers the queued statuses, then 200."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Hook)
        self.received: list[tuple[str, dict]] = []
        self.statuses: list[int] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}/maintenance"


class _Hook(BaseHTTPRequestHandler):
    server: Webhook

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.headers["Content-Type"], json.loads(body)))
        self.send_response(self.server.statuses.pop(0) if self.server.statuses else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    server = Webhook()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def services(twinloop_ledger: Services, monkeypatch: pytest.MonkeyPatch) -> Services:
    monkeypatch.delenv(KEY_ENV, raising=False)  # watching only reads
    return twinloop_ledger


def request_maintenance(services: Services, n: int) -> list[MaintenanceRequest]:
    """``n`` runs committed, each with its twin's maintenance request: the requests as the chain has them."""
    found = []
    for i in range(n):
        record = RunRecord.from_bytes(BUNDLE.read_bytes()).model_copy(
            update={"run_id": str(uuid.uuid4()), "attestation": None})
        decision = {"rul": "p05", "rul_s": 9.0e6 + i, "below_s": 1.296e7, "derate": {},
                    "maintenance": f"replace fan {i}"}
        record.events.append(Event(t=630.0, kind="maintenance_request", device="module", data=decision,
                                   message=f"RUL below 150 d: replace fan {i}"))
        Pipeline(services).commit(record)
        found += services.ledger.maintenance_requests(run_id=record.run_id)
    assert len(found) == n
    return found


def watch_args(services: Services, home: Path, first: MaintenanceRequest, *extra: str) -> list[str]:
    ledger = services.ledger
    return ["ledger", "watch", "--from-block", str(first.block_number), "--json", "--chain", ledger.rpc_url,
            "--contract", ledger.address, "--home", str(home), *extra]


def test_each_request_is_posted_as_json_to_the_webhook(services: Services, webhook: Webhook, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    [request] = request_maintenance(services, 1)
    assert main(watch_args(services, tmp_path / "home", request, "--once", "--webhook", webhook.url)) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["run_id"] for r in printed] == [request.run_id]
    [(content_type, body)] = webhook.received
    assert content_type == "application/json" and body == printed[0]
    assert (body["device"], body["rul_seconds"], body["reason"], body["tx_hash"]) == (
        "module", request.rul_seconds, "replace fan 0", request.tx_hash)


def test_a_failing_command_is_reported_and_the_next_request_is_still_forwarded(
        services: Services, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    requests = request_maintenance(services, 2)
    forwarded = tmp_path / "forwarded.jsonl"
    code = main(watch_args(services, tmp_path / "home", requests[0], "--once",
                           "--command", f"cat >> {forwarded}; echo >> {forwarded}; exit 3"))
    out, err = capsys.readouterr()
    assert code == 2  # --once says that something was not delivered
    assert [json.loads(line)["run_id"] for line in out.splitlines()] == [r.run_id for r in requests]
    assert [json.loads(line)["run_id"] for line in forwarded.read_text().splitlines()] == [
        r.run_id for r in requests]
    err = " ".join(err.split())
    for r in requests:
        assert (f"the maintenance request of run {r.run_id} (block {r.block_number}) was not delivered: "
                f"--command 'cat >> {forwarded}; echo >> {forwarded}; exit 3' exited 3") in err


def test_a_failed_webhook_delivery_does_not_end_the_watch(services: Services, webhook: Webhook,
                                                          tmp_path: Path) -> None:
    """The real watch loop (no --once), in its own process: the webhook refuses the first request, takes the next."""
    requests = request_maintenance(services, 2)
    webhook.statuses = [500]
    watcher = subprocess.Popen(
        [sys.executable, "-m", "twinloop.harness.cli",
         *watch_args(services, tmp_path / "home", requests[0], "--poll", "0.2", "--webhook", webhook.url)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 120  # a bound on the wait, not a timing assertion
        while len(webhook.received) < 2 and watcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        alive = watcher.poll() is None
    finally:
        watcher.terminate()
        out, err = watcher.communicate(timeout=60)
    assert alive, err[-2000:]
    assert [body["run_id"] for _, body in webhook.received] == [r.run_id for r in requests]
    assert watcher.returncode == 130  # ended by SIGTERM, not by the failed delivery
    assert [json.loads(line)["run_id"] for line in out.splitlines()] == [r.run_id for r in requests]
    err = " ".join(err.split())
    assert (f"the maintenance request of run {requests[0].run_id} (block {requests[0].block_number}) was not "
            f"delivered: --webhook {webhook.url}: 500 Server Error") in err
    assert requests[1].run_id not in err and "Traceback" not in err
