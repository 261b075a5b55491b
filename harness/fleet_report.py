"""What a person reads after a fleet simulation: a terminal table and an offline HTML report.

Per group: how many units failed within the horizon, the failure-time
distribution (quantiles over every unit, so a quantile past the horizon shows
as such), failures over time with the cumulative fraction failed, and the
survivors' health and remaining useful life at the horizon.
"""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from twinloop.harness.fleet_record import FleetRecord, GroupOutcome
from twinloop.harness.html_report import COLOURS, facts_table, figures_html, page, table, time_unit
from twinloop.harness.report import duration

esc = html.escape
GROUP_COLOURS = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#57606a")


def _when(seconds: float | None, horizon: float) -> str:
    return f"> {duration(horizon)}" if seconds is None else duration(seconds)


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.3g} %"


def _health(g: GroupOutcome) -> str:
    h = g.survivor_health
    return "-" if h.get("p50") is None else f"{h['p50']:.3f} ({h['p05']:.3f} - {h['p95']:.3f})"


def _rul(g: GroupOutcome) -> str:
    r = g.survivor_rul_s
    return "-" if not g.survivors else " / ".join(duration(r.get(k)) for k in ("p05", "p50", "p95"))


def fleet_report(console: Console, record: FleetRecord) -> None:
    """One row per group, then the run's notes and events."""
    t = Table(title=f"Fleet {record.fleet.name}: {record.units:,} units over {duration(record.horizon_s)}",
              title_justify="left")
    for col in ("group", "units", "failed", "failure time p05", "p50", "p95", "survivors' RUL p50"):
        t.add_column(col, justify="left" if col == "group" else "right")
    for g in record.groups:
        t.add_row(escape(g.name), f"{g.units:,}", f"{g.failed:,} ({_percent(g.fraction_failed)})",
                  *(_when(g.failure_time_s.get(k), record.horizon_s) for k in ("p05", "p50", "p95")),
                  duration(g.survivor_rul_s.get("p50")) if g.survivors else "-")
    console.print(t)
    r = record.run
    console.print(f"ran       {r.shards} shard(s) on {r.array} ({r.ray}), {r.twin_steps:,} twin-steps in "
                  f"{r.wall_s:.1f} s ({r.twin_steps_per_s:,.0f} twin-steps/s while stepping)", highlight=False)
    for line in (*r.notes, *r.events):
        console.print(f"[yellow]note:[/] {escape(line)}")


def _failure_figure(record: FleetRecord) -> go.Figure:
    unit, scale = time_unit(record.horizon_s)
    fig = go.Figure()
    fig.update_layout(title="Failures over time", height=420, template="plotly_white",
                      margin=dict(l=70, r=70, t=50, b=40), legend=dict(orientation="h", y=-0.18),
                      xaxis_title=f"simulated time ({unit})", yaxis_title="units failed per bin",
                      yaxis2=dict(title="fraction failed (cumulative)", overlaying="y", side="right",
                                  rangemode="tozero", tickformat=".1%"), barmode="group")
    fig.update_xaxes(range=[0, record.horizon_s / scale])
    for i, g in enumerate(record.groups):
        colour = GROUP_COLOURS[i % len(GROUP_COLOURS)]
        width = (g.bin_width_s or 0.0) / scale
        mids = [(k + 0.5) * width for k in range(len(g.failures_per_bin))]
        ends = [(k + 1) * width for k in range(len(g.failures_per_bin))]
        fig.add_trace(go.Bar(x=mids, y=g.failures_per_bin, width=width, name=esc(f"{g.name}: failed per bin"),
                             marker_color=colour, opacity=0.45))
        total, cumulative = 0, []
        for n in g.failures_per_bin:
            total += n
            cumulative.append(total / g.units)
        fig.add_trace(go.Scatter(x=[0.0, *ends], y=[0.0, *cumulative], yaxis="y2", mode="lines",
                                 line=dict(color=colour, width=2), name=esc(f"{g.name}: fraction failed")))
    return fig


def render_fleet_html(record: FleetRecord, committed: dict[str, str] | None = None) -> str:
    """The fleet's report as one offline HTML document."""
    r = record.run
    facts = [("fleet file", f"{record.fleet.name} ({record.fleet.path})"), ("fleet sha256", record.fleet.sha256),
             ("seed", record.seed), ("horizon", f"{duration(record.horizon_s)} in {record.steps:,} steps of "
                                               f"{duration(record.dt_s)}"),
             ("units", f"{record.units:,}"), ("run id", record.run_id),
             ("started", record.started_at), ("finished", record.finished_at),
             ("ran on", f"{r.shards} shard(s), {r.array}, Ray {r.ray}"),
             ("speed", f"{r.twin_steps:,} twin-steps, {r.wall_s:.1f} s wall, "
                       f"{r.twin_steps_per_s:,.0f} twin-steps/s while stepping, {r.restarts} restart(s)"),
             ("bundle CID", (committed or {}).get("cid") or "not committed"),
             ("transaction", (committed or {}).get("tx") or "not committed")]
    rows = [[esc(g.name), esc(g.model), f"{g.units:,}", f"{g.failed:,}", _percent(g.fraction_failed),
             *(esc(_when(g.failure_time_s.get(k), record.horizon_s)) for k in ("p05", "p50", "p95")),
             esc(_when(g.mean_failure_time_s, record.horizon_s)) if g.failed else "-",
             f"{g.survivors:,}", esc(_health(g)), esc(_rul(g))] for g in record.groups]
    groups = table(["group", "model", "units", "failed", "fraction", "failure time p05", "p50", "p95",
                    "mean (of failed)", "survivors", "survivors' health p50 (p05 - p95)",
                    "survivors' RUL p05 / p50 / p95"], rows)
    notes = "".join(f"<li>{esc(n)}</li>" for n in (*r.notes, *r.events))
    body = f"""<h1>Fleet {esc(record.fleet.name)}</h1>
<p><span class="outcome">SIMULATED</span><span class="summary">{record.units:,} units,
{sum(g.failed for g in record.groups):,} failed within {esc(duration(record.horizon_s))}</span></p>
{facts_table(facts)}
<h2>Groups</h2>
{groups}
<p class="summary">Quantiles are over every unit of the group; "beyond" means fewer units failed within the
horizon than the quantile needs. Survivors' RUL extrapolates each unit's health decline over the last
checkpoint interval linearly: cheap, and optimistic for wear that accelerates.</p>
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
<h2>Failures over time</h2>
{figures_html([_failure_figure(record)])}"""
    return page(f"fleet {record.fleet.name} {record.run_id}", COLOURS["pass"], body)


def write_fleet_html(record: FleetRecord, path: Path, committed: dict[str, str] | None = None) -> Path:
    """Write the fleet report to ``path`` (folders made as needed) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_fleet_html(record, committed), encoding="utf-8")
    return path
