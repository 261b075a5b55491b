"""Fleet simulation on Ray: a few shard actors, each stepping many units as arrays many steps per call.

One actor per twin costs ~47 MB and ~0.7 s to start and ~1 ms a call, so a
fleet of 1M units is split into a few shards (one per CPU, or per GPU): a
``FleetShard`` actor (``fleet_actor``) owns a contiguous slice of the fleet's
units and steps them (``fleet_shard``, where failure times, determinism and
checkpoints are described); ``simulate`` here places the shards, drives
their calls, retries a shard Ray restarted, and sums up the outcome
(``fleet_result``).

- **GPU:** a shard asks Ray for a GPU only where ``ray.cluster_resources()``
  reports one and the fleet's ``array`` is ``auto`` or ``cupy`` (an actor
  asking for a GPU Ray does not have would wait forever, with no error).
  Without one, both run NumPy and say so in the result's notes.

The names the shard and result modules define are importable from here too.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import ray

from twinloop.errors import ConfigError, TwinError
from twinloop.twins.cluster import ensure_ray, first_line
from twinloop.twins.fleet_actor import FleetShard
from twinloop.twins.fleet_result import NEVER, QUANTILES, FleetResult, GroupResult, group_result, summarise
from twinloop.twins.fleet_shard import ShardCore, Slice, run_local, split
from twinloop.twins.fleet_spec import MAX_SHARDS, FleetPlan, FleetSource, FleetSpec, compile_fleet, load_fleet

__all__ = ["CALL_TIMEOUT_S", "MAX_RESTARTS", "NEVER", "QUANTILES", "READY_TIMEOUT_S", "FleetProgress", "FleetResult",
           "FleetShard", "GroupResult", "ShardCore", "Slice", "clear_checkpoints", "group_result", "run_local",
           "simulate", "split"]

READY_TIMEOUT_S = 120.0
CALL_TIMEOUT_S = 3600.0
#: Restarts Ray may make of one shard (and retries of one call) before the fleet gives up.
MAX_RESTARTS = 5


@dataclass(frozen=True)
class FleetProgress:
    """Passed to ``simulate``'s ``progress`` after every shard call."""

    shard: int
    seq: int
    calls_done: int
    calls_total: int
    steps_done: int           # this shard's simulated steps
    steps_total: int
    failed: int               # units failed so far, every shard's last report
    elapsed_s: float
    actor_names: tuple[str, ...]
    restarts: int


def _plan_of(spec: FleetPlan | FleetSource | FleetSpec | str | Path) -> FleetPlan:
    if isinstance(spec, FleetPlan):
        return spec
    if isinstance(spec, FleetSource):
        return spec.plan
    if isinstance(spec, FleetSpec):
        return compile_fleet(spec)
    return load_fleet(spec).plan


def _placement(plan: FleetPlan) -> tuple[int, float, float, str, list[str]]:
    """Shards, CPUs and GPUs per shard, the shards' array setting, and notes, from what Ray reports."""
    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))
    notes = []
    use_gpu = plan.array in ("auto", "cupy") and gpus >= 1
    if plan.array != "numpy" and not use_gpu:
        # never ask Ray for a GPU it does not have: the actor would wait forever, with no error
        notes.append(f"array {plan.array}: the Ray cluster reports no GPU ({cpus:g} CPU, {gpus:g} GPU), "
                     "so the shards ran NumPy")
    if plan.shards is not None and not 1 <= plan.shards <= MAX_SHARDS:
        raise ConfigError(f"shards must be a whole number from 1 to {MAX_SHARDS}, got {plan.shards!r}", key="shards")
    shards = plan.shards if plan.shards is not None else max(1, int(gpus) if use_gpu else int(cpus))
    shards = max(1, min(shards, plan.units))
    cpu_each = min(1.0, cpus / shards) if cpus > 0 else 0.0
    gpu_each = min(1.0, gpus / shards) if use_gpu else 0.0
    array = ("cupy" if plan.array == "cupy" else "auto") if use_gpu else "numpy"
    return shards, cpu_each, gpu_each, array, notes


