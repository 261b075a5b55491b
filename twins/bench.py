"""Twin speed against NASA progpy 1.9.0 on the battery discharge model (BatteryCircuit, Euler, dt = 1 s).

Measured in one run: progpy's per-unit loop (its ``simulate_to_threshold``,
one cell at a time), progpy's vectorised path (``simulate_to`` with array
states), twinloop's array model at 10k, 100k and 1M cells (``advance``: a
cache-sized chunk of cells many steps at a time), and a 1000-sample end-of-discharge prediction: progpy's
``MonteCarlo.predict`` against ``twinloop.twins.predict.failure_times``.
Both sides run without process noise for the stepping rates and with each
one's own default process noise for the prediction. Rates are unit-steps per
second of wall time; ratios are twinloop over progpy.

    python -m twinloop.twins.bench [--quick] [--json]
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
    args = parser.parse_args(argv)
    console = Console(stderr=args.json)
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
