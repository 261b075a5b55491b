"""A self-contained HTML report of one run: opens offline, plotly.js embedded once.

Signals against their limits, the twins' predictions with uncertainty bands,
health and remaining useful life over time, events and faults on the time
axis, and the verdict table with run id, bundle CID and transaction.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from twinloop.harness.judge import seconds_text
from twinloop.harness.record import RunRecord

COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "error": "#8250df"}
MARKED = {"set": "#57606a", "fault": "#cf222e", "power": "#bf8700", "reconnect": "#bf8700",
          "mark": "#0969da", "transport_error": "#8250df", "overrun": "#8250df",
          "interrupted": "#8250df", "error": "#8250df"}
TIME_UNITS = (("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0))


def _time_unit(end_s: float) -> tuple[str, float]:
    """The unit that shows a run of ``end_s`` seconds with sensible numbers."""
    return next(((u, f) for u, f in TIME_UNITS if end_s >= 3 * f), ("s", 1.0))


def _figure(title: str, unit: str, y_title: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, height=360, margin=dict(l=60, r=20, t=50, b=40),
                      xaxis_title=f"run time ({unit})", yaxis_title=y_title, template="plotly_white",
                      legend=dict(orientation="h", y=-0.2))
    return fig


def _band(fig: go.Figure, x: list[float], low: list[Any], high: list[Any], name: str, colour: str) -> None:
    fig.add_trace(go.Scatter(x=x, y=high, mode="lines", line=dict(width=0), showlegend=False,
                             hoverinfo="skip", connectgaps=True))
    fig.add_trace(go.Scatter(x=x, y=low, mode="lines", line=dict(width=0), fill="tonexty",
                             fillcolor=colour, name=name, connectgaps=True))


def _events(fig: go.Figure, record: RunRecord, scale: float, device: str | None = None) -> None:
    for e in record.events:
        if e.kind in MARKED and (device is None or e.device in (None, device)):
            label = e.note if e.kind == "mark" else e.kind
            fig.add_vline(x=e.t / scale, line=dict(color=MARKED[e.kind], dash="dot", width=1),
                          annotation_text=html.escape(label or e.kind)[:24], annotation_textangle=-90,
                          annotation_font_size=10)


def _signal_figures(record: RunRecord, unit: str, scale: float) -> list[go.Figure]:
    t = [x / scale for x in record.samples.t]
    figures = []
    by_signal: dict[str, list[Any]] = {}
    for v in record.verdicts:
        if v.signal and v.signal in record.samples.columns:
            by_signal.setdefault(v.signal, []).append(v)
    for signal, verdicts in by_signal.items():
        signal_unit = record.rig.units.get(signal, verdicts[0].unit)
        fig = _figure(html.escape(signal), unit, html.escape(signal_unit))
        fig.add_trace(go.Scatter(x=t, y=record.samples.columns[signal], mode="lines", name="measured",
                                 line=dict(color="#0969da")))
        for v in verdicts:
            for key, dash, colour in (("max", "solid", "#cf222e"), ("min", "solid", "#cf222e"),
                                      ("marginal_max", "dash", "#bf8700"), ("marginal_min", "dash", "#bf8700")):
                value = getattr(v, key)
                if value is not None:
                    fig.add_hline(y=value, line=dict(color=colour, dash=dash, width=1),
                                  annotation_text=html.escape(f"{v.name} {key.replace('_', ' ')}"),
                                  annotation_font_size=10)
            if v.window is not None and v.window[0] is not None and v.window[1] is not None:
                fig.add_vrect(x0=v.window[0] / scale, x1=v.window[1] / scale, fillcolor="#0969da",
                              opacity=0.06, line_width=0)
        _events(fig, record, scale, signal.partition(".")[0])
        figures.append(fig)
    return figures


def _twin_figures(record: RunRecord, unit: str, scale: float) -> list[go.Figure]:
    figures = []
    for device, twin in record.twins.items():
        h = twin.history
        t = [x / scale for x in h.get("t", [])]
        for name in sorted(k.removeprefix("predicted_") for k in h if k.startswith("predicted_")):
            measured = record.samples.columns.get(f"{device}.{name}")
            fig = _figure(html.escape(f"{device}: twin prediction of {name}"), unit,
                          html.escape(record.rig.units.get(f"{device}.{name}", "")))
            mean, std = h.get(name, []), h.get(f"{name}_std", [])
            if std:
                _band(fig, t, [m - 2 * s if m is not None and s is not None else None for m, s in zip(mean, std)],
                      [m + 2 * s if m is not None and s is not None else None for m, s in zip(mean, std)],
                      "twin ±2σ", "rgba(130,80,223,0.2)")
            fig.add_trace(go.Scatter(x=t, y=h[f"predicted_{name}"], mode="lines", name="twin, one step ahead",
                                     line=dict(color="#8250df")))
            if measured is not None:
                fig.add_trace(go.Scatter(x=[x / scale for x in record.samples.t], y=measured, mode="markers",
                                         marker=dict(size=3, color="#0969da"), name="measured"))
            _events(fig, record, scale, device)
            figures.append(fig)
        if "health" in h:
            fig = _figure(html.escape(f"{device}: health"), unit, "health (1 new, 0 failed)")
            std = h.get("health_std", [])
            if std:
                _band(fig, t, [m - 2 * s if m is not None and s is not None else None for m, s in zip(h["health"], std)],
                      [m + 2 * s if m is not None and s is not None else None for m, s in zip(h["health"], std)],
                      "±2σ", "rgba(26,127,55,0.2)")
            fig.add_trace(go.Scatter(x=t, y=h["health"], mode="lines", name="health", line=dict(color="#1a7f37")))
            fig.add_hline(y=0.0, line=dict(color="#cf222e", width=1), annotation_text="failure threshold")
            _events(fig, record, scale, device)
            figures.append(fig)
        if any(v is not None for v in h.get("rul_p50_s", [])):
            span = max(v for v in h["rul_p95_s"] + h["rul_p50_s"] if v is not None)
            r_unit, r_scale = _time_unit(span)
            conv = lambda col: [None if v is None else v / r_scale for v in h.get(col, [])]  # noqa: E731
            fig = _figure(html.escape(f"{device}: remaining useful life"), unit, f"RUL ({r_unit})")
            _band(fig, t, conv("rul_p05_s"), conv("rul_p95_s"), "5-95 %", "rgba(191,135,0,0.2)")
            fig.add_trace(go.Scatter(x=t, y=conv("rul_p50_s"), mode="lines+markers", name="median",
                                     line=dict(color="#bf8700"), marker=dict(size=3), connectgaps=True))
            _events(fig, record, scale, device)
            figures.append(fig)
    return figures


def _table(head: list[str], rows: list[list[str]]) -> str:
    cells = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def render_html(record: RunRecord, committed: dict[str, str] | None = None) -> str:
    """The whole report as one HTML document (no network needed to open it)."""
    e = html.escape
    end = record.samples.t[-1] if record.samples.t else 0.0
    unit, scale = _time_unit(end)
    figures = _signal_figures(record, unit, scale) + _twin_figures(record, unit, scale)
    plots = "".join(f'<div class="plot">{f.to_html(full_html=False, include_plotlyjs=False)}</div>'
                    for f in figures)
    outcome = record.outcome
    marginal = any(v.marginal for v in record.verdicts)
    verdicts = _table(["expectation", "kind", "outcome", "value", "limit", "detail"], [
        [e(v.name), e(v.kind), f'<b style="color:{COLOURS[v.outcome]}">{v.outcome}</b>'
         + (" (marginal)" if v.marginal else ""), "-" if v.value is None else seconds_text(v.value) if v.unit == "s" else f"{v.value:.4g} {e(v.unit)}",
         e(f"{v.limit} {v.unit}" if v.kind in ("bounds", "tolerance") else v.limit), e(v.detail)]
        for v in record.verdicts])
    events = _table(["t", "kind", "device", "detail"], [
        [seconds_text(ev.t), e(ev.kind), e(ev.device or ""), e(" ".join(p for p in (ev.note, ev.message) if p))]
        for ev in record.events if ev.kind not in ("wait", "twin_estimate")])
    facts = [("scenario", f"{record.scenario.name} ({record.scenario.path})"),
             ("matrix point", ", ".join(f"{k}={v}" for k, v in (record.scenario.point or {}).items()) or "-"),
             ("scenario sha256", record.scenario.sha256), ("DUT", f"{record.dut.id} {record.dut.version}"),
             ("rig", f"{record.rig.name} ({record.rig.clock} clock)"), ("run id", record.run_id),
             ("started", record.started_at), ("finished", record.finished_at),
             ("bundle CID", (committed or {}).get("cid", "not committed")),
             ("transaction", (committed or {}).get("tx", "not committed"))]
    header = _table(["", ""], [[e(k), f"<code>{e(str(v))}</code>"] for k, v in facts])
    error = f'<p class="error">error: {e(record.error)}</p>' if record.error else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{e(record.scenario.name)}: {outcome}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #1f2328; }}
.verdict {{ font-size: 2em; font-weight: bold; color: {COLOURS[outcome]}; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #d0d7de; padding: 4px 8px;
text-align: left; vertical-align: top; }} th {{ background: #f6f8fa; }}
.error {{ color: {COLOURS['error']}; font-weight: bold; }} .plot {{ margin: 1em 0; }}
</style>
<script>{get_plotlyjs()}</script>
</head><body>
<h1>{e(record.scenario.name)}</h1>
<p class="verdict">{outcome.upper()}{" (marginal)" if marginal and outcome == "pass" else ""}</p>
{error}
{header}
<h2>Expectations</h2>
{verdicts}
<h2>Signals and twins</h2>
{plots or "<p>no samples</p>"}
<h2>Events</h2>
{events}
</body></html>
"""


def write_html(record: RunRecord, path: Path, committed: dict[str, str] | None = None) -> Path:
    """Write the report to ``path`` (folders made as needed) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(record, committed), encoding="utf-8")
    return path
