"""The ``twinloop`` command: run a scenario, simulate a fleet, verify a recorded run."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable

import requests

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from twinloop.errors import (
    BatchNotFoundError,
    BlockNotFoundError,
    ConfigError,
    LedgerContractMismatchError,
    LedgerError,
    LedgerTamperedError,
    LedgerUnavailableError,
    RunNotFoundError,
    TwinloopError,
)
from twinloop.harness.batch_verify import batch_argument, batched_entry, verify_batched_run
from twinloop.harness.commit import BATCH_NOTES, batch_notes, noted_batch, sync_batched
from twinloop.harness.fleet_record import FleetRecord, read_bundle
from twinloop.harness.gate import gate
from twinloop.harness.fleet_report import fleet_report, write_fleet_html
from twinloop.harness.pipeline import Pipeline
from twinloop.harness.plan import Plan
from twinloop.harness.html_report import write_html
from twinloop.harness.judge import seconds_text
from twinloop.harness.report import STYLE, commit_report, run_report, verify_report
from twinloop.harness.scenario import json_schema, load_points, select_point
from twinloop.harness.runner import sigterm_interrupts
from twinloop.harness.services import DEFAULT_HOME, ServiceOptions, Services
from twinloop.ledger.chain import MaintenanceRequest
from twinloop.ledger.dsse import key_from_pem_file
from twinloop.ledger.ipfs import import_file
from twinloop.twins.fleet import FleetProgress, clear_checkpoints
from twinloop.twins.fleet_spec import MAX_SHARDS, json_schema as fleet_schema, load_fleet

EXIT = {"pass": 0, "fail": 1, "error": 2}
EXIT_INTERRUPTED = 130
#: The part of a fleet record that depends only on the fleet file (``FleetResult.outcome()``, less the notes).
OUTCOME_KEYS = {"seed", "horizon_s", "dt_s", "steps", "units", "groups"}


def _service_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", type=Path, default=DEFAULT_HOME,
                   help="where the embedded chain, IPFS store and outbox live (default: %(default)s)")
    p.add_argument("--ray-address", help="join this Ray cluster instead of starting one on 127.0.0.1")
    p.add_argument("--chain", dest="chain_url", help="JSON-RPC URL of a chain instead of the embedded anvil")
    p.add_argument("--contract", help="RunLedger address on --chain (recorder key from $TWINLOOP_RECORDER_KEY)")
    p.add_argument("--ipfs", dest="ipfs_url", metavar="URL",
                   help="RPC API URL of a Kubo node (e.g. http://127.0.0.1:5001) instead of the embedded IPFS "
                        "store (default: $TWINLOOP_IPFS_URL); every byte it returns is re-hashed")


def _services(args: argparse.Namespace) -> Services:
    return Services(ServiceOptions(home=args.home, ray_address=args.ray_address,
                                   chain_url=args.chain_url, contract=args.contract, ipfs_url=args.ipfs_url))


def _point(items: list[str]) -> dict[str, str] | None:
    point = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"--point {item!r}: expected NAME=VALUE, e.g. --point 'load=30 W'")
        point[key.strip()] = value.strip()
    return point or None


def _prompter(console: Console) -> Callable[[str], None]:
    def ask(message: str) -> None:
        console.input(f"[bold yellow]operator:[/] {message} [dim](Enter when done)[/] ")
    return ask


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    interactive = sys.stdin.isatty()
    point = _point(args.point)
    sources = load_points(args.scenario)
    if point:
        sources = [select_point(sources, point)]
    # every point is planned before anything starts: a bad file stops here, nothing is recorded
    plans = [Pipeline.plan(src, args.rig, interactive=interactive, dut_version=args.dut_version)
             for src in sources]
    out = Console(stderr=True) if args.json else console
    results, interrupted = [], False
    with _services(args) as services:
        pipeline = Pipeline(services)
        for plan in plans:
            result = _run_one(args, out, pipeline, plan, services.home)
            results.append(result)
            if result["interrupted"]:
                interrupted = True
                break
    if args.json:
        console.print_json(json.dumps({"runs": results}))
    elif len(results) > 1:
        for r in results:
            console.print(f"[{STYLE[r['outcome']]}]{r['outcome'].upper():5}[/] {escape(r['id'])}  {r['run_id']}",
                          soft_wrap=True)
    if interrupted:
        return EXIT_INTERRUPTED
    return max(EXIT[r["outcome"]] for r in results)


def _run_one(args: argparse.Namespace, console: Console, pipeline: Pipeline, plan: Plan,
             home: Path) -> dict[str, Any]:
    """Run, report, commit and write the HTML report of one scenario point."""
    sc, src = plan.source.scenario, plan.source
    quiet = args.quiet
    if not quiet:
        console.print(f"scenario  {escape(src.id)} ({src.path}, sha256 {src.sha256[:12]})")
        console.print(f"rig       {plan.rig.profile.rig} ({plan.clock_kind} clock), "
                      f"DUT {sc.dut.id} {plan.dut_version or sc.dut.version}")
        with console.status("starting Ray (local, 127.0.0.1) and the ledger"):
            pipeline.prepare(plan)
        console.print(f"running   up to {seconds_text(sc.duration())} of scenario time; Ctrl-C stops it "
                      "through the safe state")
    with Progress(TextColumn("running"), BarColumn(), TextColumn("{task.fields[now]}"),
                  TimeElapsedColumn(), console=console, transient=True, disable=quiet) as bar:
        task = bar.add_task("run", total=sc.duration(), now="")
        record = pipeline.run(plan, progress=lambda t, total: bar.update(
            task, completed=t, now=f"{t:.0f}/{total:.0f} s"), prompter=_prompter(console))
    if not quiet:
        run_report(console, record)
    try:
        committed = pipeline.commit(record)
    except LedgerError:
        commit_report(console, record, None)
        raise
    report = write_html(record, home / "reports" / f"{record.run_id}.html",
                        {"cid": committed.cid, "tx": committed.tx_hash})
    try:
        for earlier in pipeline.sync():
            console.print(f"outbox    committed run {earlier.run_id} (waiting since the chain or store was down), "
                          f"bundle {earlier.cid}", highlight=False, markup=False, soft_wrap=True)
    except LedgerError as err:  # this run is committed; an older one stays where it waits
        console.print(f"[yellow]outbox:[/] {escape(str(err))}", soft_wrap=True)
    if quiet:
        console.print(f"{record.outcome.upper():5} {src.id} run {record.run_id} bundle {committed.cid}",
                      highlight=False, markup=False, soft_wrap=True)
    else:
        commit_report(console, record, committed)
        console.print(f"report    {report}", highlight=False, markup=False, soft_wrap=True)
    return {"id": src.id, "scenario": sc.scenario, "point": src.point, "run_id": record.run_id,
            "outcome": record.outcome, "error": record.error, "bundle_cid": committed.cid,
            "tx": committed.tx_hash, "report": str(report),
            "interrupted": any(e.kind == "interrupted" for e in record.events),
            "verdicts": [v.model_dump(mode="json", include={"name", "kind", "outcome", "value", "unit",
                                                             "limit", "marginal", "detail"})
                         for v in record.verdicts]}


def cmd_simulate(args: argparse.Namespace, console: Console) -> int:
    source = load_fleet(args.fleet)  # a bad file stops here: nothing started, nothing recorded
    plan = source.plan
    out = Console(stderr=True) if args.json else console
    quiet = args.quiet or args.json
    with _services(args) as services:
        checkpoints = args.checkpoints or services.home / "fleet-checkpoints" / plan.fleet
        pipeline = Pipeline(services)
        if not quiet:
            out.print(f"fleet     {escape(plan.fleet)} ({source.path}, sha256 {source.sha256[:12]}): "
                      f"{plan.units:,} units, {plan.steps:,} steps of {seconds_text(plan.dt)}", highlight=False)
        with out.status("starting Ray and the ledger", spinner="dots") if not quiet else nullcontext():
            dashboard = pipeline.prepare_fleet()
        if not quiet:
            out.print(f"dashboard {dashboard or 'not running (this Ray has none)'}", highlight=False)
            out.print(f"checkpoints {checkpoints}" + (" (resuming)" if args.resume else ""), highlight=False)
        with Progress(TextColumn("simulating"), BarColumn(), TextColumn("{task.fields[what]}"),
                      TimeElapsedColumn(), console=out, transient=True, disable=quiet) as bar:
            task = bar.add_task("fleet", total=None, what="starting shards")

            def progress(p: FleetProgress) -> None:
                bar.update(task, total=p.calls_total, completed=p.calls_done,
                           what=f"{p.failed:,} failed" + (f", {p.restarts} restart(s)" if p.restarts else ""))

            try:
                record = pipeline.simulate(source, checkpoints, progress, resume=args.resume, shards=args.shards)
            except (TwinloopError, KeyboardInterrupt):
                if any(checkpoints.glob("shard-*.npz")):
                    out.print(f"[yellow]the shards' checkpoints are kept in {escape(str(checkpoints))}; "
                              f"add --resume to go on from them[/]")
                raise
        if not quiet:
            fleet_report(out, record)
        committed = pipeline.commit(record)
        report = write_fleet_html(record, services.home / "reports" / f"{record.run_id}.html",
                                  {"cid": committed.cid, "tx": committed.tx_hash})
        clear_checkpoints(checkpoints)
    if args.json:
        print(json.dumps({"run_id": record.run_id, "bundle_cid": committed.cid, "tx": committed.tx_hash,
                          "report": str(report), "dashboard": dashboard,
                          "outcome": record.model_dump(mode="json", include=OUTCOME_KEYS),
                          "run": record.run.model_dump(mode="json")}))
    elif args.quiet:
        console.print(f"SIMULATED {plan.fleet} run {record.run_id} bundle {committed.cid}", highlight=False,
                      markup=False, soft_wrap=True)
    else:
        console.print(f"run id    {record.run_id}\nbundle    {committed.cid}\ntx        {committed.tx_hash}\n"
                      f"report    {report}", highlight=False, markup=False, soft_wrap=True)
    return 0


def cmd_schema(args: argparse.Namespace, console: Console) -> int:
    print(json.dumps(fleet_schema() if args.fleet else json_schema(), indent=2))
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    committed, home = None, args.home
    if Path(args.run).suffix == ".json" or Path(args.run).is_file():
        data = Path(args.run).read_bytes()
        record = read_bundle(data)
        committed = {"cid": f"{import_file(data)[0]} (of this file, not looked up)", "tx": "not looked up"}
    else:
        with _services(args) as services:
            entry = services.ledger.get(args.run)
            record = read_bundle(services.ipfs.cat(entry.bundle_cid))
            committed = {"cid": entry.bundle_cid, "tx": services.ledger.recorded_tx(args.run) or "not found"}
            home = services.home
    write = write_fleet_html if isinstance(record, FleetRecord) else write_html
    path = write(record, args.output or Path(home) / "reports" / f"{record.run_id}.html", committed)
    console.print(str(path), highlight=False, markup=False, soft_wrap=True)
    return 0


def cmd_emulate(args: argparse.Namespace, console: Console) -> int:
    from twinloop.rigs.profile import load_rig
    from twinloop.rigs.serve import EmulatorHost

    host = EmulatorHost(load_rig(args.rig)).start()
    try:
        if args.json:
            print(json.dumps({"devices": host.describe()}), flush=True)
        else:
            for d in host.describe():
                console.print(f"{d['device']:12} {d['address']}", highlight=False, markup=False, soft_wrap=True)
            console.print("serving on 127.0.0.1 (physics in real time); Ctrl-C stops")
        while True:
            time.sleep(3600)
    finally:
        host.stop()


def cmd_certificate(args: argparse.Namespace, console: Console) -> int:
    from twinloop.rigs.certificates import make_certificate

    cert, key = make_certificate(args.folder, args.name, args.uri, "server" if args.server else "client",
                                 hosts=tuple(args.host) or ("localhost", "127.0.0.1"), days=args.days)
    console.print(f"certificate {cert}\nkey         {key} (mode 0600; keep it out of version control)\n"
                  f"uri         {args.uri}", highlight=False, markup=False, soft_wrap=True)
    return 0


def _gate_points(args: argparse.Namespace, console: Console) -> int:
    """``verify --scenario S [--dut-version V]``: the CI gate's answer for every matrix point of S."""
    sources = load_points(args.scenario)  # a bad file stops here
    keys = [key_from_pem_file(args.public_key)] if args.public_key else []
    worst = 0
    with _services(args) as services:
        for source in sources:
            g = gate(source, services, args.dut_version, args.require_baseline, public_keys=keys,
                     require_attestation=args.require_attestation is not False)
            if g.passed:
                console.print(f"[bold green]VERIFIED[/] {escape(source.id)}: run {g.run_id} "
                              f"(block {g.entry.block_number if g.entry else '?'}, recorder "
                              f"{g.entry.recorder if g.entry else '?'})", soft_wrap=True)
                continue
            worst = max(worst, 2 if g.kind == "ledger-unavailable" else 1)
            console.print(f"[bold red]NOT VERIFIED[/] {escape(source.id)} ({g.kind}): {escape(g.message())}",
                          soft_wrap=True)
    return worst


