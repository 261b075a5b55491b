"""Every socket the run's own process tree listens on is on loopback, Ray's included.

Each case runs twinloop in a fresh subprocess whose environment lacks
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER, so the embedded default is what is checked.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
RAY_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
RAY_PROCESSES = ("gcs_server", "raylet", "ray::")
CLI = [sys.executable, "-m", "twinloop.harness.cli"]


@dataclass(frozen=True, order=True)
class Listener:
    """One listening socket: who holds it and where."""

    process: str
    pid: int
    proto: str
    ip: str
    port: int


def process_tree(pid: int) -> list[psutil.Process]:
    """``pid`` and all its descendants still alive (empty once it has exited)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def listeners(procs: list[psutil.Process]) -> set[Listener]:
    """Every TCP socket in LISTEN and every unconnected bound UDP socket of ``procs``."""
    found = set()
    for proc in procs:
        try:
            name, conns = proc.name(), proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # exited between listing and inspection
        for c in conns:
            tcp_listen = c.type == socket.SOCK_STREAM and c.status == psutil.CONN_LISTEN
            udp_bound = c.type == socket.SOCK_DGRAM and c.laddr and not c.raddr
            if tcp_listen or udp_bound:
                proto = "tcp" if c.type == socket.SOCK_STREAM else "udp"
                found.add(Listener(name, proc.pid, proto, c.laddr.ip, c.laddr.port))
    return found


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8 or ::1, also as an IPv4-mapped IPv6 address (``::ffff:127.0.0.1``)."""
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def beyond_loopback(found: set[Listener]) -> list[Listener]:
    """The listeners reachable from another machine, sorted for a readable failure."""
    return sorted(lst for lst in found if not is_loopback(lst.ip))


def assert_loopback_only(found: set[Listener]) -> None:
    """Fail listing every listener beyond loopback, one per line."""
    bad = beyond_loopback(found)
    assert bad == [], "listening beyond loopback:\n" + "\n".join(map(str, bad))


def is_ray(lst: Listener) -> bool:
    """Whether a Ray process (GCS, raylet, worker, agent) holds the socket."""
    return lst.process.startswith(RAY_PROCESSES)


def env_without_ray_var() -> dict[str, str]:
    """This environment minus RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER (twinloop sets it here)."""
    return {k: v for k, v in os.environ.items() if k != RAY_VAR}


def reap(procs: list[psutil.Process], timeout: float = 20.0) -> list[psutil.Process]:
    """Wait for ``procs`` to exit, kill (by pid) those that do not; returns the ones killed."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return alive


