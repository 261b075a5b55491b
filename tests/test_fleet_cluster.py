"""A fleet on a Ray cluster started by hand (``ray start --head``) on loopback, as docs/cluster.md tells.

The module starts one head node on 127.0.0.1 (its own temp dir, ports and
authentication token), then checks that

- every socket of the cluster's processes listens on loopback only;
- a driver joining it with ``simulate(..., address=...)`` gets the outcome the
  fleet has without Ray (``run_local``), with shard actors named
  ``twinloop-fleet/<fleet>/<token>/shard-N``;
- the shards' five Prometheus metrics reach the head's metrics export port,
  and Ray's generated ``prometheus.yml`` points a Prometheus server at it
  (scraped for real where Debian's ``prometheus`` is installed);
- the simulation runs as a Ray Job (the Python API, and ``twinloop simulate``);
- ``twinloop simulate --ray-address`` joins the cluster, and without it the
  CLI's own Ray listens on loopback only.

Every driver runs in a subprocess: the test process may already hold the
session's local Ray (``twinloop_ray``), and a process joins one Ray only.
The head's processes daemonize; they are found by their command lines (the
unique temp dir or GCS address) and their descendants, and stopped by pid:
``ray stop`` cannot be scoped to one cluster and would stop every Ray here.

Ray 2.60 turns token authentication on for ``ray start --head`` when a token
exists (``~/.ray/auth_token``), and a driver that names an address only uses
a token with ``RAY_AUTH_MODE=token``: the head gets its own token through
``RAY_AUTH_MODE=token RAY_AUTH_TOKEN=...``, and so does every client here.
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil
import pytest

from test_fleet import FLEET as BASE_FLEET, within
from test_listeners import (CLI, RAY_VAR, Listener, assert_loopback_only, env_without_ray_var, is_ray, listeners,
                            process_tree, reap, stop, tail)
from twinloop.twins.fleet import run_local
from twinloop.twins.fleet_spec import parse_fleet

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
#: The longest unix socket Ray makes under its temp dir, less the temp dir (the limit is 107 bytes).
SOCKET_TAIL = len("/session_2026-01-01_00-00-00_000000_4194304/sockets/dash_MetricsHead")
SOCKET_PATH_MAX = 107
START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 240
METRICS_TIMEOUT_S = 60
METRIC_NAMES = ("twinloop_fleet_twin_steps_per_second", "twinloop_fleet_twin_steps_total",
                "twinloop_fleet_units_failed", "twinloop_fleet_failure_time_seconds", "twinloop_fleet_rul_seconds")
#: Variables that would make a subprocess join or authenticate to another Ray than the one a test means.
RAY_CLIENT_VARS = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")

#: test_fleet's two groups (pumps, then power modules; shard boundaries fall inside groups), named per run.
FLEET = (BASE_FLEET.format(shards="auto", array="numpy", pumps=1003).replace("{", "{{").replace("}", "}}")
         .replace("fleet: pumps-and-modules", "fleet: {name}"))

#: A driver: simulate the fleet file argv[1] with checkpoints in argv[2] on the Ray at argv[3]
#: (none: $RAY_ADDRESS, as in a Ray Job); one JSON line with the outcome and the shard actors' names.
#: With $HOLD set it says {"held": ...} once every shard call is done and waits for a line on stdin:
#: the shards are alive then, and so are their gauges (Ray drops a dead worker's gauges ~20 s later).
DRIVER = """\
import json, os, sys
import twinloop  # first: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before ray is imported
from twinloop.twins.fleet import simulate

names, held = set(), []

def progress(p):
    names.update(p.actor_names)
    if os.environ.get("HOLD") and p.calls_done == p.calls_total and not held:
        held.append(p)
        print(json.dumps({"held": True, "failed": p.failed}), flush=True)
        sys.stdin.readline()

result = simulate(sys.argv[1], sys.argv[2], address=sys.argv[3] if len(sys.argv) > 3 else None,
                  progress=progress)
print(json.dumps({"outcome": result.outcome(), "shards": result.shards, "twin_steps": result.twin_steps,
                  "actors": sorted(names), "python": sys.executable}), flush=True)
