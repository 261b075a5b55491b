"""Declared measurements: resolved to the rig's units before the run, judged from the record alone.

``resolve`` turns a scenario's ``expect`` entries into ``Measure`` objects in
each signal's unit on the rig (pint does the conversion; a dimension mismatch
is an error at load). ``judge_all`` evaluates them against a run record's
samples, events and twin histories: the same code runs live and in ``verify``,
which re-resolves from the recorded scenario text and the recorded units.

A sample that is ``None`` (NaN, infinite, or not taken) is never a pass: it is
counted, named in the detail, and a measure with no finite sample at all is an
``error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from twinloop import units
from twinloop.harness.record import Outcome, RunRecord, VerdictRecord
from twinloop.harness.scenario import (Bounds, Deadline, LeadTime, ScenarioSource, Settle, Tolerance)

#: Bumped whenever a change here could judge the same samples differently.
JUDGE_VERSION = "3"

Anchor = float | str


@dataclass(frozen=True)
class Measure:
    """One declared measurement in the signal's unit; ``kind`` says which fields apply."""

    name: str
    kind: str
    signal: str
    unit: str
    window: tuple[Anchor | None, Anchor | None] = (None, None)
    min: float | None = None
    max: float | None = None
    marginal_min: float | None = None
    marginal_max: float | None = None
    within: float | None = None          # tolerance (signal unit), deadline/settle (s)
    after: Anchor | None = None          # deadline, settle
    above: float | None = None           # deadline, lead-time failure
    below: float | None = None
    to: float | None = None              # settle target
    band: float | None = None            # settle band
    twin: str | None = None              # lead time
    rul_below: float | None = None
    at_least: float | None = None
    quantile: str = "p50"
    sigmas: float | None = None          # tolerance against the twin's own uncertainty


def resolve(source: ScenarioSource, signal_units: dict[str, str]) -> list[Measure]:
    """Every ``expect`` entry in its signal's unit; raises ConfigError at the entry's line on a mismatch."""
    out = []
    for i, e in enumerate(source.scenario.expect):
        def conv(key: tuple[Any, ...], value: Any, signal: str, given: str | None,
                 delta: bool = False) -> float | None:
            if value is None:
                return None
            try:
                fn = units.convert_delta if delta else units.convert
                return fn(value, signal_units[signal], given or signal_units[signal])
            except ValueError as err:
                source.error(("expect", i, *key), f"{signal}: {err}")

        window = (e.window.start, e.window.end) if e.window else (None, None)
        base = dict(name=e.name, window=window)
        if isinstance(e, Bounds):
            u = signal_units[e.signal]
            out.append(Measure(**base, kind="bounds", signal=e.signal, unit=u,
                               **{k: conv((k,), getattr(e, k), e.signal, e.unit)
                                  for k in ("min", "max", "marginal_min", "marginal_max")}))
        elif isinstance(e, Tolerance):
            t = e.tolerance
            out.append(Measure(**base, kind="tolerance", signal=t.signal, unit=signal_units[t.signal],
                               within=conv(("tolerance", "within"), t.within, t.signal, t.unit, True),
                               sigmas=t.sigmas))
        elif isinstance(e, Deadline):
            d = e.deadline
            out.append(Measure(**base, kind="deadline", signal=d.signal, unit="s", within=d.within,
                               after=d.after,
                               above=conv(("deadline", "above"), d.above, d.signal, d.unit),
                               below=conv(("deadline", "below"), d.below, d.signal, d.unit)))
        elif isinstance(e, LeadTime):
            lt, f = e.lead_time, e.lead_time.failure
            out.append(Measure(**base, kind="lead_time", signal=f.signal, unit="s", twin=lt.twin,
                               rul_below=lt.rul_below, at_least=lt.at_least, quantile=lt.quantile,
                               above=conv(("lead_time", "failure", "above"), f.above, f.signal, f.unit),
                               below=conv(("lead_time", "failure", "below"), f.below, f.signal, f.unit)))
        elif isinstance(e, Settle):
            st = e.settle
            out.append(Measure(**base, kind="settle", signal=st.signal, unit="s", within=st.within,
                               after=st.after, to=conv(("settle", "to"), st.to, st.signal, st.unit),
                               band=conv(("settle", "band"), st.band, st.signal, st.unit, True)))
    return out


