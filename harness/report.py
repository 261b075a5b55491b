"""What a person reads after a run or a verification (rich tables on the terminal)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from twinloop.harness.commit import Committed
from twinloop.harness.judge import seconds_text
from twinloop.harness.record import RunRecord
from twinloop.harness.verify import Verification

STYLE = {"pass": "bold green", "fail": "bold red", "error": "bold magenta",
         "ok": "green", "failed": "bold red", "skipped": "yellow"}
NOTABLE = ("fault", "until", "power", "reconnect", "prompt", "mark", "retry", "transport_error", "overrun",
           "safe_state", "twin_error", "twin_restarted", "interrupted", "error", "twin_anomaly", "twin_setpoint",
           "derate", "maintenance_request")


def duration(seconds: float | None) -> str:
    """A remaining-life figure for people; ``None`` (not finite, or beyond the horizon) says so."""
    if seconds is None:
        return "beyond horizon"
    for unit, size in (("years", 3.156e7), ("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _number(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def run_report(console: Console, record: RunRecord) -> None:
    """Expectations, twin estimates, notable events and the outcome of one run."""
    table = Table(title="Expectations", title_justify="left")
    for col in ("name", "worst value", "limit", "outcome"):
        table.add_column(col)
    for v in record.verdicts:
        value = ("-" if v.value is None else seconds_text(v.value) if v.unit == "s"
                 else f"{v.value:.2f} {v.unit}")
        outcome = f"[{STYLE[v.outcome]}]{v.outcome}[/]" + (" [yellow](marginal)[/]" if v.marginal else "")
        if v.invalid:
            outcome += f" [yellow]({v.invalid} non-finite)[/]"
        limit = f"{v.limit} {v.unit}" if v.kind in ("bounds", "tolerance") else v.limit
        table.add_row(escape(v.name), escape(value), escape(limit), outcome)
    console.print(table)
    if record.twins:
        twins = Table(title="Twins", title_justify="left")
        for col in ("device", "model", "health", "damage", "RUL (p50, 5-95 %)"):
            twins.add_column(col)
        for dev, t in record.twins.items():
            f = t.final
            rul = (f"{duration(f.get('rul_p50_s'))} ({duration(f.get('rul_p05_s'))} - "
                   f"{duration(f.get('rul_p95_s'))})") if "rul_p50_s" in f else "-"
            twins.add_row(dev, t.model, f"{_number(f.get('health'))} ± {_number(f.get('health_std'))}",
                          _number(f.get("damage"), ".4f"), rul)
        console.print(twins)
    notable = [e for e in record.events if e.kind in NOTABLE]
    if notable:
        events = Table(title="Events", title_justify="left")
        for col in ("t", "kind", "device", "detail"):
            events.add_column(col)
        for e in notable:
            detail = e.message or e.note
            if e.kind == "safe_state" and e.data.get("values"):
                detail = f"{e.note}: " + ", ".join(f"{k}={v:g}" for k, v in e.data["values"].items())
            events.add_row(seconds_text(e.t), e.kind, escape(e.device or ""), escape(detail))
        console.print(events)
    if record.error:
        console.print(f"[bold magenta]error:[/] {escape(record.error)}")


def commit_report(console: Console, record: RunRecord, committed: Committed | None) -> None:
    """The four lines a bench engineer copies into a ticket."""
    console.print(f"verdict   [{STYLE[record.outcome]}]{record.outcome.upper()}[/]")
    console.print(f"run id    {record.run_id}")
    if committed:
        console.print(f"bundle    {committed.cid}")
        console.print(f"tx        {committed.tx_hash}")


def verify_report(console: Console, v: Verification) -> None:
    """One row per verification check, then the overall answer."""
    table = Table(title=f"Verification of run {v.run_id}", title_justify="left")
    for col in ("check", "status", "detail"):
        table.add_column(col)
    for c in v.checks:
        table.add_row(c.name, f"[{STYLE[c.status]}]{c.status}[/]", escape(c.detail))
    console.print(table)
    if v.entry:
        console.print(f"chain verdict {v.entry.verdict}, bundle {v.entry.bundle_cid}, "
                      f"recorder {v.entry.recorder}")
    console.print("[bold green]VERIFIED[/]" if v.ok else "[bold red]NOT VERIFIED[/]")
