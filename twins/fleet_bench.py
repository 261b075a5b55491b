"""Fleet speed: one Ray actor per twin, sharded actors (``twins.fleet``), and the bare vectorised model.

The same fleet in each: pump bearings (``pump_bearing``) with per-unit wear
rates and initial wear, load cycling 100/60 % every 12 h, hourly steps. Rates
are twin-steps (one unit advanced one step, threshold checked) per second of
wall time.

- **one actor per twin:** ``--actors`` actors (50; 10 with ``--quick``), each
  owning one unit and stepping it one step per call, as a per-device twin is
  driven (calls queued without waiting; start-up timed apart).
- **sharded:** ``twins.fleet.simulate`` with one shard per CPU Ray reports,
  checkpoints on; the rate counts stepping only, ``wall`` also the shards' start.
- **bare:** ``twins.fleet_shard.ShardCore`` on every unit in this process: no Ray, no
  checkpoints (the shards' own stepping code).

``sharded_ratio`` is sharded over bare at the largest fleet run (the issue's
figure: all the shards, one per CPU, against the bare path on one core);
``sharded_ratio_per_core`` divides the sharded rate by the shards it used
(``sharded_shards``) first, so it is what Ray costs per core. Without
``--quick`` it also times 1M units over one simulated year at hourly steps
(8760 steps) on the shards (``--no-year`` skips it).

    python -m twinloop.twins.fleet_bench [--quick] [--json] [--no-year] [--actors N] [--units N[,N...]]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from typing import Any

from rich.console import Console
from rich.table import Table

import ray

from twinloop.twins.cluster import ensure_ray, shutdown_ray
from twinloop.twins.fleet import simulate
from twinloop.twins.fleet_shard import ShardCore, split
from twinloop.twins.fleet_spec import FleetPlan, FleetSpec, compile_fleet

DT = "1 h"


def plan_for(units: int, steps: int, calls: int = 4) -> FleetPlan:
    """The benchmark fleet: ``units`` pumps over ``steps`` hourly steps, checkpointed ``calls`` times."""
    per_call = max(1, math.ceil(steps / calls))
    spec = FleetSpec.model_validate({
        "fleet": "bench-pumps", "seed": 1, "horizon": f"{steps} h", "dt": DT, "shards": "auto",
        "array": "numpy", "checkpoint_every": f"{per_call} h",
        "groups": [{"name": "pumps", "model": "pump_bearing", "units": units, "params": {"k": 1.2e-8},
                    "vary": {"k": {"lognormal": 0.3}, "wear": {"uniform": [0.0, 0.3]}},
                    "profile": {"speed": 1480, "load": {"cycle": [100, 60], "every": "12 h"}}}]})
    return compile_fleet(spec)


@ray.remote
class _OneTwin:
    """One unit of the benchmark fleet, stepped one step per call."""

    def __init__(self, plan: FleetPlan, unit: int) -> None:
        self.core = ShardCore(plan, 0, [(0, unit, unit + 1)], None)
        self.part = self.core.parts[0]
        self.group = plan.groups[0]
        self.step_no = 0

    def ready(self) -> bool:
        return True

    def step(self) -> bool:
        model, p = self.part.model, self.part
        p.x = model.next_state(p.x, self.group.inputs_at(self.step_no), self.core.plan.dt)
        self.step_no += 1
        return bool(model.threshold_met(p.x)[0])


def per_twin_actors(actors: int, steps: int) -> dict[str, Any]:
    plan = plan_for(actors, steps)
    start = time.perf_counter()
    handles = [_OneTwin.remote(plan, i) for i in range(actors)]
    ray.get([h.ready.remote() for h in handles])
    startup = time.perf_counter() - start
    start = time.perf_counter()
    refs = [h.step.remote() for _ in range(steps) for h in handles]
    ray.get(refs)
    elapsed = time.perf_counter() - start
    for h in handles:
        ray.kill(h)
    return {"actors": actors, "steps": steps, "startup_s": round(startup, 2), "seconds": round(elapsed, 3),
            "twin_steps_per_s": round(actors * steps / elapsed)}


def bare(plan: FleetPlan) -> dict[str, Any]:
    core = ShardCore(plan, 0, split(plan, 1)[0], None)
    done, seq = 0, 0
    start = time.perf_counter()
    while core.step < plan.steps:
        seq += 1
        done += core.run(seq, plan.steps_per_call)["twin_steps"]
    elapsed = time.perf_counter() - start
    return {"seconds": round(elapsed, 3), "twin_steps": done, "twin_steps_per_s": round(done / elapsed)}


def sharded(plan: FleetPlan) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="twinloop-fleet-bench-") as folder:
        r = simulate(plan, folder)
    return {"shards": r.shards, "seconds": round(r.stepping_s, 3), "wall_s": round(r.wall_s, 3),
            "twin_steps": r.twin_steps, "twin_steps_per_s": round(r.twin_steps_per_s),
            "wall_twin_steps_per_s": round(r.twin_steps / r.wall_s), "failed": r.groups[0].failed}


def steps_for(units: int, budget: float) -> int:
    """Hourly steps giving about ``budget`` twin-steps (a multiple of 24, at most a year)."""
    return int(min(8760, max(48, round(budget / units / 24) * 24)))


def run(quick: bool, actors: int | None, year: bool, units: list[int] | None = None) -> dict[str, Any]:
    ensure_ray()
    sizes = units or ([1_000, 10_000, 100_000] if quick else [1_000, 10_000, 100_000, 1_000_000])
    budget = 1e8 if quick else 1e9
    out: dict[str, Any] = {"model": "pump_bearing", "dt_s": 3600.0, "cpus": os.cpu_count(),
                           "ray_cpus": ray.cluster_resources().get("CPU"), "quick": quick}
    n_actors = actors or (10 if quick else 50)
    out["per_twin_actors"] = per_twin_actors(n_actors, 50 if quick else 200)
    rows = []
    for n in sizes:
        plan = plan_for(n, steps_for(n, budget))
        rows.append({"units": n, "steps": plan.steps, "bare": bare(plan), "sharded": sharded(plan)})
    out["rows"] = rows
    last = rows[-1]
    out["largest_units"] = last["units"]
    out["sharded_ratio"] = round(last["sharded"]["twin_steps_per_s"] / last["bare"]["twin_steps_per_s"], 3)
    out["sharded_shards"] = last["sharded"]["shards"]
    out["sharded_ratio_per_core"] = round(out["sharded_ratio"] / out["sharded_shards"], 3)
    out["sharded_ratio_wall"] = round(last["sharded"]["wall_twin_steps_per_s"] / last["bare"]["twin_steps_per_s"], 3)
    out["sharded_over_per_twin_actors"] = round(last["sharded"]["twin_steps_per_s"]
                                                / out["per_twin_actors"]["twin_steps_per_s"], 1)
    out["year"] = None
    if year and not quick:
        plan = plan_for(1_000_000, 8760, calls=20)
        r = sharded(plan)
        out["year"] = {"units": 1_000_000, "steps": 8760, **r}
    return out


def show(out: dict[str, Any], console: Console) -> None:
    a = out["per_twin_actors"]
    t = Table(title=f"fleet twin-steps/s ({out['model']}, dt 1 h, {out['cpus']} CPUs)")
    for col in ("path", "units", "steps", "twin-steps/s", "s", "incl. start-up/s"):
        t.add_column(col, justify="left" if col == "path" else "right")
    t.add_row("one actor per twin", f"{a['actors']:,}", f"{a['steps']:,}", f"{a['twin_steps_per_s']:,}",
              f"{a['seconds']:.2f}", f"start-up {a['startup_s']:.1f} s")
    for r in out["rows"]:
        b, s = r["bare"], r["sharded"]
        t.add_row("bare vectorised", f"{r['units']:,}", f"{r['steps']:,}", f"{b['twin_steps_per_s']:,}",
                  f"{b['seconds']:.2f}", "")
        t.add_row(f"sharded ({s['shards']})", f"{r['units']:,}", f"{r['steps']:,}", f"{s['twin_steps_per_s']:,}",
                  f"{s['seconds']:.2f}", f"{s['wall_twin_steps_per_s']:,}")
    if out["year"]:
        y = out["year"]
        t.add_row(f"1 year, sharded ({y['shards']})", f"{y['units']:,}", f"{y['steps']:,}",
                  f"{y['twin_steps_per_s']:,}", f"{y['seconds']:.1f}", f"{y['wall_twin_steps_per_s']:,}")
    console.print(t)
    console.print(f"sharded ({out['sharded_shards']} shards) / bare (1 core) at {out['largest_units']:,} units: "
                  f"{out['sharded_ratio']} (with start-up {out['sharded_ratio_wall']}); per shard (core): "
                  f"{out['sharded_ratio_per_core']}; sharded / one actor per twin: "
                  f"{out['sharded_over_per_twin_actors']:,}x")
    if out["year"]:
        y = out["year"]
        console.print(f"1M units x 8760 hourly steps: {y['wall_s']:.1f} s wall ({y['seconds']:.1f} s stepping), "
                      f"{y['failed']:,} failed within the year")


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


def _sizes(text: str) -> list[int]:
    return sorted({_positive(part) for part in text.split(",")})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m twinloop.twins.fleet_bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller fleets, under a minute")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--no-year", action="store_true", help="skip 1M units x 8760 hourly steps")
    ap.add_argument("--actors", type=_positive, default=None,
                    help="actors for one actor per twin (default 50, quick 10)")
    ap.add_argument("--units", type=_sizes, default=None, metavar="N[,N...]",
                    help="fleet sizes to time (default 1k, 10k, 100k and, without --quick, 1M)")
    args = ap.parse_args(argv)
    try:
        out = run(args.quick, args.actors, not args.no_year, args.units)
    finally:
        shutdown_ray()
    if args.json:
        print(json.dumps(out))
    else:
        show(out, Console(width=max(100, Console().width)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
