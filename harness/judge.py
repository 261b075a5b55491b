"""Judge declared expectations against raw samples: the same code runs live and in verify."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Mapping, Sequence

from twinloop.harness.scenario import Expectation

Outcome = Literal["pass", "fail", "error"]


@dataclass(frozen=True)
class Verdict:
    """One expectation's outcome, the worst value seen and the limit it was held to."""

    name: str
    outcome: Outcome
    value: float | None
    limit: str
    unit: str
    marginal: bool = False
    detail: str = ""

    def to_dict(self) -> dict:
        """Plain data for the run record."""
        return asdict(self)


def judge(expectation: Expectation, samples: Mapping[str, Sequence[float | None]]) -> Verdict:
    """Evaluate one expectation over the sampled column it names."""
    e = expectation
    limit = " and ".join(p for p in (f">= {e.min}" if e.min is not None else "",
                                      f"<= {e.max}" if e.max is not None else "") if p)
    column = [v for v in samples.get(e.signal, []) if v is not None]
    if not column:
        return Verdict(e.name, "error", None, limit, e.unit, detail=f"no samples of {e.signal}")
    low, high = min(column), max(column)
    if e.max is not None and high > e.max:
        return Verdict(e.name, "fail", high, limit, e.unit, detail=f"max {high:g} > {e.max:g} {e.unit}")
    if e.min is not None and low < e.min:
        return Verdict(e.name, "fail", low, limit, e.unit, detail=f"min {low:g} < {e.min:g} {e.unit}")
    worst = high if e.max is not None else low
    marginal = ((e.marginal_max is not None and high > e.marginal_max)
                or (e.marginal_min is not None and low < e.marginal_min))
    return Verdict(e.name, "pass", worst, limit, e.unit, marginal=marginal,
                   detail="marginal" if marginal else "")


def overall(verdicts: Sequence[Verdict], error: str | None = None) -> Outcome:
    """A run is ``error`` if the harness or rig broke, else ``fail`` if any check failed."""
    outcomes = {v.outcome for v in verdicts}
    if error or "error" in outcomes or not verdicts:
        return "error"
    return "fail" if "fail" in outcomes else "pass"
