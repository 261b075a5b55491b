"""Twin speed against NASA progpy 1.9.0 on the battery discharge model (BatteryCircuit, Euler, dt = 1 s).

Measured in one run: progpy's per-unit loop (its ``simulate_to_threshold``,
one cell at a time), progpy's vectorised path (``simulate_to`` with array
states), twinloop's array model at 10k, 100k and 1M cells (``advance``: a
cache-sized chunk of cells many steps at a time), and a 1000-sample end-of-discharge prediction: progpy's
``MonteCarlo.predict`` against ``twinloop.twins.predict.failure_times``.
Both sides run without process noise for the stepping rates and with each
one's own default process noise for the prediction. Rates are unit-steps per
second of wall time; ratios are twinloop over progpy.

With ``--accuracy``, also the pump-bearing twin's remaining useful life
against its emulator's ground truth (``twins.accuracy``; no progpy there).
With ``--fleet``, fleet simulation speed instead: every other option goes to
``twins.fleet_bench`` (one actor per twin, sharded Ray actors, the bare
vectorised model; JSON key ``sharded_ratio``; see its ``--help``).

    python -m twinloop.twins.bench [--quick] [--json] [--accuracy]
    python -m twinloop.twins.bench --fleet [fleet_bench options]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings
from typing import Any, Iterator

import numpy
from rich.console import Console
from rich.table import Table

from twinloop.twins.models.battery import BatteryCircuit
from twinloop.twins.predict import advance, failure_times

CURRENT_A = 2.0
DT = 1.0


def _progpy() -> Any:
    try:
        from progpy.models import BatteryCircuit as Theirs
    except ImportError:
        sys.exit("progpy is not installed: pip install 'twinloop[test]' (progpy 1.9.0 is the reference here)")
    return Theirs


def progpy_loop(cells: int) -> float:
    """progpy's own path for one cell at a time: simulate_to_threshold from full to end of discharge."""
    model = _progpy()(process_noise=0)
    load = model.InputContainer({"i": CURRENT_A})
    steps, start = 0, time.perf_counter()
    for _ in range(cells):
        with _quiet():
            result = model.simulate_to_threshold(lambda t, x=None: load, dt=DT, save_freq=1e9)
        steps += round(result.times[-1] / DT)
    return steps / (time.perf_counter() - start)


def progpy_vectorised(cells: int, steps: int) -> float:
    """progpy's simulate_to with array states: ``cells`` cells stepped together."""
    model = _progpy()(process_noise=0)
    x0 = model.initialize()
    x = model.StateContainer({k: numpy.full(cells, float(x0[k])) for k in x0.keys()})
    load = model.InputContainer({"i": numpy.full(cells, CURRENT_A)})
    start = time.perf_counter()
    with _quiet():
        model.simulate_to(steps * DT, lambda t, x=None: load, x=x, dt=DT, save_freq=1e9)
    return cells * steps / (time.perf_counter() - start)


def twinloop_rate(cells: int, steps: int, xp: Any = numpy) -> float:
    """twinloop's model: ``cells`` cells stepped ``steps`` times (``advance``, a cache-sized chunk at a time)."""
    model = BatteryCircuit()
    x = model.initial_state(cells, xp)
    u = {"i": xp.full(cells, CURRENT_A)}
    advance(model, x, u, DT, 1)  # warm up (and compile, on CuPy)
    _sync(xp)
    start = time.perf_counter()
    x = advance(model, x, u, DT, steps)
    model.threshold_met(x)
    _sync(xp)
    return cells * steps / (time.perf_counter() - start)


def progpy_montecarlo(samples: int) -> tuple[float, float]:
    """Seconds for progpy's MonteCarlo over ``samples`` samples of a full cell, and the median EOD."""
    from progpy.predictors import MonteCarlo
    from progpy.uncertain_data import ScalarData

    model = _progpy()()
    load = model.InputContainer({"i": CURRENT_A})
    start = time.perf_counter()
    with _quiet():
        result = MonteCarlo(model).predict(ScalarData(model.initialize()), lambda t, x=None: load, n_samples=samples,
                                           dt=DT, save_freq=1e9)
    seconds = time.perf_counter() - start
    return seconds, float(numpy.median([s["EOD"] for s in result.time_of_event]))


