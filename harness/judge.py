"""Judge declared expectations against a run's recorded samples: the same code runs live and in verify.

The judge reads only the run record's columns, in which non-finite readings
are already ``None`` (see ``record.finite_or_none``). A ``None`` is never a
pass: it is counted, named in the detail, and an expectation with no finite
sample at all is an ``error``.
"""

from __future__ import annotations

from typing import Sequence

from twinloop.harness.record import Outcome, Samples, VerdictRecord
from twinloop.harness.scenario import Expectation

#: Bumped whenever a change here could judge the same samples differently.
JUDGE_VERSION = "2"


def judge(expectation: Expectation, samples: Samples) -> VerdictRecord:
    """Evaluate one expectation over the recorded column it names."""
    e = expectation
    limit = " and ".join(p for p in (f">= {e.min}" if e.min is not None else "",
                                      f"<= {e.max}" if e.max is not None else "") if p)
    raw = samples.columns.get(e.signal, [])
    column = [v for v in raw if v is not None]
    invalid = len(raw) - len(column)
    verdict = dict(name=e.name, limit=limit, unit=e.unit, invalid=invalid, signal=e.signal, min=e.min,
                   max=e.max, marginal_min=e.marginal_min, marginal_max=e.marginal_max)
    note = f"; {invalid} of {len(raw)} samples not finite" if invalid else ""
    if not column:
        return VerdictRecord(**verdict, outcome="error", value=None,
                             detail=f"no finite samples of {e.signal}{note}")
    low, high = min(column), max(column)
    if e.max is not None and high > e.max:
        return VerdictRecord(**verdict, outcome="fail", value=high,
                             detail=f"max {high:g} > {e.max:g} {e.unit}{note}")
    if e.min is not None and low < e.min:
        return VerdictRecord(**verdict, outcome="fail", value=low,
                             detail=f"min {low:g} < {e.min:g} {e.unit}{note}")
    worst = high if e.max is not None else low
    marginal = ((e.marginal_max is not None and high > e.marginal_max)
                or (e.marginal_min is not None and low < e.marginal_min))
    detail = ("marginal" if marginal else "") + note
    return VerdictRecord(**verdict, outcome="pass", value=worst, marginal=marginal,
                         detail=detail.lstrip("; "))


def judge_all(expectations: Sequence[Expectation], samples: Samples) -> list[VerdictRecord]:
    """Every expectation of a scenario, in declared order."""
    return [judge(e, samples) for e in expectations]


def overall(verdicts: Sequence[VerdictRecord], error: str | None = None) -> Outcome:
    """A run is ``error`` if the harness or rig broke, else ``fail`` if any check failed."""
    outcomes = {v.outcome for v in verdicts}
    if error or "error" in outcomes or not verdicts:
        return "error"
    return "fail" if "fail" in outcomes else "pass"
