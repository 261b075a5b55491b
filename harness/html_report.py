"""A self-contained HTML report of one run: opens offline, plotly.js embedded once.

Signals against their limits, the twins' predictions with uncertainty bands,
health and remaining useful life over time, events and faults on the time
axis, and the verdict table with run id, bundle CID and transaction.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from twinloop.harness.judge import seconds_text
from twinloop.harness.record import RunRecord, VerdictRecord

COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "error": "#8250df", "marginal": "#9a6700"}
MARKED = {"set": "#57606a", "fault": "#cf222e", "power": "#bf8700", "reconnect": "#bf8700",
          "mark": "#0969da", "transport_error": "#8250df", "overrun": "#8250df",
          "interrupted": "#8250df", "error": "#8250df", "safe_state": "#57606a",
          "twin_setpoint": "#1a7f37", "derate": "#bf8700", "maintenance_request": "#cf222e"}
TIME_UNITS = (("years", 3.156e7), ("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0))
WINDOWS = ("#0969da", "#8250df", "#1a7f37", "#bf8700")  # judged windows, told apart where they overlap
CONFIG = {"displaylogo": False, "responsive": True}

Column = Sequence[float | None]
esc = html.escape


def time_unit(end_s: float) -> tuple[str, float]:
    """The unit that shows a span of ``end_s`` seconds with sensible numbers."""
    return next(((u, f) for u, f in TIME_UNITS if end_s >= 3 * f), ("s", 1.0))


def _r(column: Column, scale: float = 1.0) -> list[float | None]:
    """Values divided by ``scale`` to 6 significant digits (plenty to plot, a third of the bytes)."""
    return [None if v is None else float(f"{v / scale:.6g}") for v in column]


def _figure(title: str, x_unit: str, x_end: float, y_title: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=esc(title), height=380, margin=dict(l=70, r=30, t=50, b=40),
                      template="plotly_white", showlegend=True,
                      legend=dict(orientation="h", y=-0.18), xaxis_title=f"run time ({x_unit})",
                      yaxis_title=esc(y_title))
    if x_end > 0:  # every plot shares the run's time axis, so they line up on the page
        fig.update_xaxes(range=[0, x_end])
    return fig


def _band(fig: go.Figure, x: Column, low: Column, high: Column, name: str, colour: str) -> None:
    """Shade between ``low`` and ``high``, one closed shape per stretch where both are known."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    stretch: list[tuple[float, float, float]] = []
    for xi, lo, hi in [*zip(x, low, high), (None, None, None)]:
        if xi is not None and lo is not None and hi is not None:
            stretch.append((xi, lo, hi))
        elif stretch:
            xs += [p[0] for p in stretch] + [p[0] for p in reversed(stretch)] + [None]
            ys += [p[2] for p in stretch] + [p[1] for p in reversed(stretch)] + [None]
            stretch = []
    if xs:
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", fill="toself", fillcolor=colour,
                                 line=dict(width=0), name=name, hoverinfo="skip"))


def _sigma(mean: Column, std: Column, k: float) -> list[float | None]:
    return [m + k * s if m is not None and s is not None else None for m, s in zip(mean, std)]


def _events(fig: go.Figure, record: RunRecord, scale: float, end: float, device: str | None = None) -> None:
    """Faults, sets, marks and the like as vertical lines; instants closer than 1 % of the run share a label."""
    marks = [(ev.t / scale, (ev.note if ev.kind == "mark" else "") or ev.kind, MARKED[ev.kind])
             for ev in sorted(record.events, key=lambda ev: ev.t)
             if ev.kind in MARKED and (device is None or ev.device in (None, device))]
    clusters: list[list[tuple[float, str, str]]] = []
    for mark in marks:
        if clusters and mark[0] - clusters[-1][0][0] <= 0.01 * end / scale:
            clusters[-1].append(mark)
        else:
            clusters.append([mark])
    for cluster in clusters:
        label = esc(", ".join(dict.fromkeys(text[:24] for _, text, _ in cluster)))
        colours: dict[float, str] = {}
        for x, _, colour in cluster:
            if colours.get(x) != MARKED["fault"]:  # a fault's colour wins at its instant
                colours[x] = colour
        for i, (x, colour) in enumerate(colours.items()):
            text = dict(annotation_text=label, annotation_textangle=-90, annotation_font_size=10,
                        annotation_font_color=colour, annotation_bgcolor="rgba(255,255,255,0.8)") if i == 0 else {}
            fig.add_vline(x=x, line=dict(color=colour, dash="dot", width=1), **text)