def clear_checkpoints(folder: Path, remove_folder: bool = True) -> None:
    """Remove the shards' checkpoint files (only those) from ``folder``, and the folder if that empties it."""
    folder = Path(folder)
    for f in folder.glob("shard-*.npz*"):
        if f.name.endswith(".npz") or f.name.endswith(".tmp"):
            f.unlink(missing_ok=True)
    if remove_folder and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def simulate(spec: FleetPlan | FleetSource | FleetSpec | str | Path, checkpoint_dir: str | Path,
             address: str | None = None, progress: Callable[[FleetProgress], None] | None = None, *,
             resume: bool = False) -> FleetResult:
    """Simulate a fleet on Ray (a local Ray on loopback, or the cluster at ``address``).

    ``spec``: a fleet file's path, or a loaded/compiled fleet. Shard
    checkpoints go to ``checkpoint_dir`` (cleared first unless ``resume``:
    then a fleet interrupted with the same shard layout goes on from its
    checkpoints). ``progress`` is called after every shard call.
    """
    plan = _plan_of(spec)
    ensure_ray(address)
    began = time.perf_counter()  # wall time counts the shards' start, not Ray's
    shards, cpu_each, gpu_each, array, notes = _placement(plan)
    folder = Path(checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if not resume:
        clear_checkpoints(folder, remove_folder=False)
    layout = split(plan, shards)
    token = uuid.uuid4().hex[:8]
    names = tuple(f"twinloop-fleet/{plan.fleet}/{token}/shard-{i}" for i in range(shards))
    actors = [FleetShard.options(name=names[i], num_cpus=cpu_each, num_gpus=gpu_each, max_restarts=MAX_RESTARTS,
                                 max_task_retries=MAX_RESTARTS).remote(plan, i, layout[i], str(folder), array)
              for i in range(shards)]
    try:
        try:
            infos = ray.get([a.ready.remote() for a in actors], timeout=READY_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise TwinError(f"fleet '{plan.fleet}': the shards did not start within {READY_TIMEOUT_S:.0f} s; "
                            f"each asks Ray for {cpu_each:g} CPU and {gpu_each:g} GPU, and Ray has "
                            f"{ray.available_resources()} free") from None
        except ray.exceptions.RayError as err:
            raise TwinError(f"fleet '{plan.fleet}': a shard failed to start: {first_line(err)}") from err
        return _drive(plan, actors, infos, names, notes, progress, began)
    finally:
        for a in actors:
            try:
                ray.kill(a, no_restart=True)
            except ray.exceptions.RayError:
                pass


def _drive(plan: FleetPlan, actors: list[Any], infos: list[dict[str, Any]], names: tuple[str, ...],
           notes: list[str], progress: Callable[[FleetProgress], None] | None, began: float) -> FleetResult:
    shards = len(actors)
    modules = sorted({i["array"] for i in infos})
    if "cupy" in modules and "numpy" in modules:
        notes.append("some shards ran CuPy and some NumPy (a GPU node without CuPy)")
    elif modules == ["numpy"] and plan.array != "numpy" and not notes:
        notes.append("array auto: a GPU was reserved but CuPy is not usable there, so the shards ran NumPy")
    incarnation = [i["incarnation"] for i in infos]
    seq = [i["seq"] for i in infos]
    step = [i["step"] for i in infos]
    per_call = plan.steps_per_call
    calls_total = shards * math.ceil(plan.steps / per_call)
    calls_done = sum(math.ceil(s / per_call) for s in step)
    failed: dict[int, int] = {}
    pending: dict[Any, tuple[int, int]] = {}
    restarts, events, twin_steps = 0, [], 0

    def submit(i: int, attempt: int = 0) -> None:
        pending[actors[i].run.remote(seq[i] + 1, per_call)] = (i, attempt)

    start = time.perf_counter()
    for i in range(shards):
        if step[i] < plan.steps:
            submit(i)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=CALL_TIMEOUT_S)
        if not ready:
            raise TwinError(f"fleet '{plan.fleet}': no shard answered within {CALL_TIMEOUT_S:.0f} s")
        i, attempt = pending.pop(ready[0])
        try:
            s = ray.get(ready[0])
        except (ray.exceptions.ActorUnavailableError, ray.exceptions.RayActorError) as err:
            if attempt >= MAX_RESTARTS:
                raise TwinError(f"fleet '{plan.fleet}': shard {i} failed {attempt + 1} times: "
                                f"{first_line(err)}") from err
            time.sleep(min(2.0, 0.2 * 2 ** attempt))
            submit(i, attempt + 1)
            continue
        except ray.exceptions.RayTaskError as err:
            raise TwinError(f"fleet '{plan.fleet}': shard {i} failed: {first_line(err)}") from err
        if s["incarnation"] != incarnation[i]:
            restarts += 1
            incarnation[i] = s["incarnation"]
            events.append(f"shard {i} was restarted by Ray and resumed from its checkpoint "
                          f"(call {s['seq']}, step {s['step']})")
        if not s["replayed"]:
            twin_steps += s["twin_steps"]
        seq[i], step[i] = s["seq"], s["step"]
        failed[i] = sum(s["failed"].values())
        calls_done += 1
        if step[i] < plan.steps:
            submit(i)
        if progress is not None:
            progress(FleetProgress(i, s["seq"], calls_done, calls_total, step[i], plan.steps, sum(failed.values()),
                                   time.perf_counter() - began, names, restarts))
    stepping = time.perf_counter() - start
    parts = ray.get([a.result.remote() for a in actors], timeout=CALL_TIMEOUT_S)
    groups = summarise(plan, [p for shard in parts for p in shard])
    return FleetResult(plan.fleet, plan.seed, plan.horizon, plan.dt, plan.steps, plan.units,
                       "+".join(modules), groups, notes, shards, time.perf_counter() - began, stepping,
                       twin_steps, restarts, events)

