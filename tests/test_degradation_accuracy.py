"""The pump-bearing twin's RUL accuracy against the emulator's truth (twins.accuracy), and its bench wiring."""

from __future__ import annotations

import json
import math

import numpy
import pytest
from rich.console import Console

from twinloop.rigs.emulators.pump import PumpDevice
from twinloop.twins import accuracy, bench, metrics
from twinloop.twins.accuracy import degradation_accuracy, degradation_table, run_unit, true_end_of_life
from twinloop.twins.models.pump_bearing import PumpBearingWear

# 500 particles: with 200 the filter loses 8 of 40 pumps (its cloud collapses onto a wrong k after the first
# samples and never recovers), with 300 two, with 500 and 1000 none.
SMALL = {"units": 3, "particles": 500, "fractions": (0.1, 0.3, 0.5, 0.7, 0.9)}
NOMINAL = {"speed": 1480.0, "load": 100.0}


@pytest.fixture(scope="module")
def small() -> dict:
    return degradation_accuracy(**SMALL)


@pytest.mark.parametrize("seed", [1, 2, 7])
def test_true_end_of_life_is_the_models_own_crossing_for_the_hidden_k(seed: int) -> None:
    eol = true_end_of_life(seed)
    k = PumpDevice(seed=seed).k
    assert k not in {PumpDevice(seed=other).k for other in (1, 2, 7) if other != seed}  # each has its own rate
    model = PumpBearingWear()
    g = model.params["g"]
    assert eol == pytest.approx(math.log(1 + g * model.wear_limit) / (g * k), abs=0.01)
    # the model stepped directly, a minute at a time, crosses in the minute that ends at or after eol
    x, t = model.initial_state(1, k=k), 0.0
    while not model.threshold_met(x)[0]:
        x = model.next_state(x, NOMINAL, 60.0)
        t += 60.0
    assert t - 60.0 < eol <= t


def test_predictions_are_at_the_first_sample_of_each_fraction_and_truth_is_eol_minus_t() -> None:
    fractions = (0.1, 0.5, 0.9)
    unit = run_unit(3, 100, fractions)
    eol = unit["eol_s"]
    assert eol == true_end_of_life(3)
    for f, t, true in zip(fractions, unit["times_s"], unit["true_rul_s"]):
        assert t % accuracy.SAMPLE_S == 0 and f * eol <= t < f * eol + accuracy.SAMPLE_S
        assert true == eol - t
    assert all(len(unit[k]) == len(fractions) for k in ("rul_p05_s", "rul_p50_s", "rul_p95_s", "samples"))
    assert all(len(s) == 100 for s in unit["samples"])


def test_fractions_past_the_end_of_life_or_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError, match="fractions"):
        run_unit(1, 50, (0.5, 0.3))
    with pytest.raises(ValueError, match="fractions"):
        run_unit(1, 50, (0.5, 1.0))


def test_keys_and_sizes(small: dict) -> None:
    for key in ("model", "units", "particles", "rul_rmse_s", "ph_s", "ph_units", "ph_fraction_of_life",
                "alpha_lambda", "relative_accuracy", "coverage_90", "by_fraction", "by_unit", "wall_s"):
        assert key in small
    assert small["model"] == "pump_bearing" and small["units"] == 3
    assert [r["fraction"] for r in small["by_fraction"]] == list(SMALL["fractions"])
    assert [u["seed"] for u in small["by_unit"]] == [1, 2, 3]
    json.dumps(small, allow_nan=False)  # plain JSON


def test_reproducible(small: dict) -> None:
    again = degradation_accuracy(**SMALL)
    assert {k: v for k, v in again.items() if k != "wall_s"} == {k: v for k, v in small.items() if k != "wall_s"}


def test_per_unit_scores_are_twins_metrics_on_the_same_predictions(small: dict) -> None:
    for reported in small["by_unit"]:
        unit = run_unit(reported["seed"], SMALL["particles"], SMALL["fractions"])
        times, preds, eol = unit["times_s"], unit["samples"], unit["eol_s"]
        assert reported["rmse_s"] == pytest.approx(metrics.rmse(times, preds, eol), abs=0.05)
        assert reported["alpha_lambda"] == metrics.alpha_lambda(times, preds, eol, 0.1, 0.5, t_p=0.0)
        ph = metrics.prognostic_horizon(times, preds, eol, 0.1)
        assert reported["ph_s"] == (None if ph is None else pytest.approx(ph, abs=0.05))
        assert reported["relative_accuracy"] == pytest.approx(
            metrics.relative_accuracy(times, preds, eol, 0.5, t_p=0.0), abs=5e-4)


def test_summaries_follow_from_the_per_unit_numbers(small: dict) -> None:
    units = small["by_unit"]
    true = numpy.array([u["true_rul_s"] for u in units])
    p05, p50, p95 = (numpy.array([u[k] for u in units]) for k in ("rul_p05_s", "rul_p50_s", "rul_p95_s"))
    assert small["rul_rmse_s"] == pytest.approx(math.sqrt(((p50 - true) ** 2).mean()), abs=0.5)
    assert small["coverage_90"] == pytest.approx(((p05 <= true) & (true <= p95)).mean())
    assert small["ph_s"] == pytest.approx(numpy.median([u["ph_s"] or 0.0 for u in units]), abs=0.5)
    assert small["alpha_lambda"] == pytest.approx(numpy.mean([u["alpha_lambda"] for u in units]))
    for j, row in enumerate(small["by_fraction"]):
        assert row["rmse_p50_s"] == pytest.approx(math.sqrt(((p50[:, j] - true[:, j]) ** 2).mean()), abs=0.5)
        assert row["bias_p50_s"] == pytest.approx((p50[:, j] - true[:, j]).mean(), abs=0.5)
    # at lambda = 0.5 the per-fraction alpha-lambda is the headline one
    assert small["by_fraction"][2]["alpha_lambda_pass"] == small["alpha_lambda"]


def test_late_life_predictions_are_closer_and_tighter_than_early_ones(small: dict) -> None:
    rows = small["by_fraction"]
    assert rows[-1]["rmse_p50_s"] < rows[0]["rmse_p50_s"]
    assert rows[-1]["rmse_p50_s"] < 0.05 * rows[0]["true_rul_median_s"]
    for u in small["by_unit"]:
        widths = [hi - lo for lo, hi in zip(u["rul_p05_s"], u["rul_p95_s"])]
        assert widths[-1] < widths[0] / 4
        assert abs(u["rul_p50_s"][-1] - u["true_rul_s"][-1]) < 0.1 * u["true_rul_s"][-1]


def test_table_shows_every_fraction(small: dict) -> None:
    table, line = degradation_table(small)
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    assert all(f"{f:.0%}" in text for f in SMALL["fractions"])
    assert "prognostic horizon" in line and "/3 units pass" in line


def test_bench_accuracy_json_carries_the_degradation_keys(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(bench, "accuracy", lambda quick: {"true_eod_s": 3005.0, "quick_was": quick})
    monkeypatch.setattr(accuracy, "QUICK", {"units": 2, "particles": 100})
    assert bench.main(["--accuracy", "--quick", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["true_eod_s"] == 3005.0 and out["quick_was"] is True
    assert out["degradation_model"] == "pump_bearing" and out["degradation_units"] == 2
    for key in ("degradation_rul_rmse_s", "degradation_ph_s", "degradation_alpha_lambda", "degradation_by_fraction"):
        assert key in out