def _limits(fig: go.Figure, v: VerdictRecord, scale: float, window_colour: str) -> None:
    """A verdict's limits as lines, its marginal zone shaded, its judged window shaded."""
    for key in ("max", "min"):
        limit, marginal = getattr(v, key), getattr(v, f"marginal_{key}")
        if limit is not None:
            fig.add_hline(y=limit, line=dict(color=COLOURS["fail"], width=1.5), name=esc(f"{v.name}: {key}"),
                          showlegend=True)
        if marginal is not None:
            fig.add_hline(y=marginal, line=dict(color=COLOURS["marginal"], dash="dash", width=1),
                          name=esc(f"{v.name}: marginal {key}"), showlegend=limit is None)
            if limit is not None:
                fig.add_hrect(y0=marginal, y1=limit, fillcolor="#d4a72c", opacity=0.15, line_width=0,
                              name=esc(f"{v.name}: marginal"), showlegend=True)
    if v.window is not None and None not in v.window:
        fig.add_vrect(x0=v.window[0] / scale, x1=v.window[1] / scale, fillcolor=window_colour, opacity=0.07,
                      line_width=0, name=esc(f"{v.name}: judged window"), showlegend=True)


def _signal_figures(record: RunRecord, unit: str, scale: float, end: float) -> list[go.Figure]:
    t, columns = _r(record.samples.t, scale), record.samples.columns
    by_signal: dict[str, list[VerdictRecord]] = {}
    for v in record.verdicts:
        if v.signal and v.signal in columns:
            by_signal.setdefault(v.signal, []).append(v)
    figures = []
    for signal, verdicts in by_signal.items():
        fig = _figure(signal, unit, end / scale, record.rig.units.get(signal, verdicts[0].unit))
        fig.add_trace(go.Scatter(x=t, y=_r(columns[signal]), mode="lines", name="measured",
                                 line=dict(color="#0969da")))
        if all(x is None for x in columns[signal]):
            fig.add_annotation(text="no finite samples", showarrow=False, xref="paper", yref="paper",
                               x=0.5, y=0.5)
        for i, v in enumerate(verdicts):
            _limits(fig, v, scale, WINDOWS[i % len(WINDOWS)])
        shown = [x for x in columns[signal] if x is not None] + [
            x for v in verdicts for x in (v.min, v.max, v.marginal_min, v.marginal_max) if x is not None]
        if shown:  # room above and below, so a limit line is never mistaken for the frame
            lo, hi = min(shown), max(shown)
            pad = 0.06 * ((hi - lo) or abs(hi) or 1.0)
            fig.update_yaxes(range=[lo - pad, hi + pad])
        _events(fig, record, scale, end, signal.partition(".")[0])
        figures.append(fig)
    if not figures and t and columns:  # nothing judged (an error run, say): show what was measured
        fig = _figure("samples", unit, end / scale, "value (rig units)")
        for signal, column in columns.items():
            fig.add_trace(go.Scatter(x=t, y=_r(column), mode="lines", name=esc(signal)))
        _events(fig, record, scale, end)
        figures.append(fig)
    return figures


