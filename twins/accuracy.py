"""RUL accuracy of a degradation twin against its emulator's ground truth (no progpy: its models have none).

The pump of ``scenarios/pump_bearing_wear.yaml``: rated speed and load, a
sample every 10 min, a new bearing worn until its vibration reaches 7.1 mm/s.
Each unit is a seeded ``PumpDevice`` whose bearing draws its own wear rate
``k`` (lognormal, 20 %), which no sensor reads. For every unit:

* **Truth.** A second device built with the same seed is stepped to failure
  (the model's ``threshold_met`` on the device's true state); the crossing is
  then located inside its last step by bisection on the exact-step model, so
  the true end of life ``eol`` is exact, and the true RUL at ``t`` is ``eol - t``.
* **Twin.** A ``ParticleFilter`` over the ``pump_bearing`` model (the filter
  ``DeviceTwin`` runs; its prior spans 0.3..3 times the nominal ``k``) takes
  the device's speed, load and noisy vibration at every sample. At the first
  sample at or after each fraction of the true life it reports the 5/50/95 %
  RUL under the present inputs (``predict_rul``, what ``DeviceTwin.estimate``
  reports) and a RUL distribution: its equally weighted cloud (``samples``)
  stepped to the threshold by ``failure_times`` without process noise, at
  ``predict_dt_s``.

Scored with ``twins.metrics`` (Saxena et al. 2010), ``t_p = 0`` (monitoring
starts with the new bearing) so lambda is the fraction of life: per unit RMSE,
alpha-lambda, prognostic horizon (alpha of the true EOL), relative accuracy and
convergence; per fraction of life, across units, the RMSE and bias of the
reported p50, the share of units passing alpha-lambda there, the median
relative accuracy and how often the reported 5..95 % interval holds the truth.

    degradation_accuracy(units=40, particles=1000)   # a plain dict, seconds throughout

``python -m twinloop.twins.bench --accuracy`` prints it after the battery
table (``QUICK`` and ``FULL`` are its two sizes). The emulator runs the twin's
own model with only ``k`` hidden: no model-form error, so these numbers are
what the filter itself achieves, not what a real bearing would allow.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy
from rich.table import Table

from twinloop.rigs.emulators.pump import PumpDevice
from twinloop.twins import metrics
from twinloop.twins.estimate import ParticleFilter
from twinloop.twins.models.pump_bearing import PumpBearingWear
from twinloop.twins.predict import failure_times

#: The operating point and sampling of scenarios/pump_bearing_wear.yaml.
OPERATING_POINT = {"speed": 1480.0, "load": 100.0}
SAMPLE_S = 600.0
FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: As the battery half of ``twins.bench --accuracy``: alpha 0.1, lambda 0.5, beta 0.5.
ALPHA, LAMBDA, BETA = 0.1, 0.5, 0.5
OUTPUTS = ("vibration",)
#: The sizes ``twins.bench --accuracy`` runs, with and without ``--quick``.
#: Both at DeviceTwin's default 1000 particles: fewer lose pumps (300: 2 of 40 seeds, 200: 8, 100: 14),
#: their cloud collapsing onto a wrong wear rate within the first samples and never recovering.
QUICK = {"units": 5, "particles": 1000}
FULL = {"units": 40, "particles": 1000}
HOUR = 3600.0


def _device(seed: int) -> PumpDevice:
    device = PumpDevice(seed=seed)
    for name, value in OPERATING_POINT.items():
        device.write(name, value)
    return device


def true_end_of_life(seed: int, sample_s: float = SAMPLE_S, limit_s: float = 1e8) -> float:
    """Seconds from new to the failure threshold of device ``seed`` at the operating point.

    A device built with ``seed`` (so the same hidden ``k`` as the one the twin
    watches) is stepped ``sample_s`` at a time until its true state meets the
    model's threshold; the crossing inside that last step is then bisected on
    the model's exact step to well under a millisecond.
    """
    device = _device(seed)
    model, u = device.model, device.inputs()
    t = 0.0
    while True:
        before = device.state
        device.step(sample_s)
        if bool(model.threshold_met(device.state)[0]):
            break
        t += sample_s
        if t > limit_s:
            raise RuntimeError(f"pump seed {seed} did not fail within {limit_s:g} s")
    low, high = 0.0, sample_s  # not failed after `low`, failed after `high`
    while high - low > 1e-4:
        mid = 0.5 * (low + high)
        if bool(model.threshold_met(model.next_state(before, u, mid))[0]):
            high = mid
        else:
            low = mid
    return t + high


def _num(value: float | None, digits: int = 1) -> float | None:
    """Rounded, with None for missing or non-finite values (so the dict is plain JSON)."""
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def run_unit(seed: int, particles: int, fractions: Sequence[float] = FRACTIONS, sample_s: float = SAMPLE_S,
             predict_dt_s: float = 3600.0) -> dict[str, Any]:
    """One pump watched by the twin from new to its last prediction time; predictions and truth, in seconds."""
    eol = true_end_of_life(seed, sample_s)
    steps = [math.ceil(f * eol / sample_s - 1e-9) for f in fractions]  # first sample at or after f * eol
    if sorted(set(steps)) != steps or steps[0] < 1 or steps[-1] * sample_s >= eol:
        raise ValueError(f"fractions {list(fractions)} must rise and fall on distinct samples before the "
                         f"end of life ({eol:.0f} s) at {sample_s:g} s sampling")
    device = _device(seed)
    model = PumpBearingWear()
    pf = ParticleFilter(model, particles, seed=seed)
    out: dict[str, Any] = {"seed": seed, "k_ratio": device.k / model.params["k"], "eol_s": eol,
                           "times_s": [], "true_rul_s": [], "rul_p05_s": [], "rul_p50_s": [], "rul_p95_s": [],
                           "samples": []}
    due = iter(steps)
    next_due = next(due)
    for n in range(1, steps[-1] + 1):
        device.step(sample_s)
        t = n * sample_s
        inputs = {name: device.read(name) for name in model.inputs}
        pf.update(t, inputs, {name: device.read(name) for name in OUTPUTS})
        if n != next_due:
            continue
        reported = pf.predict_rul(inputs)
        rul = failure_times(model, pf.samples(), inputs, predict_dt_s, model.rul_horizon_s, process_noise=False)
        out["times_s"].append(t)
        out["true_rul_s"].append(eol - t)
        for key in ("rul_p05_s", "rul_p50_s", "rul_p95_s"):
            out[key].append(math.inf if reported[key] is None else reported[key])
        out["samples"].append(rul)
        next_due = next(due, None)
    return out


def score_unit(unit: dict[str, Any], alpha: float = ALPHA, lam: float = LAMBDA, beta: float = BETA) -> dict[str, Any]:
    """twins.metrics on one unit's RUL distributions, t_p = 0 (the bearing's start of life)."""
    times, preds, eol = unit["times_s"], unit["samples"], unit["eol_s"]
    return {"rmse_s": metrics.rmse(times, preds, eol),
            "alpha_lambda": metrics.alpha_lambda(times, preds, eol, alpha, lam, beta, t_p=0.0),
            "ph_s": metrics.prognostic_horizon(times, preds, eol, alpha, beta),
            "relative_accuracy": metrics.relative_accuracy(times, preds, eol, lam, t_p=0.0),
            "convergence_s": metrics.convergence(times, preds, eol, t_p=0.0)}


def degradation_accuracy(units: int = 10, particles: int = 1000, fractions: Sequence[float] = FRACTIONS,
                         sample_s: float = SAMPLE_S, predict_dt_s: float = 3600.0, alpha: float = ALPHA,
                         lam: float = LAMBDA, beta: float = BETA, first_seed: int = 1) -> dict[str, Any]:
    """The pump-bearing twin's RUL against the emulator's truth over ``units`` seeded pumps; a plain dict.

    Units are seeds ``first_seed .. first_seed + units - 1`` (device and filter
    alike), so the result is reproducible. Times are seconds. A unit whose last
    prediction misses has no prognostic horizon; it counts as 0 in the median.
    """
    start = time.perf_counter()
    runs = [run_unit(first_seed + i, particles, fractions, sample_s, predict_dt_s) for i in range(units)]
    scores = [score_unit(r, alpha, lam, beta) for r in runs]
    true = numpy.array([r["true_rul_s"] for r in runs])                     # (units, fractions)
    p05, p50, p95 = (numpy.array([r[k] for r in runs]) for k in ("rul_p05_s", "rul_p50_s", "rul_p95_s"))
    error = p50 - true
    covered = (p05 <= true) & (true <= p95)
    by_fraction = []
    for j, f in enumerate(fractions):
        passed = [metrics.alpha_lambda(r["times_s"], r["samples"], r["eol_s"], alpha, f, beta, t_p=0.0)
                  for r in runs]
        ra = [metrics.relative_accuracy(r["times_s"], r["samples"], r["eol_s"], f, t_p=0.0) for r in runs]
        by_fraction.append({
            "fraction": f, "true_rul_median_s": _num(float(numpy.median(true[:, j]))),
            "rmse_p50_s": _num(float(numpy.sqrt(numpy.mean(error[:, j] ** 2)))),
            "bias_p50_s": _num(float(numpy.mean(error[:, j]))),
            "alpha_lambda_pass": sum(passed) / units,
            "relative_accuracy_median": _num(float(numpy.median([math.nan if a is None else a for a in ra])), 3),
            "coverage_90": float(covered[:, j].mean()),
            "width_90_median_s": _num(float(numpy.median(p95[:, j] - p05[:, j])))})
    horizons = [s["ph_s"] for s in scores]
    return {
        "model": "pump_bearing", "device": "pump", "units": units, "particles": particles, "sample_s": sample_s,
        "operating_point": dict(OPERATING_POINT), "fractions": list(fractions), "alpha": alpha, "lambda": lam,
        "beta": beta,
        "rul_rmse_s": _num(float(numpy.sqrt(numpy.mean(error ** 2)))),
        "ph_s": _num(float(numpy.median([h or 0.0 for h in horizons]))),
        "ph_fraction_of_life": _num(float(numpy.median([(h or 0.0) / r["eol_s"] for h, r in zip(horizons, runs)])), 3),
        "ph_units": sum(h is not None for h in horizons),
        "alpha_lambda": sum(s["alpha_lambda"] for s in scores) / units,
        "relative_accuracy": _num(float(numpy.median([math.nan if s["relative_accuracy"] is None
                                                      else s["relative_accuracy"] for s in scores])), 3),
        "coverage_90": float(covered.mean()),
        "by_fraction": by_fraction,
        "by_unit": [{"seed": r["seed"], "k_ratio": round(r["k_ratio"], 4), "eol_s": _num(r["eol_s"]),
                     "times_s": r["times_s"], "true_rul_s": [_num(v) for v in r["true_rul_s"]],
                     **{k: [_num(v) for v in r[k]] for k in ("rul_p05_s", "rul_p50_s", "rul_p95_s")},
                     "rmse_s": _num(s["rmse_s"]), "alpha_lambda": s["alpha_lambda"], "ph_s": _num(s["ph_s"]),
                     "relative_accuracy": _num(s["relative_accuracy"], 3), "convergence_s": _num(s["convergence_s"])}
                    for r, s in zip(runs, scores)],
        "wall_s": round(time.perf_counter() - start, 2),
    }


def degradation_table(result: dict[str, Any]) -> tuple[Table, str]:
    """A rich table of ``degradation_accuracy``'s result by fraction of life (hours), and a summary line."""
    r = result
    lives = [u["eol_s"] / HOUR for u in r["by_unit"]]
    table = Table(title=f"Pump bearing RUL, {r['model']} twin against the emulator's truth: {r['units']} units, "
                        f"true life {min(lives):.0f}-{max(lives):.0f} h; {r['particles']} particles, "
                        f"a sample every {r['sample_s'] / 60:.0f} min")
    for col in ("life", "true RUL h", "p50 RMSE h", "p50 bias h", "rel. accuracy",
                f"alpha-lambda ({r['alpha']:g}) pass", "5-95 % holds truth", "5-95 % width h"):
        table.add_column(col, justify="right")
    hours = lambda v: "-" if v is None else f"{v / HOUR:.1f}"  # noqa: E731
    for row in r["by_fraction"]:
        ra = row["relative_accuracy_median"]
        table.add_row(f"{row['fraction']:.0%}", hours(row["true_rul_median_s"]), hours(row["rmse_p50_s"]),
                      f"{row['bias_p50_s'] / HOUR:+.1f}", "-" if ra is None else f"{ra:.3f}",
                      f"{row['alpha_lambda_pass']:.0%}", f"{row['coverage_90']:.0%}",
                      hours(row["width_90_median_s"]))
    n = r["units"]
    line = (f"Medians across units except RMSE and bias (p50 minus truth, + foresees failure too late). "
            f"All predictions: RUL RMSE {hours(r['rul_rmse_s'])} h; prognostic horizon (alpha {r['alpha']:g} "
            f"of EOL) median {hours(r['ph_s'])} h, {r['ph_fraction_of_life']:.0%} of life "
            f"({r['ph_units']}/{n} units have one); "
            f"alpha-lambda ({r['alpha']:g}, {r['lambda']:g}) {round(r['alpha_lambda'] * n)}/{n} units pass; "
            f"5-95 % interval holds the truth in {r['coverage_90']:.0%} of predictions; {r['wall_s']:.1f} s. "
            f"The emulator runs the twin's own model with only k hidden: no model-form error.")
    return table, line