def cmd_verify(args: argparse.Namespace, console: Console) -> int:
    if args.run_id is None:
        if args.scenario is None:
            raise ConfigError("verify needs a RUN_ID, or --scenario FILE [--dut-version V] to find the runs")
        return _gate_points(args, console)
    args.require_attestation = bool(args.require_attestation)  # for one run: only when asked
    with _services(args) as services:
        key = key_from_pem_file(args.public_key) if args.public_key else None
        if args.batch:
            root, cid = batch_argument(args.batch)
            v = verify_batched_run(args.run_id, services, root=root, manifest_cid=cid, scenario_file=args.scenario,
                                   no_scenario_file=args.no_scenario_file, resimulate=not args.no_resimulate,
                                   signer=key, require_attestation=args.require_attestation)
        else:
            try:
                v = Pipeline(services).verify(args.run_id, args.scenario, no_scenario_file=args.no_scenario_file,
                                              resimulate=not args.no_resimulate, signer=key,
                                              require_attestation=args.require_attestation)
            except RunNotFoundError as err:
                note = batch_notes(services.home).get(args.run_id)
                if note is None or isinstance(err, BlockNotFoundError):  # a missing bundle is not a batched run
                    raise
                console.print(f"run {args.run_id} is not recorded alone; {services.home / BATCH_NOTES} names "
                              f"batch {note['root']} (manifest {note['manifest_cid']}): verifying it as batched",
                              highlight=False, markup=False, soft_wrap=True)
                v = verify_batched_run(args.run_id, services, **noted_batch(note), scenario_file=args.scenario,
                                       no_scenario_file=args.no_scenario_file, resimulate=not args.no_resimulate,
                                       signer=key, require_attestation=args.require_attestation)
        verify_report(console, v)
    return 0 if v.ok else 1