def _twin_figures(record: RunRecord, unit: str, scale: float, end: float) -> list[go.Figure]:
    figures = []
    for device, twin in record.twins.items():
        h = twin.history
        t = _r(h.get("t", []), scale)
        # outputs: what the twin predicts one step ahead, or (format 1) estimates of a measured signal
        outputs = sorted({k.removeprefix("predicted_") for k in h if k.startswith("predicted_")}
                         | {k for k in h if f"{k}_std" in h and f"{device}.{k}" in record.samples.columns})
        for name in outputs:
            signal = f"{device}.{name}"
            fig = _figure(f"{device}: twin prediction of {name}", unit, end / scale,
                          record.rig.units.get(signal, ""))
            mean, std = h.get(name, []), h.get(f"{name}_std", [])
            _band(fig, t, _r(_sigma(mean, std, -2)), _r(_sigma(mean, std, 2)), "twin ±2σ",
                  "rgba(130,80,223,0.25)")
            if signal in record.samples.columns:
                fig.add_trace(go.Scatter(x=_r(record.samples.t, scale), y=_r(record.samples.columns[signal]),
                                         mode="markers", marker=dict(size=4, color="#0969da", opacity=0.45),
                                         name="measured"))
            predicted = h.get(f"predicted_{name}")
            fig.add_trace(go.Scatter(x=t, y=_r(predicted or mean), mode="lines",
                                     name="twin, one step ahead" if predicted else "twin estimate",
                                     line=dict(color="#8250df", width=1.5)))
            _events(fig, record, scale, end, device)
            figures.append(fig)
        if "health" in h:
            fig = _figure(f"{device}: health", unit, end / scale, "health (1 new, 0 failed)")
            std = h.get("health_std", [])
            _band(fig, t, _r(_sigma(h["health"], std, -2)), _r(_sigma(h["health"], std, 2)), "±2σ",
                  "rgba(26,127,55,0.2)")
            fig.add_trace(go.Scatter(x=t, y=_r(h["health"]), mode="lines", name="health",
                                     line=dict(color="#1a7f37")))
            fig.add_hline(y=0.0, line=dict(color=COLOURS["fail"], width=1.5), annotation_text="failure threshold",
                          annotation_position="top left", annotation_font_size=10)
            fig.update_yaxes(range=[-0.05, 1.05])
            _events(fig, record, scale, end, device)
            figures.append(fig)
        rul = [h.get(f"rul_{q}_s", []) for q in ("p05", "p50", "p95")]
        if any(v is not None for v in rul[1]):
            # rows where RUL was computed; there a missing quantile is beyond the twin's horizon
            rows = [i for i in range(len(t)) if any(i < len(c) and c[i] is not None for c in rul)]
            p05, p50, p95 = ([c[i] if i < len(c) else None for i in rows] for c in rul)
            x = [t[i] for i in rows]
            r_unit, r_scale = time_unit(max(v for v in p05 + p50 + p95 if v is not None))
            fig = _figure(f"{device}: remaining useful life", unit, end / scale, f"RUL ({r_unit})")
            _band(fig, x, _r(p05, r_scale), _r(p95, r_scale), "5-95 %", "rgba(191,135,0,0.25)")
            fig.add_trace(go.Scatter(x=x, y=_r(p50, r_scale), mode="lines+markers", name="median",
                                     line=dict(color="#bf8700"), marker=dict(size=3)))
            fig.add_hline(y=0.0, line=dict(color=COLOURS["fail"], width=1.5), annotation_text="failure",
                          annotation_position="top left", annotation_font_size=10)
            _events(fig, record, scale, end, device)
            figures.append(fig)
    return figures


def table(head: list[str] | None, rows: list[list[str]], cls: str = "") -> str:
    """Rows of already-escaped cells."""
    thead = "<thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>" if head else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}">{thead}<tbody>{body}</tbody></table>'


def _value(v: VerdictRecord) -> str:
    if v.value is None:
        return "-"
    return seconds_text(v.value) if v.unit == "s" else f"{v.value:.4g} {esc(v.unit)}"


def _verdict_rows(record: RunRecord) -> list[list[str]]:
    return [[esc(v.name), esc(v.kind),
             f'<b style="color:{COLOURS[v.outcome]}">{v.outcome}</b>'
             + (f' <b style="color:{COLOURS["marginal"]}">marginal</b>' if v.marginal else ""),
             _value(v), esc(f"{v.limit} {v.unit}" if v.kind in ("bounds", "tolerance") else v.limit),
             esc(v.detail)] for v in record.verdicts]


def _event_rows(record: RunRecord) -> list[list[str]]:
    rows = []
    for ev in record.events:
        if ev.kind in ("wait", "twin_estimate"):
            continue
        what = f"{ev.signal} = {ev.value:g}" if ev.signal and ev.value is not None else ""
        rows.append([seconds_text(ev.t), esc(ev.kind), esc(ev.device or ""),
                     esc("; ".join(p for p in (what, ev.note, ev.message) if p))])
    return rows


