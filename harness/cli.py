"""The ``twinloop`` command: run a scenario, verify a recorded run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from twinloop.harness.commit import commit
from twinloop.harness.report import commit_report, run_report, verify_report
from twinloop.harness.runner import execute
from twinloop.harness.scenario import load_scenario
from twinloop.harness.services import DEFAULT_HOME, ServiceOptions, Services
from twinloop.harness.verify import verify
from twinloop.rigs.profile import emulated_rig, load_rig
from twinloop.errors import LedgerError, TwinloopError

EXIT = {"pass": 0, "fail": 1, "error": 2}


def _service_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", type=Path, default=DEFAULT_HOME,
                   help="where the embedded chain, IPFS store and outbox live (default: %(default)s)")
    p.add_argument("--ray-address", help="join this Ray cluster instead of starting one on 127.0.0.1")
    p.add_argument("--chain", dest="chain_url", help="JSON-RPC URL of a chain instead of the embedded anvil")
    p.add_argument("--contract", help="RunLedger address on --chain (recorder key from $TWINLOOP_RECORDER_KEY)")


def _options(args: argparse.Namespace) -> ServiceOptions:
    return ServiceOptions(home=args.home, ray_address=args.ray_address,
                          chain_url=args.chain_url, contract=args.contract)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    source = load_scenario(args.scenario)
    sc = source.scenario
    if args.rig:
        profile, rig_hash = load_rig(args.rig)
    else:
        profile, rig_hash = emulated_rig({name: d.type for name, d in sc.devices.items()})
    console.print(f"scenario  {sc.scenario} ({source.path}, sha256 {source.sha256[:12]})")
    console.print(f"rig       {profile.rig} ({profile.clock_kind} clock), DUT {sc.dut.id} {sc.dut.version}")
    with Services(_options(args)) as services:
        with console.status("starting Ray (local, 127.0.0.1)"):
            services.start_ray()
        with Progress(TextColumn("running"), BarColumn(), TextColumn("{task.fields[now]}"),
                      TimeElapsedColumn(), console=console, transient=True) as bar:
            task = bar.add_task("run", total=sc.duration(), now="")
            result = execute(source, profile, rig_hash,
                             progress=lambda t, total: bar.update(task, completed=t,
                                                                  now=f"{t:.0f}/{total:.0f} s"))
        run_report(console, result)
        try:
            with console.status("committing to IPFS and the chain"):
                committed = commit(result.record, services)
        except LedgerError:
            commit_report(console, result, None)
            raise
        commit_report(console, result, committed)
    return EXIT[result.outcome]


def cmd_verify(args: argparse.Namespace, console: Console) -> int:
    with Services(_options(args)) as services:
        v = verify(args.run_id, services, args.scenario)
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
    ver.add_argument("--scenario", type=Path, help="scenario file to compare (default: the recorded path)")
    _service_args(ver)
    ver.set_defaults(func=cmd_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit 0 pass, 1 fail (or not verified), 2 error."""
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        return args.func(args, console)
    except TwinloopError as err:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {err}", highlight=False)
        return 2
    except KeyboardInterrupt:
        Console(stderr=True).print("[bold red]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