"""


# --- helpers ---------------------------------------------------------------------------------------------------

def fleet_name(what: str) -> str:
    """A fleet name no other run on this machine uses, so its metrics are this run's alone."""
    return f"cluster-{what}-{uuid.uuid4().hex[:8]}"


def write_fleet(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fleet.yaml"
    path.write_text(FLEET.format(name=name))
    return path


@functools.lru_cache(maxsize=None)
def expected_groups(name: str) -> list[dict[str, Any]]:
    """The fleet's groups without Ray (``run_local``), as JSON gives them back."""
    plan = parse_fleet(FLEET.format(name=name), "fleet.yaml").plan
    return json.loads(json.dumps([vars(g) for g in run_local(plan)]))


def assert_outcome(outcome: dict[str, Any], name: str) -> None:
    """``outcome`` (all of ``FleetResult.outcome()`` or the CLI's part of it) is the fleet's own."""
    plan = parse_fleet(FLEET.format(name=name), "fleet.yaml").plan
    known = {"fleet": name, "seed": plan.seed, "horizon_s": plan.horizon, "dt_s": plan.dt, "steps": plan.steps,
             "units": plan.units, "array": "numpy", "notes": []}
    assert {k: outcome[k] for k in known if k in outcome} == {k: v for k, v in known.items() if k in outcome}
    groups = outcome["groups"]
    assert groups == expected_groups(name)
    assert 0 < groups[0]["failed"] < groups[0]["units"]  # not a vacuous comparison


def json_objects(text: str, key: str) -> list[dict[str, Any]]:
    """Every JSON object in ``text`` that starts a line and has ``key`` (a job log mixes them with Ray's lines)."""
    decoder, found = json.JSONDecoder(), []
    for m in re.finditer(r"(?m)^\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and key in obj:
            found.append(obj)
    return found


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def clean_env() -> dict[str, str]:
    """This environment less RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER and anything naming another Ray or token."""
    return {k: v for k, v in env_without_ray_var().items() if k not in RAY_CLIENT_VARS}


def watch(proc: subprocess.Popen[str], trees: Callable[[], list[psutil.Process]], timeout: float,
          seen: dict[int, psutil.Process], others: Callable[[], list[psutil.Process]] | None = None
          ) -> set[Listener]:
    """Poll the listeners of ``trees()`` until ``proc`` exits (or ``timeout``); every process seen goes in ``seen``.

    ``others()`` (a cluster's processes) are polled too, but not put in ``seen``: they are not the caller's to stop.
    """
    found: set[Listener] = set()
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        procs = trees()
        seen.update((p.pid, p) for p in procs)
        found |= listeners(procs) | (listeners(others()) if others else set())
        time.sleep(0.3)
    return found


# --- the head node ---------------------------------------------------------------------------------------------

@dataclass
class Cluster:
    """A head node started with ``ray start --head`` on 127.0.0.1, and how to reach it."""

    temp_dir: Path
    gcs_port: int
    dashboard_port: int
    metrics_port: int
    client_port: int
    agent_port: int
    autoscaler_metrics_port: int
    dashboard_metrics_port: int
    token: str = field(repr=False)
    env: dict[str, str] = field(repr=False)  # of the head; also right for a client (token, venv first on PATH)
    roots: list[psutil.Process] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def find_roots(self) -> list[psutil.Process]:
        """The daemons ``ray start`` left: every process whose command line names the temp dir or GCS address."""
        me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
        marks = (str(self.temp_dir), f"--address={self.address}", f"--gcs-address={self.address}")
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                cmd = proc.info["cmdline"] or []
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if proc.pid not in me and any(m in arg for arg in cmd for m in marks):
                found.append(proc)
        return found

    def processes(self) -> list[psutil.Process]:
        """The cluster's processes alive now: the daemons and all their descendants (agents, workers, jobs)."""
        procs = {p.pid: p for root in self.roots for p in process_tree(root.pid)}
        return list(procs.values())


def short_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bool]:
    """A temp dir for Ray whose sockets fit the unix path limit; True when it is ours to remove."""
    base = tmp_path_factory.mktemp("ray")
    if len(str(base)) + SOCKET_TAIL <= SOCKET_PATH_MAX:
        return base, False
    return Path(tempfile.mkdtemp(prefix="tlray-", dir="/tmp")), True


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


def stop_cluster(procs: list[psutil.Process]) -> list[psutil.Process]:
    """SIGTERM by pid in ``ray stop``'s order (raylet first, gcs_server last), SIGKILL what hangs; the killed ones.

    All at once, the raylet and gcs_server tend to wait on each other until killed.
    """
    stages = [[p for p in procs if _name(p) == "raylet"],
              [p for p in procs if _name(p) not in ("raylet", "gcs_server")],
              [p for p in procs if _name(p) == "gcs_server"]]
    killed = []
    for stage in stages:
        for proc in stage:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        killed += reap(stage, timeout=10)
    return killed


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    temp_dir, ours = short_temp_dir(tmp_path_factory)
    gcs, dash, metrics, client, agent, autoscaler_metrics, dashboard_metrics = free_ports(7)
    token = secrets.token_hex(32)  # what `ray get-auth-token --generate` makes
    env = {**clean_env(), RAY_VAR: "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # as with the venv activated
           # the autoscaler's and the dashboard's own metrics ports (default 44217, 44227: one head per machine)
           "AUTOSCALER_METRIC_PORT": str(autoscaler_metrics), "DASHBOARD_METRIC_PORT": str(dashboard_metrics)}
    c = Cluster(temp_dir, gcs, dash, metrics, client, agent, autoscaler_metrics, dashboard_metrics, token, env)
    ray_cli = shutil.which("ray", path=str(VENV_BIN)) or "ray"
    cmd = [ray_cli, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--metrics-export-port={metrics}",
           f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
           "--num-cpus=2", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    try:
        try:
            started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S,
                                     stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ray start did not return within {START_TIMEOUT_S} s")
        assert started.returncode == 0, f"ray start failed:\n{started.stdout[-3000:]}\n{started.stderr[-3000:]}"
        c.roots = c.find_roots()
        assert any(p.name() == "gcs_server" for p in c.roots), f"no gcs_server found: {c.roots}"
        yield c
    finally:
        procs = {p.pid: p for p in [*c.processes(), *c.find_roots()]}
        procs.update((p.pid, p) for root in c.find_roots() for p in process_tree(root.pid))
        stop_cluster(list(procs.values()))
        left = c.find_roots()
        if ours:
            shutil.rmtree(temp_dir, ignore_errors=True)
    assert left == [], f"processes of the head node outlived its teardown: {left}"


def client_env(c: Cluster) -> dict[str, str]:
    """For a process that joins ``c``: its token, the venv on PATH, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER unset."""
    return {k: v for k, v in c.env.items() if k != RAY_VAR}


Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


def fleet_metrics(text: str, fleet: str) -> Samples:
    """The twinloop_fleet_ samples of ``fleet`` in a Prometheus text page (Ray prefixes the names with ``ray_``)."""
    out: Samples = {}
    for m in re.finditer(r"(?m)^(?:ray_)?(twinloop_fleet_\w+)\{(.*)\} (\S+)$", text):
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2)))
        if labels.get("fleet") == fleet:
            out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def failed_by_group(samples: Samples) -> dict[str, float]:
    failed: dict[str, float] = {}
    for labels, v in samples.get("twinloop_fleet_units_failed", []):
        failed[labels["group"]] = failed.get(labels["group"], 0) + v
    return failed


