"""Monte Carlo time to failure and chunked stepping (twins/predict.py), and the twin benchmark's report."""

from __future__ import annotations

import json

import numpy
import pytest

from twinloop.twins.models.battery import BatteryCircuit
from twinloop.twins.models.pump_bearing import PumpBearingWear
from twinloop.twins.predict import advance, failure_times


def test_advance_in_chunks_equals_stepping_all_units_at_once() -> None:
    model = BatteryCircuit()
    currents = numpy.linspace(0.5, 4.0, 10)
    x = model.initial_state(10)
    whole = x
    for _ in range(50):
        whole = model.next_state(whole, {"i": currents}, 1.0)
    chunked = advance(model, x, {"i": currents}, 1.0, 50, chunk=3)  # chunks of 3, 3, 3 and 1 cells
    for key in whole:
        numpy.testing.assert_array_equal(chunked[key], whole[key])


def test_failure_times_match_each_unit_stepped_alone_and_respect_the_horizon() -> None:
    model = BatteryCircuit()
    currents = numpy.array([1.0, 2.0, 4.0, 0.0])
    ttf = failure_times(model, model.initial_state(4), {"i": currents}, 1.0, horizon=9000.0,
                        process_noise=False, chunk=2)
    # 2 A: 3803 s, the end of discharge progpy's simulate_to_threshold gives for a full cell (dt = 1 s)
    assert ttf[1] == 3803.0
    assert ttf[0] > ttf[1] > ttf[2] > 0
    assert ttf[3] == numpy.inf  # a cell at rest does not reach end of discharge within the horizon
    for k, current in enumerate(currents[:3]):
        x, t = model.initial_state(1), 0.0
        while not model.threshold_met(x)[0]:
            x = model.next_state(x, {"i": current}, 1.0)
            t += 1.0
        assert ttf[k] == t


def test_failure_times_with_process_noise_spread_around_the_noiseless_time() -> None:
    model = PumpBearingWear()
    x = model.initial_state(400)
    nominal = {"speed": 1480.0, "load": 100.0}
    exact = failure_times(model, model.initial_state(1), nominal, 600.0, horizon=1e7, process_noise=False)[0]
    spread = failure_times(model, x, nominal, 600.0, horizon=1e7, rng=numpy.random.default_rng(7))
    assert numpy.isfinite(spread).all()
    assert spread.std() > 0
    assert abs(numpy.median(spread) - exact) < 0.1 * exact


@pytest.mark.slow
def test_twin_benchmark_reports_ratios_against_progpy(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("progpy")
    from twinloop.twins.bench import main

    assert main(["--quick", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"loop_ratio", "vectorised_ratio", "montecarlo_ratio", "progpy_loop_per_s",
            "progpy_vectorised_per_s", "twinloop_per_s"} <= set(report)
    mc = report["montecarlo"]
    # the same model and load: both predict the same end of discharge to within a step or two
    assert abs(mc["progpy_median_eod_s"] - mc["twinloop_median_eod_s"]) <= 2.0


@pytest.mark.slow
def test_accuracy_benchmark_scores_both_estimators_on_the_same_discharge() -> None:
    pytest.importorskip("progpy")
    from twinloop.twins.bench import accuracy

    report = accuracy(quick=True)
    assert report["true_eod_s"] == 3005.0  # progpy's example load, dt = 1 s
    for who in ("twinloop", "progpy"):
        # both filters learn the unknown charge and predict the end of discharge within 1 % from 500 s on
        assert report[who]["rmse_s"] < 30.0, report
        assert report[who]["alpha_lambda_0.1_0.5"]