def twinloop_montecarlo(samples: int) -> tuple[float, float]:
    """Seconds for twinloop's failure_times over ``samples`` samples of a full cell, and the median EOD."""
    model = BatteryCircuit()
    start = time.perf_counter()
    ttf = failure_times(model, model.initial_state(samples), {"i": CURRENT_A}, DT, horizon=2e4)
    return time.perf_counter() - start, float(numpy.median(ttf))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """progpy 1.9.0 raises DeprecationWarnings about its own internal calls; they are not ours to fix."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def example_load(t: float) -> float:
    """progpy's example discharge profile (its examples/sim.py): 2, 1, 4, 2 then 3 A."""
    return 2.0 if t < 600 else 1.0 if t < 900 else 4.0 if t < 1800 else 2.0 if t < 3000 else 3.0


def accuracy(quick: bool) -> dict[str, Any]:
    """twinloop's ParticleFilter + failure_times against progpy's ParticleFilter + MonteCarlo, same data.

    A cell discharges under progpy's example load; its temperature and voltage
    are read every second with Gaussian noise (seeded). Both estimators start
    from the same cloud drawn from twinloop's prior (unknown charge, temperature
    near ambient), take the same samples, and at each prediction time predict
    the end of discharge under the known future load. Scored against the
    noiseless truth with twins.metrics.
    """
    from progpy.predictors import MonteCarlo
    from progpy.state_estimators import ParticleFilter as TheirFilter
    from progpy.uncertain_data import UnweightedSamples

    from twinloop.twins import metrics
    from twinloop.twins.estimate import ParticleFilter

    model = BatteryCircuit()
    noise = model.output_noise
    rng = numpy.random.default_rng(0)
    x, t, truth = model.initial_state(1), 0.0, []
    while not model.threshold_met(x)[0]:
        x = model.next_state(x, {"i": example_load(t + DT / 2)}, DT)
        t += DT
        out = model.output(x, {})
        truth.append((t, {k: float(out[k][0]) + rng.normal(0, noise[k]) for k in ("t", "v")}))
    eol = t
    times = [500.0, 1500.0, 2500.0] if quick else [500.0, 1000.0, 1500.0, 2000.0, 2500.0]
    particles = 300 if quick else 1000
    mc_samples = 50 if quick else 200

    ours = ParticleFilter(model, particles, seed=1)
    ours.update(0.0, {"i": 0.0}, {"t": model.params["Ta"], "v": float(model.voltage(model.initial_state(1))[0])})
    cloud = ours.samples()
    theirs_model = _progpy()(process_noise={k: v for k, v in model.process_noise.items()} | {"qcp": 0.0, "qcs": 0.0})
    start = [{k: float(cloud[k][j]) for k in ("tb", "qb", "qcp", "qcs")} for j in range(particles)]
    theirs = TheirFilter(theirs_model, UnweightedSamples(start, _type=theirs_model.StateContainer),
                         measurement_noise=dict(noise), num_particles=particles)
    load = lambda tt, x=None: theirs_model.InputContainer({"i": example_load(tt)})  # noqa: E731
    predictions: dict[str, list] = {"twinloop": [], "progpy": []}
    seconds = {"twinloop_estimate": 0.0, "progpy_estimate": 0.0, "twinloop_predict": 0.0, "progpy_predict": 0.0}
    for tk, z in truth:
        if tk > times[-1]:
            break
        u = example_load(tk - DT / 2)
        s0 = time.perf_counter()
        ours.update(tk, {"i": u}, z)
        s1 = time.perf_counter()
        with _quiet():
            theirs.estimate(tk, theirs_model.InputContainer({"i": u}), theirs_model.OutputContainer(z))
        s2 = time.perf_counter()
        seconds["twinloop_estimate"] += s1 - s0
        seconds["progpy_estimate"] += s2 - s1
        if tk in times:
            s0 = time.perf_counter()
            ttf = failure_times(model, ours.samples(), lambda tt: {"i": example_load(tt + DT / 2)}, DT,
                                horizon=2e4, t0=tk)
            s1 = time.perf_counter()
            with _quiet():
                result = MonteCarlo(theirs_model).predict(theirs.x, load, n_samples=mc_samples, dt=DT, t0=tk,
                                                          save_freq=1e9)
            s2 = time.perf_counter()
            seconds["twinloop_predict"] += s1 - s0
            seconds["progpy_predict"] += s2 - s1
            predictions["twinloop"].append(ttf[numpy.isfinite(ttf)])
            predictions["progpy"].append(numpy.array([e["EOD"] - tk for e in result.time_of_event
                                                      if e["EOD"] is not None]))
    out: dict[str, Any] = {"true_eod_s": eol, "prediction_times_s": times, "particles": particles,
                           "progpy_mc_samples": mc_samples, "twinloop_mc_samples": particles}
    for who, preds in predictions.items():
        out[who] = {
            "rmse_s": round(metrics.rmse(times, preds, eol), 1),
            "alpha_lambda_0.1_0.5": metrics.alpha_lambda(times, preds, eol, alpha=0.1, lam=0.5),
            "prognostic_horizon_s": metrics.prognostic_horizon(times, preds, eol, alpha=0.1),
            "median_eod_s": [round(tk + float(numpy.median(p)), 1) for tk, p in zip(times, preds)],
            "estimate_s": round(seconds[f"{who}_estimate"], 3), "predict_s": round(seconds[f"{who}_predict"], 3)}
    out["speedup"] = round((seconds["progpy_estimate"] + seconds["progpy_predict"])
                           / (seconds["twinloop_estimate"] + seconds["twinloop_predict"]), 1)
    return out


