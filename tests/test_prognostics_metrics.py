"""Prognostics metrics (Saxena et al. 2010) against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from twinloop.twins.metrics import alpha_lambda, convergence, prognostic_horizon, relative_accuracy, rmse

# Predictions every 10 s of a unit that fails at 40 s: true RUL 40, 30, 20, 10; point predictions 50, 33, 21, 10.
TIMES, EOL = [0.0, 10.0, 20.0, 30.0], 40.0
POINTS = [[50.0], [33.0], [21.0], [10.0]]


def test_rmse() -> None:
    # errors 10, 3, 1, 0 -> sqrt((100 + 9 + 1 + 0) / 4) = sqrt(27.5)
    assert rmse(TIMES, POINTS, EOL) == pytest.approx(math.sqrt(27.5))


def test_alpha_lambda() -> None:
    # lambda 0.5: t_lambda = 20, true RUL 20, band (0.8 .. 1.2) * 20 = [16, 24]; 21 is in it
    assert alpha_lambda(TIMES, POINTS, EOL, alpha=0.2, lam=0.5)
    # lambda 0.25: t_lambda = 10, true RUL 30; alpha 0.2 -> [24, 36] holds 33, alpha 0.05 -> [28.5, 31.5] does not
    assert alpha_lambda(TIMES, POINTS, EOL, alpha=0.2, lam=0.25)
    assert not alpha_lambda(TIMES, POINTS, EOL, alpha=0.05, lam=0.25)
    # no prediction at or after t_lambda = 39
    assert not alpha_lambda(TIMES, POINTS, EOL, alpha=0.5, lam=39 / 40)


def test_alpha_lambda_weighs_the_distribution_against_beta() -> None:
    # at t = 20 the band is [16, 24]: samples 18 and 19 are in, 25 and 26 out -> mass 0.5
    cloud = [[50.0], [33.0], [18.0, 19.0, 25.0, 26.0], [10.0]]
    assert alpha_lambda(TIMES, cloud, EOL, alpha=0.2, lam=0.5, beta=0.5)
    assert not alpha_lambda(TIMES, cloud, EOL, alpha=0.2, lam=0.5, beta=0.6)


def test_prognostic_horizon() -> None:
    # alpha 0.1 of EOL = +-4 s around the truth: t=0 misses (|50 - 40| = 10), t=10, 20, 30 hold -> PH = 40 - 10
    assert prognostic_horizon(TIMES, POINTS, EOL, alpha=0.1) == 30.0
    # a late miss resets it: only the last prediction holds -> PH = 40 - 30
    assert prognostic_horizon(TIMES, [[50.0], [33.0], [30.0], [10.0]], EOL, alpha=0.1) == 10.0
    assert prognostic_horizon(TIMES, [[50.0], [33.0], [21.0], [20.0]], EOL, alpha=0.1) is None


def test_relative_accuracy() -> None:
    # t_lambda = 20: 1 - |20 - 21| / 20
    assert relative_accuracy(TIMES, POINTS, EOL, lam=0.5) == pytest.approx(0.95)


def test_convergence() -> None:
    # errors M = 10, 3, 1 over three 10 s spans: area 140;
    # x_c = (0.5*(100-0)*10 + 0.5*(400-100)*3 + 0.5*(900-400)*1) / 140 = 1200 / 140
    # y_c = (0.5*10*100 + 0.5*10*9 + 0.5*10*1) / 140 = 550 / 140
    assert convergence(TIMES, POINTS, EOL) == pytest.approx(math.hypot(1200 / 140, 550 / 140))
    # perfect predictions converge at once
    assert convergence(TIMES, [[40.0], [30.0], [20.0], [10.0]], EOL) == 0.0