#: Seconds a ``ledger watch --command`` may take for one request before it counts as failed.
FORWARD_COMMAND_TIMEOUT_S = 60.0


def _forward(request: MaintenanceRequest, args: argparse.Namespace) -> list[str]:
    """Send one maintenance request where --webhook / --command say (as JSON); each delivery that failed, said."""
    body = json.dumps(asdict(request))
    failed = []
    if args.webhook:
        try:
            requests.post(args.webhook, data=body, headers={"Content-Type": "application/json"},
                          timeout=10).raise_for_status()
        except requests.RequestException as err:
            failed.append(f"--webhook {args.webhook}: {err}")
    if args.command:
        try:
            done = subprocess.run(args.command, shell=True, input=body, text=True, check=False,
                                  timeout=FORWARD_COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            failed.append(f"--command {args.command!r} did not finish within {FORWARD_COMMAND_TIMEOUT_S:g} s")
        except OSError as err:
            failed.append(f"--command {args.command!r} could not start: {err.strerror or err}")
        else:
            if done.returncode != 0:
                failed.append(f"--command {args.command!r} exited {done.returncode}")
    return failed


def cmd_ledger_watch(args: argparse.Namespace, console: Console) -> int:
    errors = Console(stderr=True, soft_wrap=True)
    undelivered = 0
    with _services(args) as services:
        ledger = services.ledger
        if args.once:
            found: Iterable[MaintenanceRequest] = ledger.maintenance_requests(args.from_block or 0)
        else:
            found = ledger.watch_maintenance(args.from_block, args.poll)
            errors.print(f"watching RunLedger {ledger.address} on {ledger.rpc_url} for maintenance "
                         "requests; Ctrl-C stops", highlight=False)
        for r in found:
            if args.json:
                print(json.dumps(asdict(r)), flush=True)
            else:
                console.print(f"block {r.block_number}  run {r.run_id}  device {r.device}: RUL {r.rul_seconds:,} s "
                              f"below {r.limit_seconds:,} s: {r.reason}  (requested by {r.requester})",
                              highlight=False, markup=False, soft_wrap=True)
            for problem in _forward(r, args):  # one failed delivery never ends the watch
                undelivered += 1
                errors.print(f"[bold red]error:[/] the maintenance request of run {escape(r.run_id)} (block "
                             f"{r.block_number}) was not delivered: {escape(problem)}", highlight=False)
    return 2 if undelivered else 0


def cmd_ledger_sync(args: argparse.Namespace, console: Console) -> int:
    with _services(args) as services:
        pending = sorted(services.outbox.glob("*.json"))
        if not pending:
            console.print(f"outbox {services.outbox} is empty", highlight=False, markup=False, soft_wrap=True)
            return 0
        if args.batch is None:
            for c in Pipeline(services).sync():
                console.print(f"committed run {c.run_id}, bundle {c.cid}, tx {c.tx_hash}", highlight=False,
                              markup=False, soft_wrap=True)
            return 0
        singles, batches = sync_batched(services, args.batch)
        for c in singles:
            console.print(f"run {c.run_id} is already on chain with bundle {c.cid} (tx {c.tx_hash}): done",
                          highlight=False, markup=False, soft_wrap=True)
        for b in batches:
            how = "was already on chain (an earlier sync was cut off)" if b.already else "recorded"
            console.print(f"batch {b.root} of {len(b.runs)} runs {how}: manifest {b.manifest_cid}, tx {b.tx_hash}",
                          highlight=False, markup=False, soft_wrap=True)
            for c in b.runs:
                console.print(f"committed run {c.run_id} in batch {b.root}, bundle {c.cid}", highlight=False,
                              markup=False, soft_wrap=True)
    return 0


def cmd_ledger_role(args: argparse.Namespace, console: Console) -> int:
    with _services(args) as services:
        ledger = services.ledger
        change = ledger.grant_role if args.ledger_command == "grant" else ledger.revoke_role
        tx = change(args.role, args.address)
        console.print(f"{args.ledger_command} {args.role} {args.address} on RunLedger {ledger.address}: tx {tx}",
                      highlight=False, markup=False, soft_wrap=True)
    return 0


def cmd_ledger_baseline(args: argparse.Namespace, console: Console) -> int:
    with _services(args) as services:
        tx = services.ledger.accept_baseline(args.run_id)
        console.print(f"run {args.run_id} accepted as the baseline of its scenario and DUT version: tx {tx}",
                      highlight=False, markup=False, soft_wrap=True)
    return 0


def cmd_ledger_export(args: argparse.Namespace, console: Console) -> int:
    with _services(args) as services:
        try:
            cid = services.ledger.get(args.run_id).bundle_cid  # reading needs no key
        except RunNotFoundError:  # a batched run: its batch's manifest names the bundle
            cid = batched_entry(args.run_id, services, args.batch).bundle_cid
        car = services.ipfs.export_car(cid)
    if str(args.output) == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(car)
        sys.stdout.buffer.flush()
    else:
        args.output.write_bytes(car)
        console.print(f"run {args.run_id}: bundle {cid} written to {args.output} as a CARv1 "
                      f"({len(car):,} bytes; 'ipfs dag import {args.output}' takes it)",
                      highlight=False, markup=False, soft_wrap=True)
    return 0


def cmd_ledger_import(args: argparse.Namespace, console: Console) -> int:
    with _services(args) as services:  # only the IPFS store is used (the home's, or --ipfs URL's): no chain, no Ray
        for root in services.ipfs.import_car(args.car.read_bytes(), str(args.car)):
            console.print(root, highlight=False, markup=False, soft_wrap=True)
    return 0


def _shard_count(text: str) -> int:
    """``--shards``: a whole number in the range a fleet file's ``shards`` takes (argparse exits 2 otherwise)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of shards, got {text!r}") from None
    if not 1 <= n <= MAX_SHARDS:
        raise argparse.ArgumentTypeError(f"{n} is not a shard count from 1 to {MAX_SHARDS}")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twinloop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario (every matrix point), judge it, commit it to the ledger")
    run.add_argument("scenario", type=Path, help="scenario YAML file")
    run.add_argument("--rig", type=Path, help="rig profile YAML (default: emulated devices on 127.0.0.1)")
    run.add_argument("--point", action="append", default=[], metavar="NAME=VALUE",
                     help="run only the matrix point with these parameter values (repeatable)")
    run.add_argument("--dut-version", help="record the run against this DUT version instead of dut.version")
    run.add_argument("--json", action="store_true", help="print one JSON object with every run on stdout")
    run.add_argument("--quiet", action="store_true", help="one line per run, no progress or tables")
    _service_args(run)
    run.set_defaults(func=cmd_run)
    sim = sub.add_parser("simulate", help="simulate a fleet of twins on Ray, commit its summary to the ledger")
    sim.add_argument("fleet", type=Path, help="fleet YAML file")
    sim.add_argument("--shards", type=_shard_count, help=f"shard actors, 1 to {MAX_SHARDS} (default: the file's "
                                                         "'shards', else one per CPU or GPU Ray reports)")
    sim.add_argument("--checkpoints", type=Path,
                     help="the shards' checkpoint folder (default: HOME/fleet-checkpoints/FLEET; removed once "
                          "the summary is committed; shared by the nodes on a cluster)")
    sim.add_argument("--resume", action="store_true", help="go on from the checkpoints of a simulation cut short")
    sim.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    sim.add_argument("--quiet", action="store_true", help="one line, no progress or tables")
    _service_args(sim)
    sim.set_defaults(func=cmd_simulate)
    led = sub.add_parser("ledger", help="the ledger: maintenance events, roles, baselines, the outbox, CAR files")
    led_sub = led.add_subparsers(dest="ledger_command", required=True)
    watch = led_sub.add_parser("watch", help="follow MaintenanceRequested events; print or forward each")
    watch.add_argument("--from-block", type=int, help="start at this block (default: new requests only; "
                                                      "0 replays every past one)")
    watch.add_argument("--once", action="store_true", help="print the requests so far (from --from-block) and exit "
                       "(2 if any could not be delivered)")
    watch.add_argument("--poll", type=float, default=1.0, help="seconds between polls (default: %(default)s)")
    watch.add_argument("--webhook", metavar="URL", help="POST each request as JSON to this URL (a failed delivery "
                       "is printed on stderr and the watch goes on)")
    watch.add_argument("--command", metavar="CMD", help="run CMD (a shell command) with each request as JSON on "
                       "stdin; a non-zero exit is printed on stderr and the watch goes on")
    watch.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    _service_args(watch)
    watch.set_defaults(func=cmd_ledger_watch)
    for verb in ("grant", "revoke"):
        role_p = led_sub.add_parser(verb, help=f"{verb} a role (admin only; the key in $TWINLOOP_RECORDER_KEY)")
        role_p.add_argument("role", choices=("recorder", "reviewer", "admin"))
        role_p.add_argument("address", help="the account (a bench's or a reviewer's address)")
        _service_args(role_p)
        role_p.set_defaults(func=cmd_ledger_role)
    base_p = led_sub.add_parser("accept-baseline", help="accept a passing run as the baseline of its scenario "
                                                        "and DUT version (reviewer only)")
    base_p.add_argument("run_id")
    _service_args(base_p)
    base_p.set_defaults(func=cmd_ledger_baseline)
    exp_p = led_sub.add_parser("export", help="write a recorded run's bundle as a CARv1 file "
                               "(for 'ipfs dag import' on any IPFS node)")
    exp_p.add_argument("run_id")
    exp_p.add_argument("-o", "--output", type=Path, default=Path("-"), metavar="FILE",
                       help="where to write the CAR (default: - , binary on stdout)")
    exp_p.add_argument("--batch", metavar="ROOT|MANIFEST_CID",
                       help="a run recorded in a batch: the batch (default: the one HOME/batches.jsonl notes)")
    _service_args(exp_p)
    exp_p.set_defaults(func=cmd_ledger_export)
    imp_p = led_sub.add_parser("import", help="store a CARv1 file's blocks in the IPFS store (the home's, or "
                               "the Kubo node at --ipfs URL; every block checked against its CID); prints its roots")
    imp_p.add_argument("car", type=Path, metavar="FILE.car")
    _service_args(imp_p)
    imp_p.set_defaults(func=cmd_ledger_import)
    sync_p = led_sub.add_parser("sync", help="commit the runs waiting in the outbox (chain or store was down), "
                                             "each exactly once")
    sync_p.add_argument("--batch", type=int, metavar="N",
                        help="record the runs in batches of up to N, one transaction (a Merkle root) per batch; "
                             "HOME/batches.jsonl notes each run's batch for 'twinloop verify RUN_ID'")
    _service_args(sync_p)
    sync_p.set_defaults(func=cmd_ledger_sync)
    schema = sub.add_parser("schema", help="print the scenario files' JSON Schema (for editors)")
    schema.add_argument("--fleet", action="store_true", help="the fleet files' schema instead")
    schema.set_defaults(func=cmd_schema)
    rep = sub.add_parser("report", help="write the HTML report of a recorded run or fleet")
    rep.add_argument("run", help="a run id (fetched from the ledger) or a bundle JSON file")
    rep.add_argument("-o", "--output", type=Path, help="where to write it (default: HOME/reports/RUN_ID.html)")
    _service_args(rep)
    rep.set_defaults(func=cmd_report)
    emu = sub.add_parser("emulate", help="serve a rig profile's emulators on 127.0.0.1 until Ctrl-C")
    emu.add_argument("rig", type=Path, help="rig profile YAML whose devices are emulators")
    emu.add_argument("--json", action="store_true", help="print the devices' addresses as one JSON line")
    emu.set_defaults(func=cmd_emulate)
    crt = sub.add_parser("certificate", help="make a self-signed OPC UA application certificate and key")
    crt.add_argument("folder", type=Path, help="where to write NAME.pem and NAME-key.pem")
    crt.add_argument("--uri", required=True, help="the application URI (servers match it against the session's)")
    crt.add_argument("--name", default="client", help="common name and file name (default: client)")
    crt.add_argument("--server", action="store_true", help="for a server (default: for a client)")
    crt.add_argument("--host", action="append", default=[], metavar="NAME_OR_IP",
                     help="host names or IPs in the certificate (repeatable; default: localhost, 127.0.0.1)")
    crt.add_argument("--days", type=int, default=365, help="validity in days (default: 365)")
    crt.set_defaults(func=cmd_certificate)
    ver = sub.add_parser("verify", help="check a recorded run or fleet against the chain and its bundle")
    ver.add_argument("run_id", nargs="?", help="the run id printed by 'twinloop run' or 'twinloop simulate'; "
                     "without it, --scenario FILE finds and verifies the runs as the CI gate does")
    ver.add_argument("--dut-version", help="without RUN_ID: the DUT version (default: the scenario's dut.version)")
    ver.add_argument("--require-baseline", action="store_true",
                     help="without RUN_ID: only a run a reviewer accepted as the baseline counts")
    which = ver.add_mutually_exclusive_group()
    which.add_argument("--scenario", type=Path,
                       help="scenario or fleet file to compare (default: the recorded path, here or at the repo root)")
    which.add_argument("--no-scenario-file", action="store_true",
                       help="verify without a scenario file (the recorded text is re-judged as recorded)")
    ver.add_argument("--batch", metavar="ROOT|MANIFEST_CID",
                     help="the run was recorded in a batch: its Merkle root (0x...) or manifest CID (Qm... or b...)")
    ver.add_argument("--public-key", type=Path, metavar="PEM",
                     help="the bench's public key that signed the attestation (default: the recorder's address; "
                          "without RUN_ID: trusted besides the recorders' addresses)")
    ver.add_argument("--require-attestation", action=argparse.BooleanOptionalAction, default=None,
                     help="fail a run whose bundle carries no signed attestation (older bundles have none); "
                          "the default for one RUN_ID is not to, and without RUN_ID, as the CI gate, to")
    ver.add_argument("--no-resimulate", action="store_true",
                     help="for a fleet: do not simulate it again (in this process, on NumPy) to compare outcomes")
    _service_args(ver)
    ver.set_defaults(func=cmd_verify)
    return parser


#: The exit code of ``twinloop verify`` when an error ends it, by the error's class (the first that matches,
#: else 2). A chain or IPFS store that cannot be reached, or a store without the bundle's bytes, leaves
#: the answer open: 2. No record of the run, or evidence that contradicts the chain, is a failed
#: verification: 1.
VERIFY_EXITS: tuple[tuple[type[TwinloopError], int], ...] = (
    (LedgerUnavailableError, 2),
    (BlockNotFoundError, 2),
    (RunNotFoundError, 1),
    (BatchNotFoundError, 1),
    (LedgerTamperedError, 1),
    (LedgerContractMismatchError, 1),
)


def error_exit(command: Callable[..., int], err: TwinloopError) -> int:
    """The exit code for ``err`` ending ``command``: 2, but 1 where it means ``verify`` found a mismatch."""
    if command is not cmd_verify:
        return 2
    return next((code for kind, code in VERIFY_EXITS if isinstance(err, kind)), 2)


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit 0 pass, 1 fail (or not verified), 2 error, 130 interrupted."""
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        with sigterm_interrupts():
            return args.func(args, console)
    except TwinloopError as err:
        code = error_exit(args.func, err)
        label = "NOT VERIFIED" if code == 1 else "error"
        Console(stderr=True, soft_wrap=True).print(f"[bold red]{label}:[/] {escape(str(err))}", highlight=False)
        return code
    except OSError as err:
        where = f" ({err.filename})" if err.filename else ""
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(err.strerror or err))}{escape(where)}",
                                                   highlight=False)
        return 2
    except KeyboardInterrupt:
        Console(stderr=True).print("[bold red]interrupted[/]")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