def _sync(xp: Any) -> None:
    if xp.__name__ == "cupy":
        xp.cuda.Stream.null.synchronize()


def run(quick: bool) -> dict[str, Any]:
    steps = 100 if quick else 400
    loop_cells = 3 if quick else 10
    mc_progpy = 25 if quick else 1000
    out: dict[str, Any] = {"model": "battery_circuit", "dt_s": DT, "current_a": CURRENT_A}
    out["progpy_loop_per_s"] = round(progpy_loop(loop_cells))
    out["progpy_vectorised_per_s"] = round(progpy_vectorised(10_000, steps))
    out["twinloop_per_s"] = {str(n): round(twinloop_rate(n, steps if n < 1_000_000 else max(steps // 4, 20)))
                             for n in (10_000, 100_000, 1_000_000)}
    best = max(out["twinloop_per_s"].values())
    out["loop_ratio"] = round(best / out["progpy_loop_per_s"], 1)
    out["vectorised_ratio"] = round(out["twinloop_per_s"]["10000"] / out["progpy_vectorised_per_s"], 2)
    out["vectorised_ratio_best"] = round(best / out["progpy_vectorised_per_s"], 2)
    progpy_s, progpy_eod = progpy_montecarlo(mc_progpy)
    ours_s, ours_eod = twinloop_montecarlo(1000)
    out["montecarlo"] = {"samples": 1000, "progpy_samples_run": mc_progpy,
                         "progpy_s": round(progpy_s * 1000 / mc_progpy, 2), "twinloop_s": round(ours_s, 3),
                         "progpy_median_eod_s": progpy_eod, "twinloop_median_eod_s": ours_eod}
    out["montecarlo_ratio"] = round(progpy_s * 1000 / mc_progpy / ours_s, 1)
    out["quick"] = quick
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m twinloop.twins.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (about a minute in all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--accuracy", action="store_true",
                        help="estimation + prediction accuracy against progpy on the same noisy data")
    parser.add_argument("--fleet", action="store_true",
                        help="fleet speed: one actor per twin, sharded Ray actors, the bare vectorised model; "
                             "the other options are fleet_bench's (python -m twinloop.twins.bench --fleet --help)")
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--fleet" in argv:
        from twinloop.twins.fleet_bench import main as fleet_main

        return fleet_main([a for a in argv if a != "--fleet"])
    args = parser.parse_args(argv)
    console = Console(stderr=args.json)
    if args.accuracy:
        from twinloop.twins.accuracy import FULL, QUICK, degradation_accuracy, degradation_table

        with console.status("battery discharge: both filters on the same samples, then predictions"):
            a = accuracy(args.quick)
        with console.status("pump bearing wear: the twin's RUL against the emulator's truth"):
            d = degradation_accuracy(**(QUICK if args.quick else FULL))
        if args.json:
            a.update({f"degradation_{k}": v for k, v in d.items()})
            print(json.dumps(a))
            return 0
        table = Table(title=f"End of discharge, true {a['true_eod_s']:.0f} s; predicted at "
                            f"{', '.join(f'{t:.0f}' for t in a['prediction_times_s'])} s")
        for col in ("", "RMSE s", "alpha-lambda (0.1, 0.5)", "prognostic horizon s", "median EOD s",
                    "estimate s", "predict s"):
            table.add_column(col, justify="right" if col else "left")
        for who in ("progpy", "twinloop"):
            r = a[who]
            table.add_row(who, f"{r['rmse_s']:.1f}", "pass" if r["alpha_lambda_0.1_0.5"] else "fail",
                          "-" if r["prognostic_horizon_s"] is None else f"{r['prognostic_horizon_s']:.0f}",
                          ", ".join(f"{v:.0f}" for v in r["median_eod_s"]), f"{r['estimate_s']:.2f}",
                          f"{r['predict_s']:.2f}")
        console.print(table)
        console.print(f"{a['particles']} particles each; progpy MonteCarlo {a['progpy_mc_samples']} samples, "
                      f"twinloop {a['twinloop_mc_samples']}; twinloop {a['speedup']:,}x faster in all")
        table, line = degradation_table(d)
        console.print(table)
        console.print(line)
        return 0
    with console.status("battery model: progpy and twinloop, stepping and Monte Carlo"):
        r = run(args.quick)
    if args.json:
        print(json.dumps(r))
        return 0
    table = Table(title="BatteryCircuit, Euler dt = 1 s: unit-steps per second (twinloop over progpy)")
    for col in ("path", "cells", "unit-steps/s", "vs progpy loop", "vs progpy vectorised"):
        table.add_column(col, justify="right" if col != "path" else "left")
    loop, vec = r["progpy_loop_per_s"], r["progpy_vectorised_per_s"]
    table.add_row("progpy loop", "1 at a time", f"{loop:,}", "1", "")
    table.add_row("progpy vectorised", "10,000", f"{vec:,}", f"{vec / loop:,.0f}", "1")
    for n, rate in r["twinloop_per_s"].items():
        table.add_row("twinloop", f"{int(n):,}", f"{rate:,}", f"{rate / loop:,.0f}",
                      f"{rate / vec:.2f}")
    console.print(table)
    mc = r["montecarlo"]
    note = "" if mc["progpy_samples_run"] == 1000 else f" (progpy ran {mc['progpy_samples_run']}, scaled linearly)"
    console.print(f"1000-sample end-of-discharge prediction: progpy MonteCarlo {mc['progpy_s']:.2f} s{note}, "
                  f"twinloop {mc['twinloop_s']:.3f} s: {r['montecarlo_ratio']:,}x; median EOD "
                  f"{mc['progpy_median_eod_s']:.0f} s vs {mc['twinloop_median_eod_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
