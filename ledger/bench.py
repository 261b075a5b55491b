"""RunLedger gas and speed on a fresh anvil (127.0.0.1): RunLedger/3 against version 1, measured in the same run.

Deploys RunLedger/3 (``contracts/RunLedger.vy``: v2's one slot and indexed
event per run, plus batches) and v1 on one new anvil, grants the recorder role
to a few bench keys and the reviewer role to one, then records the same N runs
on each contract (quick: 50, full: 500), alternating run by run: RunLedger/3
through ``RunLedgerClient.record``, v1 through the same estimate-sign-send-await
path with its own ABI (the whole record in storage; ``contracts/RunLedgerV1.vy``,
compiled here, kept only for this comparison). Then it accepts baselines and
sends maintenance requests, and records batches of 10, 100 and 1,000 runs with
``record_batch`` (one RFC 6962 root and one slot per batch; the manifest goes to
an embedded IPFS store): ``gas_per_run.batch_N`` is that transaction's gas
divided by N. Gas is each receipt's ``gasUsed``; records/s is sequential (each
record awaits its receipt) on anvil as twinloop embeds it (state dumped to a
file every second).

Then speed: the embedded IPFS importer against Debian's ``ipfs_cid`` (where
installed) on one 64 MB file of random bytes, like for like: ``import_file``
times reading the file and hashing it, in this process; ``ipfs_cid`` is timed
as a process on the same file, less its start-up (timed on an empty file), so
both sides read the file from the page cache and hash it (best of two each).
Then commit (``harness.commit.commit``: attest, outbox, IPFS, chain) and verify
(``no_scenario_file``) of a one-hour 10 Hz run of 20 signals (the
thermal-cycling bundle with 36,000 synthetic rows); and ``get`` + verify of one
real run among 1,000 (quick) or 10,000 single records (``verify_among_runs``).

    python -m twinloop.ledger.bench [--quick] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.table import Table
from web3 import Web3
from web3.types import RPCEndpoint

from twinloop.ledger import artifact
from twinloop.ledger.anvil import AnvilNode
from twinloop.ledger.chain import LedgerEntry, RunLedgerClient
from twinloop.ledger.embedded import DEV_FUNDING_WEI
from twinloop.ledger.tx import send
from twinloop.ledger.ipfs import EmbeddedIpfs, cid_of

QUICK_RUNS, FULL_RUNS = 50, 500
IMPORT_MB = 64
LONG_RUN_ROWS, LONG_RUN_SIGNALS = 36_000, 20  # one hour at 10 Hz
QUICK_AMONG, FULL_AMONG = 1_000, 10_000
BUNDLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "run-v2-thermal-cycling.json"
BENCH_KEYS = 4
SMALL = 10  # baselines accepted and maintenance requests sent
BATCH_SIZES = (10, 100, 1000)
DUT_ID = "pm-600v-half-bridge"


def _entries(n: int) -> list[LedgerEntry]:
    """N realistic runs: five scenarios, two DUT versions, one run in ten failing."""
    scenarios = [hashlib.sha256(f"scenarios/example-{i}.yaml".encode()).hexdigest() for i in range(5)]
    return [LedgerEntry(run_id=str(uuid.uuid4()), scenario_hash=scenarios[i % 5], dut_id=DUT_ID,
                        dut_version="1.0.0" if i % 2 else "1.1.0", bundle_cid=cid_of(os.urandom(512)),
                        verdict="fail" if i % 10 == 9 else "pass") for i in range(n)]


def _stats(values: list[int]) -> dict[str, int]:
    return {"min": min(values), "median": int(statistics.median(values)), "max": max(values)}


def run(quick: bool) -> dict[str, Any]:
    """Measure everything on a fresh anvil; returns the figures (the --json object)."""
    n = QUICK_RUNS if quick else FULL_RUNS
    with tempfile.TemporaryDirectory(prefix="twinloop-ledger-bench-") as tmp:
        node = AnvilNode(Path(tmp) / "anvil-state.json")
        url = node.start()
        try:
            return _measure(url, n, quick, Path(tmp) / "ipfs")
        finally:
            node.stop()


def _measure(url: str, n: int, quick: bool, ipfs_dir: Path) -> dict[str, Any]:
    w3 = Web3(Web3.HTTPProvider(url))

    def fund(account: LocalAccount) -> LocalAccount:
        w3.manager.request_blocking(RPCEndpoint("anvil_setBalance"), [account.address, hex(DEV_FUNDING_WEI)])
        return account

    def gas(tx_hash: str) -> int:
        return int(w3.eth.get_transaction_receipt(tx_hash)["gasUsed"])

    admin = fund(Account.create())
    ledger = RunLedgerClient.deploy(url, admin)
    deploy_gas = gas(ledger.deploy_tx)
    benches = [fund(Account.create()) for _ in range(BENCH_KEYS)]
    reviewer = fund(Account.create())
    grant_gas = [gas(ledger.grant_role("recorder", b.address)) for b in benches]
    grant_gas.append(gas(ledger.grant_role("reviewer", reviewer.address)))
    clients = [RunLedgerClient(url, ledger.address, b) for b in benches]

    v1 = artifact.compile_source(artifact.read_source(artifact.V1_SOURCE))
    receipt = send(w3, url, admin, w3.eth.contract(abi=v1["abi"], bytecode=v1["bytecode"])
                    .constructor().build_transaction, "deploying RunLedger v1")
    v1_deploy_gas = int(receipt["gasUsed"])
    old = w3.eth.contract(address=receipt["contractAddress"], abi=v1["abi"])
    verdicts = {"pass": 1, "fail": 2, "error": 3}

    # RunLedger/3 and v1 alternate run by run, so both see the same chain (its size and anvil's state dumps).
    entries = _entries(n)
    hashes, v1_gas, v2_seconds, v1_seconds = [], [], 0.0, 0.0
    for i, e in enumerate(entries):
        start = time.perf_counter()
        hashes.append(clients[i % BENCH_KEYS].record(e))
        middle = time.perf_counter()
        v1_receipt = send(w3, url, admin, old.functions.record(
            uuid.UUID(e.run_id).bytes, bytes.fromhex(e.scenario_hash), e.dut_id, e.dut_version,
            e.bundle_cid, verdicts[e.verdict]).build_transaction, f"recording run {e.run_id} on v1")
        v2_seconds += middle - start
        v1_seconds += time.perf_counter() - middle
        v1_gas.append(int(v1_receipt["gasUsed"]))
    record_gas = [gas(h) for h in hashes]

    get_ms = []
    for entry in entries[:: max(1, n // 25)]:
        t = time.perf_counter()
        ledger.get(entry.run_id)
        get_ms.append((time.perf_counter() - t) * 1000)
    find_ms, found = [], 0
    for _ in range(5):
        t = time.perf_counter()
        found = len(ledger.find_runs(scenario_hash=entries[0].scenario_hash, dut_id=DUT_ID,
                                     dut_version=entries[0].dut_version))
        find_ms.append((time.perf_counter() - t) * 1000)

    review = RunLedgerClient(url, ledger.address, reviewer)
    passing = [e for e in entries if e.verdict == "pass"][:SMALL]
    baseline_gas = [gas(review.accept_baseline(e.run_id)) for e in passing]
    maintenance_gas = [gas(clients[0].request_maintenance(
        e.run_id, e.dut_id, e.dut_version, "module", 3600 + i, 7200, "RUL p10 below the scenario's limit"))
        for i, e in enumerate(entries[:SMALL])]

    ipfs = EmbeddedIpfs(ipfs_dir)
    batch_gas, batch_seconds = {}, {}
    for size in BATCH_SIZES:
        start = time.perf_counter()
        receipt = clients[0].record_batch(_entries(size), ipfs)
        batch_seconds[size] = time.perf_counter() - start
        batch_gas[size] = receipt.gas_used

    speed = _speed(url, clients, benches, ipfs_dir.parent, quick)

    single, v1_single = _stats(record_gas), _stats(v1_gas)
    return {
        **speed,
        "gas_per_run": {"single": single["median"],
                        **{f"batch_{k}": round(g / k, 1) for k, g in batch_gas.items()},
                        "min": single["min"], "max": single["max"],
                        "v1_single": v1_single["median"], "v1_min": v1_single["min"],
                        "v1_max": v1_single["max"],
                        "ratio": round(single["median"] / v1_single["median"], 3)},
        "gas": {"deploy": deploy_gas, "v1_deploy": v1_deploy_gas,
                "grant_role": _stats(grant_gas), "accept_baseline": _stats(baseline_gas),
                "request_maintenance": _stats(maintenance_gas)},
        "batch_gas": {str(k): g for k, g in batch_gas.items()},  # one record_batch transaction each
        "records_per_s": {"single": round(n / v2_seconds, 1), "v1_single": round(n / v1_seconds, 1),
                          **{f"batch_{k}": round(k / t, 1) for k, t in batch_seconds.items()}},
        "read_ms": {"get": round(statistics.median(get_ms), 2),
                    "find_runs": round(statistics.median(find_ms), 2), "find_runs_matches": found},
        "runs": n, "bench_keys": BENCH_KEYS, "quick": quick,
        "contract": ledger.version, "node": w3.client_version,
    }


def _timed(run: Any, times: int = 2) -> tuple[float, Any]:
    """The best wall time of ``run()`` over ``times`` calls, and its last result."""
    best, result = float("inf"), None
    for _ in range(times):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def _import_speed(tmp: Path) -> dict[str, Any]:
    """MB/s (MB = 10**6 bytes) of the embedded importer and of Debian's ipfs_cid, reading and hashing one file."""
    from twinloop.ledger.ipfs import import_file

    path, empty = tmp / "import-bench.bin", tmp / "import-bench-empty.bin"
    tmp.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(IMPORT_MB * 1_000_000))
    empty.write_bytes(b"")
    try:
        ours_s, ours = _timed(lambda: import_file(path.read_bytes())[0])
        result: dict[str, Any] = {"import_mb": IMPORT_MB, "import_mb_per_s": round(IMPORT_MB / ours_s, 1),
                                  "ipfs_cid_mb_per_s": None, "ipfs_cid_startup_s": None, "import_vs_ipfs_cid": None,
                                  "ipfs_cid_same_cid": None}
        tool = shutil.which("ipfs_cid")
        if tool:
            def cid_tool(file: Path) -> subprocess.CompletedProcess[str]:
                return subprocess.run([tool, str(file)], capture_output=True, text=True, check=False)

            startup_s, _ = _timed(lambda: cid_tool(empty))
            tool_s, done = _timed(lambda: cid_tool(path))
            if done.returncode == 0:
                try:
                    theirs = json.loads(done.stdout.strip().splitlines()[0]).get("CIDv0")
                except (ValueError, IndexError, AttributeError):
                    theirs = None
                net_s = max(tool_s - startup_s, 1e-9)
                result.update(ipfs_cid_mb_per_s=round(IMPORT_MB / net_s, 1), ipfs_cid_startup_s=round(startup_s, 4),
                              import_vs_ipfs_cid=round(net_s / ours_s, 3), ipfs_cid_same_cid=theirs == ours)
    finally:
        path.unlink(missing_ok=True)
        empty.unlink(missing_ok=True)
    return result


