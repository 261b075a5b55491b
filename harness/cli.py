"""The ``twinloop`` command: run a scenario, verify a recorded run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from twinloop.errors import LedgerError, TwinloopError
from twinloop.harness.pipeline import Pipeline
from twinloop.harness.report import commit_report, run_report, verify_report
from twinloop.harness.runner import sigterm_interrupts
from twinloop.harness.services import DEFAULT_HOME, ServiceOptions, Services

EXIT = {"pass": 0, "fail": 1, "error": 2}
EXIT_INTERRUPTED = 130


def _service_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", type=Path, default=DEFAULT_HOME,
                   help="where the embedded chain, IPFS store and outbox live (default: %(default)s)")
    p.add_argument("--ray-address", help="join this Ray cluster instead of starting one on 127.0.0.1")
    p.add_argument("--chain", dest="chain_url", help="JSON-RPC URL of a chain instead of the embedded anvil")
    p.add_argument("--contract", help="RunLedger address on --chain (recorder key from $TWINLOOP_RECORDER_KEY)")


def _services(args: argparse.Namespace) -> Services:
    return Services(ServiceOptions(home=args.home, ray_address=args.ray_address,
                                   chain_url=args.chain_url, contract=args.contract))


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    plan = Pipeline.plan(args.scenario, args.rig)  # a bad file stops here: nothing starts
    sc, src = plan.source.scenario, plan.source
    console.print(f"scenario  {sc.scenario} ({src.path}, sha256 {src.sha256[:12]})")
    console.print(f"rig       {plan.rig.profile.rig} ({plan.clock_kind} clock), DUT {sc.dut.id} {sc.dut.version}")
    with _services(args) as services:
        pipeline = Pipeline(services)
        with console.status("starting Ray (local, 127.0.0.1) and the ledger"):
            pipeline.prepare(plan)
        console.print(f"running   {sc.duration():g} s of scenario time; Ctrl-C stops it through the safe state")
        with Progress(TextColumn("running"), BarColumn(), TextColumn("{task.fields[now]}"),
                      TimeElapsedColumn(), console=console, transient=True) as bar:
            task = bar.add_task("run", total=sc.duration(), now="")
            record = pipeline.run(plan, progress=lambda t, total: bar.update(
                task, completed=t, now=f"{t:.0f}/{total:.0f} s"))
        run_report(console, record)
        try:
            with console.status("committing to IPFS and the chain"):
                committed = pipeline.commit(record)
        except LedgerError:
            commit_report(console, record, None)
            raise
        commit_report(console, record, committed)
    if any(e.kind == "interrupted" for e in record.events):
        return EXIT_INTERRUPTED
    return EXIT[record.outcome]


def cmd_verify(args: argparse.Namespace, console: Console) -> int:
    with _services(args) as services:
        v = Pipeline(services).verify(args.run_id, args.scenario, no_scenario_file=args.no_scenario_file)
        verify_report(console, v)
    return 0 if v.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twinloop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario, judge it, commit it to the ledger")
    run.add_argument("scenario", type=Path, help="scenario YAML file")
    run.add_argument("--rig", type=Path, help="rig profile YAML (default: emulated devices on 127.0.0.1)")
    _service_args(run)
    run.set_defaults(func=cmd_run)
    ver = sub.add_parser("verify", help="check a recorded run against the chain and its bundle")
    ver.add_argument("run_id", help="the run id printed by 'twinloop run'")
    which = ver.add_mutually_exclusive_group()
    which.add_argument("--scenario", type=Path,
                       help="scenario file to compare (default: the recorded path, here or at the repo root)")
    which.add_argument("--no-scenario-file", action="store_true",
                       help="verify without a scenario file (the recorded text is re-judged as recorded)")
    _service_args(ver)
    ver.set_defaults(func=cmd_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit 0 pass, 1 fail (or not verified), 2 error, 130 interrupted."""
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        with sigterm_interrupts():
            return args.func(args, console)
    except TwinloopError as err:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {err}", highlight=False)
        return 2
    except OSError as err:
        where = f" ({err.filename})" if err.filename else ""
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {err.strerror or err}{where}",
                                                   highlight=False)
        return 2
    except KeyboardInterrupt:
        Console(stderr=True).print("[bold red]interrupted[/]")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