def metrics_while_held(c: Cluster, fleet: str, failed: int) -> tuple[Samples, str]:
    """The fleet's samples on the metrics export port once all five are there and the failures add up (bounded)."""
    url = f"http://127.0.0.1:{c.metrics_port}/metrics"
    deadline, seen, page = time.monotonic() + METRICS_TIMEOUT_S, {}, ""
    while time.monotonic() < deadline:
        try:
            page = scrape(url)
        except (urllib.error.URLError, OSError) as err:
            page = f"{type(err).__name__}: {err}"
        seen = fleet_metrics(page, fleet)
        if all(n in seen for n in METRIC_NAMES) and sum(failed_by_group(seen).values()) == failed:
            break
        time.sleep(1)
    return seen, page


@dataclass
class DriverRun:
    name: str
    returncode: int | None
    log: str
    result: dict[str, Any] | None
    found: set[Listener]
    held: dict[str, Any] | None = None      # what the driver said once every shard call was done
    samples: Samples = field(default_factory=dict)  # the fleet's metrics then, shards alive
    page: str = ""                          # the last /metrics page read then


@pytest.fixture(scope="module")
def driver_run(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> DriverRun:
    """``simulate(fleet, ..., address=cluster)`` in a subprocess, the cluster's listeners polled while it runs.

    Held once the shards are done, while the metrics export port is read; then let finish.
    """
    work = tmp_path_factory.mktemp("driver")
    name = fleet_name("driver")
    fleet = write_fleet(work, name)
    (work / "driver.py").write_text(DRIVER)
    mine: dict[int, psutil.Process] = {}
    run = DriverRun(name, None, "", None, set())

    def trees() -> list[psutil.Process]:
        own = process_tree(proc.pid)
        mine.update((p.pid, p) for p in own)
        return [*cluster.processes(), *own]

    with open(work / "out.log", "w+") as out:
        proc = subprocess.Popen([sys.executable, "driver.py", str(fleet), str(work / "checkpoints"), cluster.address],
                                cwd=work, env={**client_env(cluster), "HOLD": "1"}, stdin=subprocess.PIPE,
                                stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while proc.poll() is None and time.monotonic() < deadline:
                run.found |= listeners(trees())
                if run.held is None:
                    out.seek(0)
                    said = json_objects(out.read(), "held")
                    if said:
                        run.held = said[0]
                        run.samples, run.page = metrics_while_held(cluster, name, run.held["failed"])
                        proc.stdin.write("go\n")
                        proc.stdin.close()
                time.sleep(0.3)
            run.found |= listeners(cluster.processes())  # the idle workers the raylet keeps
        finally:
            trees()
            stop(proc)
            reap(list(mine.values()))
        run.returncode, run.log = proc.returncode, tail(out)
        out.seek(0)
        results = json_objects(out.read(), "outcome")
    run.result = results[-1] if results else None
    return run


# --- the tests -------------------------------------------------------------------------------------------------

def test_the_head_node_listens_on_loopback_only(cluster: Cluster, driver_run: DriverRun) -> None:
    """Every listener of the head's processes (GCS, raylet, dashboard, agents, workers, the driver's) is on loopback."""
    found = driver_run.found
    ports = {lst.port for lst in found}
    named = {"GCS": cluster.gcs_port, "dashboard": cluster.dashboard_port, "metrics export": cluster.metrics_port,
             "Ray client server": cluster.client_port, "dashboard agent": cluster.agent_port,
             "autoscaler metrics": cluster.autoscaler_metrics_port,
             "dashboard metrics": cluster.dashboard_metrics_port}
    assert {k: p for k, p in named.items() if p not in ports} == {}, f"ports not seen listening: {sorted(found)}"
    assert any(lst.process.startswith("ray::") for lst in found), "no worker listener seen"
    assert_loopback_only(found)


def test_a_driver_on_the_cluster_gets_the_outcome_the_fleet_has_without_ray(driver_run: DriverRun) -> None:
    assert driver_run.returncode == 0, driver_run.log
    assert driver_run.result is not None, f"no JSON result in the driver's output:\n{driver_run.log}"
    r = driver_run.result
    assert_outcome(r["outcome"], driver_run.name)
    assert r["shards"] == 2  # shards: auto, one per CPU the head offers (--num-cpus=2)
    assert len(r["actors"]) == 2
    for i, actor in enumerate(r["actors"]):
        assert re.fullmatch(rf"twinloop-fleet/{re.escape(driver_run.name)}/[0-9a-f]{{8}}/shard-{i}", actor), actor


def test_the_shards_metrics_reach_the_metrics_export_port(cluster: Cluster, driver_run: DriverRun) -> None:
    """The five metrics, tagged with the fleet, on ``/metrics``; failures and steps add up to the run's."""
    assert driver_run.result is not None and driver_run.held is not None, driver_run.log
    seen = driver_run.samples
    missing = [n for n in METRIC_NAMES if n not in seen]
    assert missing == [], (f"not on the metrics export port within {METRICS_TIMEOUT_S} s of the shards' last call: "
                           f"{missing}; seen {sorted(seen)}\npage: {driver_run.page[-2000:]}")
    groups = {g["name"]: g for g in driver_run.result["outcome"]["groups"]}
    assert failed_by_group(seen) == {name: g["failed"] for name, g in groups.items()}
    assert {labels["shard"] for labels, _ in seen["twinloop_fleet_twin_steps_total"]} == {"0", "1"}
    quantiles = {labels["quantile"] for labels, _ in seen["twinloop_fleet_failure_time_seconds"]}
    assert quantiles <= {"p05", "p50", "p95"} and "p05" in quantiles
    assert {labels["group"] for labels, _ in seen["twinloop_fleet_rul_seconds"]} == set(groups)
    # the counter outlives the shards: all of the run's twin-steps
    url, want = f"http://127.0.0.1:{cluster.metrics_port}/metrics", driver_run.result["twin_steps"]
    deadline, steps = time.monotonic() + METRICS_TIMEOUT_S, None
    while time.monotonic() < deadline:
        try:
            page = scrape(url)
        except (urllib.error.URLError, OSError):
            page = ""
        steps = sum(v for _, v in fleet_metrics(page, driver_run.name).get("twinloop_fleet_twin_steps_total", []))
        if steps == pytest.approx(want, rel=1e-6):
            break
        time.sleep(1)
    assert steps == pytest.approx(want, rel=1e-6), f"twinloop_fleet_twin_steps_total adds up to {steps}, not {want}"


def prometheus_files(c: Cluster) -> tuple[Path, Path]:
    """Ray's generated prometheus.yml and the service-discovery file it names (waits until both exist)."""
    config = c.temp_dir / "session_latest" / "metrics" / "prometheus" / "prometheus.yml"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if config.is_file():
            text = config.read_text()
            files = re.findall(r"-\s*'([^']+\.json)'", text) or re.findall(r'-\s*"?(\S+\.json)"?', text)
            if files and Path(files[0]).is_file():
                return config, Path(files[0])
        time.sleep(0.5)
    listing = sorted(str(p.relative_to(c.temp_dir)) for p in c.temp_dir.glob("session_latest/metrics/**/*"))
    pytest.fail(f"{config} (naming an existing service-discovery file) did not appear within 30 s: {listing}")


def scrape_targets(discovery: Path) -> list[str]:
    try:
        return [t for entry in json.loads(discovery.read_text()) for t in entry["targets"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []  # being rewritten


def test_rays_prometheus_config_names_the_metrics_export_port(cluster: Cluster) -> None:
    """prometheus.yml scrapes the targets of a service-discovery file, which lists the head's metrics ports."""
    config, discovery = prometheus_files(cluster)
    assert discovery.parent.resolve() == (cluster.temp_dir / "session_latest").resolve()
    want = {f"127.0.0.1:{p}" for p in (cluster.metrics_port, cluster.autoscaler_metrics_port,
                                       cluster.dashboard_metrics_port)}
    deadline, targets = time.monotonic() + 30, []
    while time.monotonic() < deadline:  # the agent's port is added once it has registered
        targets = scrape_targets(discovery)
        if want <= set(targets):
            break
        time.sleep(0.5)
    assert want <= set(targets), f"{discovery} lists {targets}, not all of {sorted(want)}"
    assert all(t.startswith("127.0.0.1:") for t in targets), targets
    assert "file_sd_configs" in config.read_text()


def test_prometheus_scrapes_the_fleet_metrics(cluster: Cluster, driver_run: DriverRun, tmp_path: Path) -> None:
    """Debian's prometheus, run on Ray's prometheus.yml on 127.0.0.1, answers PromQL on the fleet's metrics.

    It asks for the steps counter: a finished fleet's gauges are gone before a first scrape can be relied on.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian: apt-get install --no-install-recommends prometheus)")
    assert driver_run.result is not None, driver_run.log
    config, _ = prometheus_files(cluster)
    [port] = free_ports(1)
    want = driver_run.result["twin_steps"]
    query = f'sum by (fleet) (ray_twinloop_fleet_twin_steps_total{{fleet="{driver_run.name}"}})'
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    found: set[Listener] = set()
    got: list[Any] = []
    with open(tmp_path / "prometheus.log", "w+") as log:
        proc = subprocess.Popen([binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
                                 f"--storage.tsdb.path={tmp_path / 'data'}"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            last, deadline = "", time.monotonic() + 90  # Ray's config scrapes every 10 s
            while proc.poll() is None and time.monotonic() < deadline:
                found |= listeners(process_tree(proc.pid))
                try:
                    last = scrape(url)
                    got = json.loads(last)["data"]["result"]
                except (urllib.error.URLError, OSError, ValueError, KeyError) as err:
                    last = f"{type(err).__name__}: {err}"
                if len(got) == 1 and float(got[0]["value"][1]) == pytest.approx(want, rel=1e-6):
                    break
                time.sleep(1)
            assert len(got) == 1 and float(got[0]["value"][1]) == pytest.approx(want, rel=1e-6), (
                f"PromQL {query} did not give {want} within 90 s: {last}\n{tail(log)}")
            targets = json.loads(scrape(f"http://127.0.0.1:{port}/api/v1/targets"))["data"]["activeTargets"]
        finally:
            stop(proc)
    assert got[0]["metric"] == {"fleet": driver_run.name}
    assert f"127.0.0.1:{cluster.metrics_port}" in {t["labels"]["instance"] for t in targets}
    assert found and {lst.port for lst in found if lst.proto == "tcp"} == {port}, found
    assert_loopback_only(found)


def submit_and_wait(c: Cluster, entrypoint: str, workdir: Path) -> tuple[str, str]:
    """Submit ``entrypoint`` with ``workdir`` as its working_dir; wait (bounded) for it to end; status and logs.

    While the job runs, every listener of the cluster's processes (the job's supervisor, its entrypoint and
    the shards' workers among them) is polled: each must be on loopback, and some must be of processes
    the job started, or the check would be vacuous.
    """
    from ray.job_submission import JobStatus, JobSubmissionClient

    before = {p.pid for p in c.processes()}
    found: set[Listener] = set()
    headers = {"Authorization": f"Bearer {c.token}"}  # what RAY_AUTH_MODE=token would add from the token
    client = within(60, lambda: JobSubmissionClient(c.dashboard, headers=headers), "the dashboard")
    job = within(120, lambda: client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": str(workdir)}),
                 "job submission")
    deadline, status = time.monotonic() + RUN_TIMEOUT_S, None
    while time.monotonic() < deadline:
        found |= listeners(c.processes())
        status = within(30, lambda: client.get_job_status(job), "get_job_status")
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            break
        time.sleep(0.3)
    logs = within(30, lambda: client.get_job_logs(job), "get_job_logs")
    if status not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        within(30, lambda: client.stop_job(job), "stop_job")
        pytest.fail(f"job {job} still {status} after {RUN_TIMEOUT_S} s:\n{logs[-3000:]}")
    assert any(lst.pid not in before for lst in found), f"no listener of the job's processes seen: {sorted(found)}"
    assert_loopback_only(found)
    return str(status), logs


def test_a_ray_job_simulates_the_fleet_on_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    """The Python API as a Ray Job: $RAY_ADDRESS names the cluster, the head's token and venv carry over."""
    name = fleet_name("job")
    workdir = tmp_path / "job"
    write_fleet(workdir, name)
    (workdir / "driver.py").write_text(DRIVER)
    status, logs = submit_and_wait(cluster, "python driver.py fleet.yaml checkpoints", workdir)
    assert status == "SUCCEEDED", logs[-3000:]
    [result] = json_objects(logs, "outcome")
    assert_outcome(result["outcome"], name)
    assert result["shards"] == 2 and Path(result["python"]).parent == VENV_BIN  # `python` of the head's PATH


def test_twinloop_simulate_as_a_ray_job(cluster: Cluster, tmp_path: Path) -> None:
    """``twinloop simulate fleet.yaml --json`` as a job's entrypoint joins the cluster and commits the summary."""
    name = fleet_name("clijob")
    workdir = tmp_path / "job"
    write_fleet(workdir, name)
    home = tmp_path / "home"
    entrypoint = shlex.join([sys.executable, "-m", "twinloop.harness.cli", "simulate", "fleet.yaml", "--json",
                             "--home", str(home)])
    status, logs = submit_and_wait(cluster, entrypoint, workdir)
    assert status == "SUCCEEDED", logs[-3000:]
    results = json_objects(logs, "outcome")
    assert len(results) == 1, logs[-3000:]
    check_cli_result(results[0], name)


def check_cli_result(r: dict[str, Any], name: str) -> None:
    assert_outcome(r["outcome"], name)
    assert r["run_id"] and r["bundle_cid"], r
    assert Path(r["report"]).is_file(), r["report"]


def run_cli(args: list[str], cwd: Path, env: dict[str, str], log: Path,
            others: Callable[[], list[psutil.Process]] | None = None
            ) -> tuple[int | None, str, set[Listener], list[psutil.Process]]:
    """Run the CLI to its end (bounded), polling its tree's listeners (and ``others()``'s, not stopped here);
    exit code, stdout, listeners, leftovers."""
    seen: dict[int, psutil.Process] = {}
    with open(log, "w+") as err, open(log.with_suffix(".out"), "w+") as out:
        proc = subprocess.Popen([*CLI, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                text=True)
        try:
            found = watch(proc, lambda: process_tree(proc.pid), RUN_TIMEOUT_S, seen, others)
            assert proc.poll() is not None, f"twinloop {args[0]} did not finish in {RUN_TIMEOUT_S} s:\n{tail(err)}"
        finally:
            seen.update((p.pid, p) for p in process_tree(proc.pid))
            stop(proc)
            leftovers = reap(list(seen.values()))  # its Ray, anvil and IPFS: stopped by the CLI, else killed here
        out.seek(0)
        stdout = out.read()
        if proc.returncode != 0:
            stdout += "\n--- stderr ---\n" + tail(err)
    return proc.returncode, stdout, found, leftovers


def test_twinloop_simulate_joins_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    name = fleet_name("cli")
    fleet = write_fleet(tmp_path, name)
    before = {p.pid for p in cluster.processes()}
    rc, stdout, found, leftovers = run_cli(
        ["simulate", str(fleet), "--ray-address", cluster.address, "--json", "--home", str(tmp_path / "home")],
        tmp_path, client_env(cluster), tmp_path / "cli.log", others=cluster.processes)
    assert rc == 0, stdout
    results = json_objects(stdout, "outcome")
    assert len(results) == 1, stdout
    check_cli_result(results[0], name)
    # the CLI's tree (its Ray driver, anvil) and the cluster's processes (the shards' workers among them)
    assert any(lst.pid not in before for lst in found), f"no listener of this simulation seen: {sorted(found)}"
    assert_loopback_only(found)
    assert leftovers == [], "processes of the CLI outlived it"


def test_twinloop_simulate_with_its_own_ray_listens_on_loopback_only(tmp_path: Path) -> None:
    """No --ray-address, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER unset: the CLI's Ray, dashboard included, on loopback."""
    name = fleet_name("own")
    fleet = write_fleet(tmp_path, name)
    rc, stdout, found, leftovers = run_cli(["simulate", str(fleet), "--json", "--home", str(tmp_path / "home")],
                                           tmp_path, clean_env(), tmp_path / "cli.log")
    assert rc == 0, stdout
    [result] = json_objects(stdout, "outcome")
    check_cli_result(result, name)
    assert any(is_ray(lst) for lst in found), f"no Ray listener seen, the check would be vacuous: {found}"
    assert_loopback_only(found)
    dashboard = result.get("dashboard")
    if dashboard:
        assert urllib.parse.urlsplit(dashboard).hostname == "127.0.0.1", dashboard
    assert leftovers == [], "processes of the CLI outlived it"