def _long_record(run_id: str) -> Any:
    """The thermal-cycling bundle as a one-hour 10 Hz run of 20 signals (its own columns tiled, plus noise)."""
    import random

    from twinloop.harness.judge import judge_all, overall, resolve
    from twinloop.harness.record import RunRecord, Samples
    from twinloop.harness.runner import step_failures
    from twinloop.harness.scenario import Bounds, parse_scenario

    record = RunRecord.from_bytes(BUNDLE.read_bytes())
    rng = random.Random(7)
    t = [round(i * 0.1, 1) for i in range(LONG_RUN_ROWS)]
    columns: dict[str, list[float | None]] = {}
    for name, values in record.samples.columns.items():
        got = [v for v in values if v is not None] or [0.0]
        columns[name] = [got[i % len(got)] for i in range(LONG_RUN_ROWS)]
    k = 0
    while len(columns) < LONG_RUN_SIGNALS:
        columns[f"module.extra_{k}"] = [round(25 + 10 * rng.random(), 6) for _ in range(LONG_RUN_ROWS)]
        k += 1
    record = record.model_copy(update={"run_id": run_id, "attestation": None,
                                       "samples": Samples(t=t, t_read=list(t), columns=columns)})
    # judged as a real run would be at its end, so the bundle's verdicts are its samples'
    source = parse_scenario(record.scenario.path, record.scenario.text)
    units = dict(record.rig.units) or {e.signal: e.unit for e in source.scenario.expect
                                       if isinstance(e, Bounds) and e.unit}
    verdicts = judge_all(resolve(source, units), record)
    return record.model_copy(update={"verdicts": verdicts,
                                     "outcome": overall(verdicts, record.error, step_failures(record))})