def render_html(record: RunRecord, committed: dict[str, str] | None = None) -> str:
    """The whole report as one HTML document (nothing fetched when it opens, so it works offline)."""
    end = max([record.samples.t[-1] if record.samples.t else 0.0]
              + [ev.t for ev in record.events]
              + [tw.history["t"][-1] for tw in record.twins.values() if tw.history.get("t")])
    unit, scale = time_unit(end)
    figures = _signal_figures(record, unit, scale, end) + _twin_figures(record, unit, scale, end)
    plots = figures_html(figures)
    outcome = record.outcome
    marginal = any(v.marginal for v in record.verdicts)
    counts = ", ".join(f"{sum(v.outcome == o for v in record.verdicts)} {o}" for o in ("pass", "fail", "error")
                       if any(v.outcome == o for v in record.verdicts)) or "no expectations judged"
    facts = [("scenario", f"{record.scenario.name} ({record.scenario.path})"),
             ("matrix point", ", ".join(f"{k}={v}" for k, v in (record.scenario.point or {}).items()) or "-"),
             ("scenario sha256", record.scenario.sha256), ("DUT", f"{record.dut.id} {record.dut.version}"),
             ("rig", f"{record.rig.name} ({record.rig.clock} clock)"), ("run id", record.run_id),
             ("started", record.started_at), ("finished", record.finished_at),
             ("bundle CID", (committed or {}).get("cid") or "not committed"),
             ("transaction", (committed or {}).get("tx") or "not committed")]
    header = facts_table(facts)
    error = f'<p class="error">error: {esc(record.error)}</p>' if record.error else ""
    flag = ' <span class="marginal">marginal</span>' if marginal else ""
    body = f"""<h1>{esc(record.scenario.name)}</h1>
<p><span class="outcome">{outcome.upper()}</span>{flag}<span class="summary">{counts}</span></p>
{error}
{header}
<h2>Expectations</h2>
{table(["expectation", "kind", "outcome", "value", "limit", "detail"], _verdict_rows(record))
 if record.verdicts else "<p>no expectations judged</p>"}
<h2>Signals and twins</h2>
{plots or "<p>no samples</p>"}
<h2>Events</h2>
{table(["t", "kind", "device", "detail"], _event_rows(record))}"""
    return page(f"{outcome.upper()}: {record.scenario.name} {record.run_id}", COLOURS[outcome], body)


def figures_html(figures: Sequence[go.Figure]) -> str:
    """Plotly figures as divs that use the page's one copy of plotly.js."""
    return "".join(f'<div class="plot">{f.to_html(full_html=False, include_plotlyjs=False, config=CONFIG)}'
                   "</div>" for f in figures)


def facts_table(facts: Sequence[tuple[str, object]]) -> str:
    """Name/value rows (escaped here), the block at the top of a report."""
    return table(None, [[esc(k), f"<code>{esc(str(v))}</code>"] for k, v in facts], "facts")


def page(title: str, colour: str, body: str) -> str:
    """A whole offline HTML document around ``body`` (plotly.js embedded, the outcome badge in ``colour``)."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #1f2328; max-width: 1300px; }}
.outcome {{ display: inline-block; font-size: 2em; font-weight: bold; color: #fff; padding: 0.1em 0.6em;
  border-radius: 6px; background: {colour}; }}
.marginal {{ display: inline-block; font-weight: bold; color: #fff; background: {COLOURS["marginal"]};
  padding: 0.2em 0.5em; border-radius: 4px; vertical-align: middle; }}
.summary {{ color: #57606a; margin-left: 1em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f6f8fa; }} .facts td:first-child {{ color: #57606a; }}
.error {{ color: {COLOURS["error"]}; font-weight: bold; white-space: pre-wrap; }} .plot {{ margin: 1em 0; }}
</style>
<script>{get_plotlyjs()}</script>
</head><body>
{body}
</body></html>
"""


def write_html(record: RunRecord, path: Path, committed: dict[str, str] | None = None) -> Path:
    """Write the report to ``path`` (folders made as needed) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(record, committed), encoding="utf-8")
    return path
