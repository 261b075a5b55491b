"""Find and run a local anvil node whose chain state persists in one file.

anvil is bound to 127.0.0.1 only; the state file is loaded on start and dumped
on SIGTERM (and every second) so records survive restarts.
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Callable

from twinloop.errors import LedgerUnavailableError

ANVIL_REL_PATH = Path("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
HOST = "127.0.0.1"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
_POLL_S = 0.05
_PR_SET_PDEATHSIG = 1
_LISTEN_RE = re.compile(r"Listening on 127\.0\.0\.1:(\d+)")


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _search_upward(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        candidate = directory / ANVIL_REL_PATH
        if _is_executable(candidate):
            return candidate
    return None


def find_anvil() -> str:
    """Path of the anvil binary: $TWINLOOP_ANVIL, the npm package, or PATH."""
    configured = os.environ.get("TWINLOOP_ANVIL")
    if configured:
        if _is_executable(Path(configured)):
            return configured
        raise LedgerUnavailableError(
            f"TWINLOOP_ANVIL={configured} is not an executable file"
        )
    for start in (Path.cwd(), Path(__file__).resolve().parents[1]):
        found = _search_upward(start)
        if found is not None:
            return str(found)
    on_path = shutil.which("anvil")
    if on_path:
        return on_path
    raise LedgerUnavailableError(
        f"anvil not found (looked for $TWINLOOP_ANVIL, {ANVIL_REL_PATH} and PATH); "
        "run `make setup` to install @foundry-rs/anvil-linux-amd64 with `npm ci`"
    )


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A pre-exec hook: SIGTERM the child when its parent dies, even by SIGKILL (Linux).

    PR_SET_PDEATHSIG fires when the thread that forked exits, so anvil is
    started from the caller's thread and never from a short-lived one.
    """
    def hook() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)
    return hook


def _terminate(proc: subprocess.Popen[bytes], lock: IO[bytes],
               timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM (anvil then dumps its state), SIGKILL if it hangs; then unlock."""
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        lock.close()


def _rpc_answers(url: str) -> bool:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    request = urllib.request.Request(
        url, body.encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=1.0) as response:
            return "result" in json.loads(response.read())
    except (OSError, ValueError):
        return False


class AnvilNode:
    """One anvil process on 127.0.0.1 persisting its chain to ``state_path``.

    ``port=0`` lets anvil pick a free port; the real one is read from its log.
    """

    def __init__(self, state_path: Path, port: int = 0) -> None:
        self.state_path = Path(state_path)
        self.log_path = self.state_path.with_name("anvil.log")
        self.port = port
        self.rpc_url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._cleanup: functools.partial[None] | None = None

    def start(self) -> str:
        """Launch anvil, wait until JSON-RPC answers, and return its URL."""
        if self._proc is not None:
            return self.rpc_url
        binary = find_anvil()
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        lock = self._acquire_lock()
        command = [
            binary, "--host", HOST, "--port", str(self.port),
            "--state", str(self.state_path), "--state-interval", "1",
            "--accounts", "0",
        ]
        try:
            with open(self.log_path, "wb") as log:
                # anvil inherits the locked descriptor, so the lock lives exactly as
                # long as anvil does, even if this process is killed.
                self._proc = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,
                    pass_fds=(lock.fileno(),), preexec_fn=_die_with_parent(os.getpid()),
                )
        except OSError as err:
            lock.close()
            raise LedgerUnavailableError(f"cannot start anvil at {binary}: {err}") from err
        # Runs at interpreter exit unless stop() ran first; also keeps the lock alive.
        self._cleanup = functools.partial(_terminate, self._proc, lock)
        atexit.register(self._cleanup)
        try:
            self.rpc_url = self._wait_ready(self._proc)
        except BaseException:
            self.stop()
            raise
        return self.rpc_url

    @property
    def pid(self) -> int | None:
        """Process id of the running anvil, if this node started one."""
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        """SIGTERM the anvil this node started and wait for its state dump."""
        if self._cleanup is not None:
            atexit.unregister(self._cleanup)
            self._cleanup()
            self._cleanup = None
        self._proc = None
        self.rpc_url = ""

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> str:
        """Poll until anvil prints its port and answers eth_chainId there."""
        deadline = time.monotonic() + START_TIMEOUT_S
        url = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LedgerUnavailableError(
                    f"anvil exited with code {proc.returncode} while starting "
                    f"on {self.state_path}; last lines of {self.log_path}:\n{self._log_tail()}"
                )
            if not url:
                match = _LISTEN_RE.search(self._read_log())
                url = f"http://{HOST}:{match.group(1)}" if match else ""
            if url and _rpc_answers(url):
                return url
            time.sleep(_POLL_S)
        raise LedgerUnavailableError(
            f"anvil did not answer JSON-RPC within {START_TIMEOUT_S:.0f} s "
            f"(url {url or 'unknown'}); last lines of {self.log_path}:\n{self._log_tail()}"
        )

    def _read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _log_tail(self, lines: int = 15) -> str:
        return "\n".join(self._read_log().splitlines()[-lines:])

    def _acquire_lock(self) -> IO[bytes]:
        """Exclusive lock beside the state file so two anvils never share it."""
        lock_path = self.state_path.with_name(self.state_path.name + ".lock")
        handle = open(lock_path, "wb")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            handle.close()
            raise LedgerUnavailableError(
                f"state file {self.state_path} is in use by another anvil ({lock_path} is locked)"
            ) from err
        return handle

    def __enter__(self) -> AnvilNode:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