def _speed(url: str, clients: list[RunLedgerClient], benches: list[LocalAccount], tmp: Path,
           quick: bool) -> dict[str, Any]:
    """Import MB/s, commit/verify of a long run, and get + verify of one run among many singles."""
    from twinloop.harness.commit import commit
    from twinloop.harness.record import RunRecord
    from twinloop.harness.services import KEY_ENV, ServiceOptions, Services
    from twinloop.harness.verify import verify

    result = _import_speed(tmp)
    saved = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = benches[0].key.hex()
    try:
        with Services(ServiceOptions(home=tmp / "home", chain_url=url, contract=clients[0].address)) as services:
            record = _long_record(str(uuid.uuid4()))
            start = time.perf_counter()
            committed = commit(record, services)
            commit_s = time.perf_counter() - start
            start = time.perf_counter()
            v = verify(committed.run_id, services, no_scenario_file=True)
            verify_s = time.perf_counter() - start
            result.update(commit_s=round(commit_s, 2), verify_s=round(verify_s, 2),
                          long_run_bundle_mb=round(len(committed.record.to_bytes()) / 1e6, 2),
                          long_run_rows=LONG_RUN_ROWS, long_run_signals=LONG_RUN_SIGNALS, long_run_verified=v.ok,
                          long_run_failed_checks=[c.name for c in v.checks if c.status == "failed"])

            among = QUICK_AMONG if quick else FULL_AMONG
            entries = _entries(among - 1)
            half = len(entries) // 2
            start = time.perf_counter()
            for i, e in enumerate(entries[:half]):
                clients[i % BENCH_KEYS].record(e, gas=200_000)
            target = commit(RunRecord.from_bytes(BUNDLE.read_bytes()).model_copy(
                update={"run_id": str(uuid.uuid4()), "attestation": None}), services)
            for i, e in enumerate(entries[half:]):
                clients[i % BENCH_KEYS].record(e, gas=200_000)
            fill_s = time.perf_counter() - start
            start = time.perf_counter()
            services.ledger.get(target.run_id)
            get_ms = (time.perf_counter() - start) * 1000
            start = time.perf_counter()
            v = verify(target.run_id, services, no_scenario_file=True)
            among_s = time.perf_counter() - start
            result.update({"verify_among_s": round(among_s, 3), "get_among_ms": round(get_ms, 2),
                           "among_runs": among, "verify_among_runs": among, "among_verified": v.ok,
                           "among_records_per_s": round(among / fill_s, 1)})
    finally:
        if saved is None:
            os.environ.pop(KEY_ENV, None)
        else:
            os.environ[KEY_ENV] = saved
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m twinloop.ledger.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RUNS} runs per contract, not {FULL_RUNS}")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)
    console = Console(stderr=args.json)
    runs = QUICK_RUNS if args.quick else FULL_RUNS
    with console.status(f"fresh anvil on 127.0.0.1: {runs} runs on RunLedger/3 and on v1"):
        r = run(args.quick)
    if args.json:
        print(json.dumps(r))
        return 0
    per_run, g = r["gas_per_run"], r["gas"]
    v1 = per_run["v1_single"]
    table = Table(title=f"{r['contract']} gas, {r['node']} on 127.0.0.1",
                  caption="vs v1: median over v1's record() (the whole record in storage), same run")
    for col in ("operation", "count", "gas min", "gas median", "gas max", "vs v1"):
        table.add_column(col, justify="left" if col == "operation" else "right")
    rows = [("record v3", r["runs"], per_run["min"], per_run["single"], per_run["max"]),
            ("record v1", r["runs"], per_run["v1_min"], v1, per_run["v1_max"])]
    for name, key, count in (("grant_role", "grant_role", r["bench_keys"] + 1),
                             ("accept_baseline", "accept_baseline", SMALL),
                             ("request_maintenance", "request_maintenance", SMALL)):
        rows.append((name, count, g[key]["min"], g[key]["median"], g[key]["max"]))
    for size in r["batch_gas"]:
        rows.append((f"record_batch {size} (per run)", int(size), per_run[f"batch_{size}"],
                     per_run[f"batch_{size}"], per_run[f"batch_{size}"]))
    rows += [("deploy v3", 1, g["deploy"], g["deploy"], g["deploy"]),
             ("deploy v1", 1, g["v1_deploy"], g["v1_deploy"], g["v1_deploy"])]
    for name, count, low, mid, high in rows:
        table.add_row(name, f"{count:,}", f"{low:,}", f"{mid:,}", f"{high:,}", f"{mid / v1:.3f}")
    console.print(table)
    rate = r["records_per_s"]
    console.print(f"records/s, sequential (each awaits its receipt): v3 {rate['single']:,} "
                  f"(client.record), v1 {rate['v1_single']:,} (same path), "
                  f"ratio {rate['single'] / rate['v1_single']:.2f}")
    reads = r["read_ms"]
    console.print(f"get(run id) {reads['get']} ms median (slot, log, receipt); find_runs by scenario + "
                  f"DUT version among {r['runs']} runs: {reads['find_runs_matches']} found in "
                  f"{reads['find_runs']} ms median")
    speed = Table(title="speed (seconds and MB/s on this machine)")
    speed.add_column("measure")
    speed.add_column("value", justify="right")
    tool = r["ipfs_cid_mb_per_s"]
    among = r["verify_among_runs"]
    for name, value in (
            (f"import_file: read + hash one {r['import_mb']} MB file, in process (MB/s)", r["import_mb_per_s"]),
            ("ipfs_cid (Debian): read + hash the same file, less its start-up (MB/s)",
             "not installed" if tool is None else tool),
            ("ipfs_cid start-up, empty file (s)", "-" if tool is None else r["ipfs_cid_startup_s"]),
            ("import_file / ipfs_cid speed", "-" if r["import_vs_ipfs_cid"] is None else r["import_vs_ipfs_cid"]),
            (f"commit, 1 h at 10 Hz, {r['long_run_signals']} signals (s)", r["commit_s"]),
            ("verify it, no scenario file (s)", f"{r['verify_s']} ({'ok' if r['long_run_verified'] else 'failed: ' + ', '.join(r['long_run_failed_checks'])})"),
            ("its bundle (MB)", r["long_run_bundle_mb"]),
            (f"get among {among:,} single runs (ms)", r["get_among_ms"]),
            (f"get + verify among {among:,} (s)", r["verify_among_s"])):
        speed.add_row(name, str(value))
    console.print(speed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
