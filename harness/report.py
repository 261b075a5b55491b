"""What a person reads after a run or a verification (rich tables on the terminal)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from twinloop.harness.commit import Committed
from twinloop.harness.runner import RunResult
from twinloop.harness.verify import Verification

STYLE = {"pass": "bold green", "fail": "bold red", "error": "bold magenta",
         "ok": "green", "failed": "bold red", "skipped": "yellow"}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "beyond horizon"
    for unit, size in (("years", 3.156e7), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def run_report(console: Console, result: RunResult) -> None:
    """Expectations, twin estimates and the outcome of one run."""
    table = Table(title="Expectations", title_justify="left")
    for col in ("name", "worst value", "limit", "outcome"):
        table.add_column(col)
    for v in result.verdicts:
        value = "-" if v.value is None else f"{v.value:.2f} {v.unit}"
        outcome = f"[{STYLE[v.outcome]}]{v.outcome}[/]" + (" [yellow](marginal)[/]" if v.marginal else "")
        table.add_row(v.name, value, f"{v.limit} {v.unit}", outcome)
    console.print(table)
    if result.twins:
        twins = Table(title="Twins", title_justify="left")
        for col in ("device", "model", "health", "damage", "RUL (p50, 5-95 %)"):
            twins.add_column(col)
        for dev, t in result.twins.items():
            f = t["final"]
            rul = (f"{_duration(f.get('rul_p50_s'))} ({_duration(f.get('rul_p05_s'))} - "
                   f"{_duration(f.get('rul_p95_s'))})") if "rul_p50_s" in f else "-"
            twins.add_row(dev, t["model"], f"{f.get('health', float('nan')):.3f} ± {f.get('health_std', 0):.3f}",
                          f"{f.get('damage', float('nan')):.4f}", rul)
        console.print(twins)
    if result.error:
        console.print(f"[bold magenta]error:[/] {result.error}")


def commit_report(console: Console, result: RunResult, committed: Committed | None) -> None:
    """The four lines a bench engineer copies into a ticket."""
    console.print(f"verdict   [{STYLE[result.outcome]}]{result.outcome.upper()}[/]")
    console.print(f"run id    {result.run_id}")
    if committed:
        console.print(f"bundle    {committed.cid}")
        console.print(f"tx        {committed.tx_hash}")


def verify_report(console: Console, v: Verification) -> None:
    """One row per verification check, then the overall answer."""
    table = Table(title=f"Verification of run {v.run_id}", title_justify="left")
    for col in ("check", "status", "detail"):
        table.add_column(col)
    for c in v.checks:
        table.add_row(c.name, f"[{STYLE[c.status]}]{c.status}[/]", c.detail)
    console.print(table)
    if v.entry:
        console.print(f"chain verdict {v.entry.verdict}, bundle {v.entry.bundle_cid}, "
                      f"recorder {v.entry.recorder}")
    console.print("[bold green]VERIFIED[/]" if v.ok else "[bold red]NOT VERIFIED[/]")