class _Run:
    """The parts of a record a judgement reads: samples, marks, twin histories."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self.t = record.samples.t
        self.marks = {e.note: e.t for e in record.events if e.kind == "mark"}
        self.end = self.t[-1] if self.t else 0.0

    def at(self, anchor: Anchor | None, default: float) -> float | None:
        """Seconds for a time or mark name; None for a mark the run never reached."""
        if anchor is None:
            return default
        return float(anchor) if not isinstance(anchor, str) else self.marks.get(anchor)

    def column(self, signal: str, window: tuple[float, float]) -> tuple[list[float], list[float | None]]:
        raw = self.record.samples.columns.get(signal, [])
        rows = [(t, v) for t, v in zip(self.t, raw) if window[0] <= t <= window[1]]
        return [t for t, _ in rows], [v for _, v in rows]


def _fmt(x: float | None) -> str:
    return "none" if x is None else f"{x:g}"


def seconds_text(x: float | None) -> str:
    """A duration for people: ``90 s``, ``5 min``, ``36 h``, ``65.1 d``."""
    if x is None:
        return "none"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if abs(x) >= 2 * size:
            return f"{x / size:.3g} {unit}"
    return f"{x:.3g} s"


def _bounds(m: Measure, ts: list[float], raw: list[float | None]) -> dict[str, Any]:
    column = [v for v in raw if v is not None]
    low, high = min(column), max(column)
    if m.max is not None and high > m.max:
        return dict(outcome="fail", value=high, detail=f"max {high:g} > {m.max:g} {m.unit}")
    if m.min is not None and low < m.min:
        return dict(outcome="fail", value=low, detail=f"min {low:g} < {m.min:g} {m.unit}")
    marginal = ((m.marginal_max is not None and high > m.marginal_max)
                or (m.marginal_min is not None and low < m.marginal_min))
    return dict(outcome="pass", value=high if m.max is not None else low, marginal=marginal,
                detail="marginal" if marginal else "")


def _crossed(m: Measure, v: float) -> bool:
    return v > m.above if m.above is not None else v < m.below  # type: ignore[operator]


def _judge_one(m: Measure, run: _Run) -> VerdictRecord:
    start, end = run.at(m.window[0], 0.0), run.at(m.window[1], run.end)
    base = dict(name=m.name, kind=m.kind, unit="sigma" if m.sigmas is not None else m.unit, signal=m.signal, min=m.min, max=m.max,
                marginal_min=m.marginal_min, marginal_max=m.marginal_max)
    if start is None or end is None:
        missing = m.window[0] if start is None else m.window[1]
        return VerdictRecord(**base, limit="", outcome="fail", value=None,
                             detail=f"the run never reached mark '{missing}'")
    base["window"] = (start, end) if m.window != (None, None) else None
    ts, raw = run.column(m.signal, (start, end))
    invalid = sum(v is None for v in raw)
    note = f"; {invalid} of {len(raw)} samples missing or not finite" if invalid else ""
    limit, result = _LIMIT[m.kind](m), None
    if m.kind not in ("deadline", "lead_time", "settle") and not any(v is not None for v in raw):
        result = dict(outcome="error", value=None, detail=f"no finite samples of {m.signal}")
    else:
        result = _KIND[m.kind](m, ts, raw, run)
    detail = (result.pop("detail", "") + note).lstrip("; ")
    return VerdictRecord(**base, limit=limit, invalid=invalid, detail=detail, **result)


def _tolerance(m: Measure, ts: list[float], raw: list[float | None], run: _Run) -> dict[str, Any]:
    """Largest |measured - twin| in the window: the one-step prediction (before the sample was
    assimilated) for a shadow twin, the open-loop model output for a ``model`` twin."""
    device, _, name = m.signal.partition(".")
    twin = run.record.twins.get(device)
    if twin is None:
        return dict(outcome="error", value=None, detail=f"no twin history for '{device}'")
    hist = twin.history
    column = hist.get(f"predicted_{name}") or hist.get(name)
    if column is None:
        return dict(outcome="error", value=None, detail=f"the twin of '{device}' does not predict '{name}'")
    predicted = dict(zip(hist.get("t", []), column))
    if m.sigmas is not None:
        return _tolerance_sigmas(m, ts, raw, predicted, dict(zip(hist.get("t", []), hist.get(f"predicted_{name}_std")
                                                                 or [])), name)
    errors = [abs(v - p) for t, v in zip(ts, raw) if v is not None and (p := predicted.get(t)) is not None]
    if not errors:
        return dict(outcome="error", value=None, detail=f"the twin predicted no '{name}' in the window")
    worst = max(errors)
    ok = worst <= m.within  # type: ignore[operator]
    return dict(outcome="pass" if ok else "fail", value=worst,
                detail=f"largest |measured - twin| {worst:g} {m.unit}" + ("" if ok else f" > {m.within:g}"))


def _tolerance_sigmas(m: Measure, ts: list[float], raw: list[float | None], predicted: dict[float, Any],
                      spread: dict[float, Any], name: str) -> dict[str, Any]:
    """Largest |measured - twin| in units of the twin's own predictive sigma: a twin that disagrees
    with the device beyond what it claims to know fails, however wide or narrow that is."""
    if not spread:
        return dict(outcome="error", value=None, detail=f"the twin reports no uncertainty for '{name}'")
    scores = [(abs(v - p) / s, t) for t, v in zip(ts, raw)
              if v is not None and (p := predicted.get(t)) is not None and (s := spread.get(t))]
    if not scores:
        return dict(outcome="error", value=None, detail=f"the twin predicted no '{name}' in the window")
    worst, at = max(scores)
    ok = worst <= m.sigmas  # type: ignore[operator]
    return dict(outcome="pass" if ok else "fail", value=worst,
                detail=f"largest |measured - twin| {worst:.3g} sigma at t={at:g} s"
                + ("" if ok else f" > {m.sigmas:g}"))


def _deadline(m: Measure, ts: list[float], raw: list[float | None], run: _Run) -> dict[str, Any]:
    t0 = run.at(m.after, 0.0)
    if t0 is None:
        return dict(outcome="fail", value=None, detail=f"the run never reached mark '{m.after}'")
    hit = next((t for t, v in zip(ts, raw) if t >= t0 and v is not None and _crossed(m, v)), None)
    if hit is None:
        return dict(outcome="fail", value=None, detail=f"{m.signal} never crossed after '{m.after}'")
    latency = hit - t0
    ok = m.within is None or latency <= m.within
    return dict(outcome="pass" if ok else "fail", value=latency,
                detail=f"{latency:g} s after '{m.after}'" + ("" if ok else f" > {m.within:g} s"))


def _lead_time(m: Measure, ts: list[float], raw: list[float | None], run: _Run) -> dict[str, Any]:
    fail_t = next((t for t, v in zip(ts, raw) if v is not None and _crossed(m, v)), None)
    if fail_t is None:
        return dict(outcome="fail", value=None, detail=f"{m.signal} never reached its failure threshold")
    twin = run.record.twins.get(m.twin or "")
    hist = twin.history if twin else {}
    ruls = hist.get(f"rul_{m.quantile}_s", [])
    alarm_t = next((t for t, r in zip(hist.get("t", []), ruls)
                    if r is not None and t <= fail_t and r < m.rul_below), None)  # type: ignore[operator]
    if alarm_t is None:
        return dict(outcome="fail", value=0.0, detail=f"the twin's RUL {m.quantile} never fell below "
                    f"{seconds_text(m.rul_below)} before the failure at {seconds_text(fail_t)}")
    lead = fail_t - alarm_t
    ok = lead >= m.at_least  # type: ignore[operator]
    return dict(outcome="pass" if ok else "fail", value=lead,
                detail=f"alarm at {seconds_text(alarm_t)}, failure at {seconds_text(fail_t)}: "
                f"{seconds_text(lead)} ahead" + ("" if ok else f" < {seconds_text(m.at_least)}"))


def _settle(m: Measure, ts: list[float], raw: list[float | None], run: _Run) -> dict[str, Any]:
    t0 = run.at(m.after, 0.0)
    if t0 is None:
        return dict(outcome="fail", value=None, detail=f"the run never reached mark '{m.after}'")
    rows = [(t, v) for t, v in zip(ts, raw) if t >= t0]
    settled_at = None
    for t, v in rows:
        inside = v is not None and abs(v - m.to) <= m.band  # type: ignore[operator]
        if not inside:
            settled_at = None
        elif settled_at is None:
            settled_at = t
    if settled_at is None:
        return dict(outcome="fail", value=None, detail=f"{m.signal} did not settle within ±{m.band:g} "
                    f"of {m.to:g}")
    took = settled_at - t0
    ok = took <= m.within  # type: ignore[operator]
    return dict(outcome="pass" if ok else "fail", value=took,
                detail=f"settled {took:g} s after start" + ("" if ok else f" > {m.within:g} s"))


def _bounds_kind(m: Measure, ts: list[float], raw: list[float | None], run: _Run) -> dict[str, Any]:
    return _bounds(m, ts, raw)


_KIND: dict[str, Callable[..., dict[str, Any]]] = {
    "bounds": _bounds_kind, "tolerance": _tolerance, "deadline": _deadline, "lead_time": _lead_time,
    "settle": _settle}
_LIMIT: dict[str, Callable[[Measure], str]] = {
    "bounds": lambda m: " and ".join(p for p in (f">= {_fmt(m.min)}" if m.min is not None else "",
                                                 f"<= {_fmt(m.max)}" if m.max is not None else "") if p),
    "tolerance": lambda m: (f"|measured - twin| <= {m.sigmas:g}" if m.sigmas is not None
                            else f"|measured - twin| <= {_fmt(m.within)}"),
    "deadline": lambda m: (f"<= {seconds_text(m.within)} after {m.after}" if m.within is not None
                           else f"after {m.after}"),
    "lead_time": lambda m: f">= {seconds_text(m.at_least)} ahead",
    "settle": lambda m: f"<= {seconds_text(m.within)} into {_fmt(m.to)} ± {_fmt(m.band)}",
}


def judge_all(measures: Sequence[Measure], record: RunRecord) -> list[VerdictRecord]:
    """Every measure of a scenario, in declared order, from the record's data alone."""
    run = _Run(record)
    return [_judge_one(m, run) for m in measures]


def overall(verdicts: Sequence[VerdictRecord], error: str | None = None,
            step_failures: Sequence[str] = ()) -> Outcome:
    """``error`` if the harness or rig broke, else ``fail`` if a check or an ``until`` step failed."""
    outcomes = {v.outcome for v in verdicts}
    if error or "error" in outcomes or not verdicts:
        return "error"
    return "fail" if "fail" in outcomes or step_failures else "pass"


def step_failures(record: RunRecord) -> list[str]:
    """Steps that failed the run (``until`` timeouts declared ``on_timeout: fail``), from its events."""
    return [e.message for e in record.events if e.kind == "until" and e.data.get("failed")]
