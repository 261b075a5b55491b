"""Prognostics metrics from ground truth: RMSE, alpha-lambda, prognostic horizon, relative accuracy, convergence.

Definitions follow Saxena, Celaya, Saha, Saha and Goebel, "Metrics for
Offline Evaluation of Prognostic Performance", International Journal of
Prognostics and Health Management 1(1), 2010 (section 6). A prediction made at
time ``t`` is a remaining-useful-life distribution, given as equally weighted
samples (a resampled particle cloud, Monte Carlo draws); the truth is the end-of-life time ``eol``, so the true RUL
at ``t`` is ``eol - t``. ``t_p`` is when prediction starts (the first
prediction unless given).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy

Samples = Sequence[float] | numpy.ndarray


def _mass_within(samples: Samples, low: float, high: float) -> float:
    """Probability mass of a RUL distribution (equally weighted samples) inside [low, high]."""
    s = numpy.asarray(samples, dtype=float)
    return float(((s >= low) & (s <= high)).mean())


def _point(samples: Samples) -> float:
    """The distribution's mean, the point prediction the scalar metrics use."""
    return float(numpy.mean(numpy.asarray(samples, dtype=float)))


def rmse(times: Samples, predictions: Sequence[Samples], eol: float) -> float:
    """Root mean square error of the point RUL predictions against the true RUL ``eol - t``."""
    errors = [_point(p) - (eol - t) for t, p in zip(times, predictions)]
    return math.sqrt(sum(e * e for e in errors) / len(errors))


def alpha_lambda(times: Samples, predictions: Sequence[Samples], eol: float, alpha: float, lam: float,
                 beta: float = 0.5, t_p: float | None = None) -> bool:
    """Whether, at ``t_lambda = t_p + lam * (eol - t_p)``, at least ``beta`` of the RUL mass lies within
    ``(1 -+ alpha)`` times the true RUL (Saxena et al. 2010, 6.2). The first prediction at or after
    ``t_lambda`` is judged; none there is False.
    """
    t_p = float(times[0]) if t_p is None else t_p
    t_lambda = t_p + lam * (eol - t_p)
    for t, p in zip(times, predictions):
        if t >= t_lambda:
            true = eol - t
            return _mass_within(p, (1 - alpha) * true, (1 + alpha) * true) >= beta
    return False


def prognostic_horizon(times: Samples, predictions: Sequence[Samples], eol: float, alpha: float,
                       beta: float = 0.5) -> float | None:
    """``eol - t_i`` for the first prediction time ``t_i`` from which every prediction keeps at least
    ``beta`` of its mass within the true RUL +- ``alpha * eol`` (Saxena et al. 2010, 6.1); None if the
    last prediction misses.
    """
    first = None
    for t, p in zip(times, predictions):
        true = eol - t
        if _mass_within(p, true - alpha * eol, true + alpha * eol) >= beta:
            first = t if first is None else first
        else:
            first = None
    return None if first is None else float(eol - first)


def relative_accuracy(times: Samples, predictions: Sequence[Samples], eol: float, lam: float,
                      t_p: float | None = None) -> float | None:
    """``1 - |r* - r| / r*`` at the first prediction at or after ``t_lambda`` (Saxena et al. 2010, 6.3)."""
    t_p = float(times[0]) if t_p is None else t_p
    t_lambda = t_p + lam * (eol - t_p)
    for t, p in zip(times, predictions):
        if t >= t_lambda:
            true = eol - t
            return 1.0 - abs(true - _point(p)) / true if true > 0 else None
    return None


def convergence(times: Samples, predictions: Sequence[Samples], eol: float, t_p: float | None = None) -> float:
    """Distance from ``(t_p, 0)`` to the centroid of the area under the absolute-error curve
    (Saxena et al. 2010, 6.5): smaller means the predictions converge sooner.
    """
    t = numpy.asarray(times, dtype=float)
    m = numpy.array([abs(_point(p) - (eol - ti)) for ti, p in zip(t, predictions)])
    t_p = float(t[0]) if t_p is None else t_p
    dt = numpy.diff(t)
    area = float((dt * m[:-1]).sum())
    if area == 0.0:
        return 0.0
    x_c = float((0.5 * (t[1:] ** 2 - t[:-1] ** 2) * m[:-1]).sum()) / area
    y_c = float((0.5 * dt * m[:-1] ** 2).sum()) / area
    return math.hypot(x_c - t_p, y_c)
