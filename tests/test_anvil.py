"""anvil dies with the process that started it, and never shares a state file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from twinloop.errors import LedgerUnavailableError
from twinloop.ledger.anvil import AnvilNode, find_anvil

try:
    find_anvil()
except LedgerUnavailableError as exc:
    pytest.skip(f"anvil is not installed: {exc}", allow_module_level=True)

STARTER = """
import sys, time
from pathlib import Path
from twinloop.ledger.anvil import AnvilNode
node = AnvilNode(Path(sys.argv[1]))
print(node.start(), node.pid, flush=True)
time.sleep(600)
"""


def rpc(url: str, method: str, params: list) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())["result"]


def gone(pid: int, within_s: float = 15.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_anvil_dies_when_its_parent_is_killed_and_its_state_survives(tmp_path: Path) -> None:
    state = tmp_path / "anvil-state.json"
    parent = subprocess.Popen([sys.executable, "-c", STARTER, str(state)], stdout=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL)
    anvil_pid = None
    try:
        url, anvil_pid = parent.stdout.readline().split()
        anvil_pid = int(anvil_pid)
        rpc(url, "anvil_mine", ["0x5"])
        time.sleep(1.5)  # anvil dumps its state every second, and again on SIGTERM
        parent.kill()
        parent.wait()
        assert gone(anvil_pid), "anvil outlived the process that started it"
    finally:
        parent.kill()
        if anvil_pid and psutil.pid_exists(anvil_pid):
            psutil.Process(anvil_pid).kill()
    # A multi-threaded process shows as a zombie once its main thread has exited, while its other
    # threads may still be writing the state dump and holding the lock: wait for the lock.
    deadline = time.monotonic() + 15
    while True:
        again = AnvilNode(state)
        try:
            again.start()
            break
        except LedgerUnavailableError as err:
            if "in use by another anvil" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        assert int(rpc(again.rpc_url, "eth_blockNumber", []), 16) >= 5
    finally:
        again.stop()


def test_the_state_lock_is_held_by_anvil_itself(tmp_path: Path) -> None:
    state = tmp_path / "anvil-state.json"
    first = AnvilNode(state)
    first.start()
    try:
        first._cleanup.args[1].close()  # the parent's own handle on the lock, as if the parent were gone
        with pytest.raises(LedgerUnavailableError, match="in use by another anvil"):
            AnvilNode(state).start()
    finally:
        first.stop()