def stop(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` (by its pid) if it is still running, and close its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    for pipe in (proc.stdin, proc.stdout):
        if pipe:
            pipe.close()


def watch_listeners(cmd: list[str], cwd: Path, out: Any, err: Any, what: str,
                    timeout: float = 240.0) -> tuple[subprocess.Popen[str], set[Listener], list[psutil.Process]]:
    """Run ``cmd`` to its end, polling its process tree's listeners; the process, the listeners, and leftovers."""
    found: set[Listener] = set()
    seen: dict[int, psutil.Process] = {}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env_without_ray_var(), stdin=subprocess.DEVNULL,
                            stdout=out, stderr=err, text=True)
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            tree = process_tree(proc.pid)
            seen.update((p.pid, p) for p in tree)
            found |= listeners(tree)
            time.sleep(0.3)
        assert proc.poll() is not None, f"{what} did not finish in {timeout:g} s"
    finally:
        seen.update((p.pid, p) for p in process_tree(proc.pid))
        stop(proc)
        leftovers = reap(list(seen.values()))
    return proc, found, leftovers



def tail(log: IO[str]) -> str:
    """The last lines of a subprocess log, for assertion messages."""
    log.seek(0)
    return "".join(log.readlines()[-30:])


def test_helper_sees_a_wildcard_listener() -> None:
    """The helper itself finds a socket on 0.0.0.0 and calls it beyond loopback."""
    with socket.socket() as wild, socket.socket() as local:
        wild.bind(("0.0.0.0", 0))
        wild.listen()
        local.bind(("127.0.0.1", 0))
        local.listen()
        found = listeners(process_tree(os.getpid()))
        ports = {lst.port: lst for lst in found}
        assert ports[wild.getsockname()[1]] in beyond_loopback(found)
        assert ports[local.getsockname()[1]] not in beyond_loopback(found)
    assert is_loopback("::1") and is_loopback("::ffff:127.0.0.1") and is_loopback("127.0.0.2")
    assert not any(is_loopback(ip) for ip in ("0.0.0.0", "::", "192.0.2.2", "::ffff:192.0.2.2"))


LIBRARY_USE = """
import os, sys
import twinloop.twins.cluster as cluster  # twinloop first, as any twinloop import does
import ray

cluster.ensure_ray()

@ray.remote(num_cpus=0)
class Echo:
    def pid(self) -> int:
        return os.getpid()

ray.get(Echo.remote().pid.remote())
print(os.getpid(), flush=True)
sys.stdin.read()
cluster.shutdown_ray()
"""


def test_library_use_listens_on_loopback_only(tmp_path: Path) -> None:
    """ensure_ray() plus an actor, imported as a library: every listener is on loopback."""
    with open(tmp_path / "stderr.log", "w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", LIBRARY_USE], cwd=tmp_path, env=env_without_ray_var(),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        tree: list[psutil.Process] = []
        try:
            line = proc.stdout.readline()
            assert line.strip() == str(proc.pid), f"driver did not get ready:\n{tail(err)}"
            tree = process_tree(proc.pid)
            found = listeners(tree)
            assert any(is_ray(lst) for lst in found), f"no Ray listener seen: {found}"
            assert_loopback_only(found)
            proc.stdin.close()
            assert proc.wait(timeout=60) == 0, tail(err)
        finally:
            tree += process_tree(proc.pid)  # whatever it started, should a step above have failed
            stop(proc)
            leftovers = reap(tree)
    assert leftovers == [], "Ray processes outlived the driver"


@pytest.mark.slow
def test_cli_run_listens_on_loopback_only(tmp_path: Path) -> None:
    """``twinloop run scenarios/smoke.yaml``: every listener of the run's tree, polled, is on loopback."""
    cmd = [*CLI, "run", "scenarios/smoke.yaml", "--home", str(tmp_path / "home")]
    with open(tmp_path / "out.log", "w+") as out:
        proc, found, leftovers = watch_listeners(cmd, ROOT, out, subprocess.STDOUT, "twinloop run")
        log = tail(out)
    assert proc.returncode == 0, log
    assert any(is_ray(lst) for lst in found), f"no Ray listener seen, the check would be vacuous: {found}"
    assert_loopback_only(found)
    assert leftovers == [], "processes of the run outlived it"


FAIL_SAFE = """
import ray  # before twinloop: Ray has read RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER (unset)
import psutil
import twinloop.twins.cluster as cluster
from twinloop.errors import TwinError

try:
    cluster.ensure_ray()
except TwinError as err:
    print("TwinError:", err)
print("initialized:", ray.is_initialized(), "children:", len(psutil.Process().children(recursive=True)))
cluster.shutdown_ray()
"""


def test_ray_imported_first_refuses_to_start(tmp_path: Path) -> None:
    """``import ray`` before twinloop: ensure_ray() raises TwinError instead of listening everywhere."""
    run = subprocess.run([sys.executable, "-c", FAIL_SAFE], cwd=tmp_path, env=env_without_ray_var(),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "TwinError: ray was imported before twinloop" in run.stdout, run.stdout + run.stderr
    assert "Ray would listen on all interfaces" in run.stdout
    assert "initialized: False children: 0" in run.stdout


@pytest.mark.slow
def test_the_fleet_benchmark_listens_on_loopback_only(tmp_path: Path) -> None:
    """The fleet benchmark (its own Ray, one actor per twin and the shards), small: loopback only, a ratio out."""
    cmd = [sys.executable, "-m", "twinloop.twins.bench", "--fleet", "--quick", "--json", "--units", "2000",
           "--actors", "2"]  # bench --fleet hands every other option to fleet_bench
    with open(tmp_path / "out.log", "w+") as out, open(tmp_path / "err.log", "w+") as err:
        proc, found, leftovers = watch_listeners(cmd, tmp_path, out, err, "the fleet benchmark")
        assert proc.returncode == 0, tail(err)
        out.seek(0)
        result = json.loads(out.read().strip().splitlines()[-1])
    assert any(is_ray(lst) for lst in found), f"no Ray listener seen, the check would be vacuous: {found}"
    assert_loopback_only(found)
    assert leftovers == [], "processes of the benchmark outlived it"
    ratio = result["sharded_ratio"]
    assert isinstance(ratio, (int, float)) and ratio > 0, result
    assert result["largest_units"] == 2000 and result["per_twin_actors"]["actors"] == 2
    shards = result["sharded_shards"]
    assert shards == result["rows"][-1]["sharded"]["shards"] >= 1
    assert result["sharded_ratio_per_core"] == pytest.approx(ratio / shards, abs=1e-3)


JOIN_FAIL_SAFE = """
import os
import ray  # before twinloop, as in FAIL_SAFE
import twinloop.twins.cluster as cluster
from twinloop.errors import TwinError

for address in ("127.0.0.1:1", "localhost:1", None):  # None: $RAY_ADDRESS, as inside a Ray Job
    try:
        cluster.ensure_ray(address)
    except TwinError as err:
        print(address, "TwinError:", err)
print("initialized:", ray.is_initialized())
"""


def test_ray_imported_first_refuses_to_join_a_cluster_on_loopback(tmp_path: Path) -> None:
    """Joining a loopback cluster with Ray's listeners on every interface is refused before connecting."""
    run = subprocess.run([sys.executable, "-c", JOIN_FAIL_SAFE], cwd=tmp_path,
                         env={**env_without_ray_var(), "RAY_ADDRESS": "127.0.0.1:1"},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for address in ("127.0.0.1:1", "localhost:1", "None"):
        assert f"{address} TwinError: ray was imported before twinloop" in run.stdout, run.stdout + run.stderr
    assert "initialized: False" in run.stdout


def test_loopback_addresses_are_told_apart() -> None:
    from twinloop.twins.cluster import is_loopback_address

    assert all(map(is_loopback_address, ["127.0.0.1:6379", "localhost:6379", "ray://127.0.0.1:10001",
                                         "[::1]:6379", "::1", "http://127.0.0.1:8265/"]))
    assert not any(map(is_loopback_address, ["10.0.0.1:6379", "0.0.0.0:6379", "head.example:6379",
                                             "ray://head:10001", "auto"]))
