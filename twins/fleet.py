"""Fleet simulation on Ray: a few shard actors, each stepping many units as arrays many steps per call.

One actor per twin costs ~47 MB and ~0.7 s to start and ~1 ms a call, so a
fleet of 1M units is split into a few shards (one per CPU, or per GPU): a
``FleetShard`` actor owns a contiguous slice of the fleet's units (of one or
more groups) as the model's arrays and advances it ``steps_per_call`` steps
per call, a cache-sized chunk of units at a time (as ``predict.advance``).

- **Failure times** are recorded at the end of the step in which a unit first
  meets its model's threshold, as ``predict.failure_times`` and progpy's
  ``simulate_to_threshold`` do (resolution: one ``dt``). A failed unit is
  dropped from the arrays after the call it failed in.
- **Determinism:** a unit's initial states come from ``fleet_spec.draw``
  (seeded streams per block of units, whatever the split) and stepping has no
  noise, so a fleet gives the same ``FleetResult.outcome()`` with any shard count.
- **Checkpoints:** after each call a shard writes its arrays to
  ``<checkpoint_dir>/shard-NNNN.npz`` (temporary file, fsync, ``os.replace``).
  A shard Ray restarts after a crash restores it in ``__init__``; calls carry
  sequence numbers, so a call Ray retries after it was applied is answered
  from the checkpoint instead of being stepped twice. ``checkpoint_dir`` must
  be shared by the nodes when shards run on a cluster.
- **GPU:** a shard asks Ray for a GPU only where ``ray.cluster_resources()``
  reports one and the fleet's ``array`` is ``auto`` or ``cupy`` (an actor
  asking for a GPU Ray does not have would wait forever, with no error).
  Without one, both run NumPy and say so in the result's notes.
- **Metrics** (``ray.util.metrics``, tags ``fleet``, ``shard``, ``group``):
  ``twinloop_fleet_twin_steps_per_second``, ``twinloop_fleet_twin_steps_total``,
  ``twinloop_fleet_units_failed``, ``twinloop_fleet_failure_time_seconds`` and
  ``twinloop_fleet_rul_seconds`` (tag ``quantile``: p05, p50, p95; the shard's
  own units).
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy
import ray

from twinloop.errors import ConfigError, TwinError
from twinloop.twins.cluster import ensure_ray, first_line
from twinloop.twins.fleet_spec import (MAX_SHARDS, FleetPlan, FleetSource, FleetSpec, compile_fleet, draw,
                                        load_fleet)
from twinloop.twins.predict import CPU_CHUNK
from twinloop.twins.xp import named_module, to_numpy

#: Failure step of a unit that has not failed.
NEVER = numpy.iinfo(numpy.int32).max
QUANTILES = {"p05": 0.05, "p50": 0.50, "p95": 0.95}
READY_TIMEOUT_S = 120.0
CALL_TIMEOUT_S = 3600.0
#: Restarts Ray may make of one shard (and retries of one call) before the fleet gives up.
MAX_RESTARTS = 5

Slice = tuple[int, int, int]  # (group index, first unit, end unit) within the group


def split(plan: FleetPlan, shards: int) -> list[list[Slice]]:
    """Contiguous, near-equal ranges of the fleet's units (groups laid end to end), one list per shard."""
    total = plan.units
    layout: list[list[Slice]] = []
    for s in range(shards):
        a, b = s * total // shards, (s + 1) * total // shards
        parts, offset = [], 0
        for gi, g in enumerate(plan.groups):
            lo, hi = max(a, offset), min(b, offset + g.units)
            if lo < hi:
                parts.append((gi, lo - offset, hi - offset))
            offset += g.units
        layout.append(parts)
    return layout


def _quantile_steps(steps: numpy.ndarray, n: int) -> dict[str, int | None]:
    """Inverted-CDF quantiles (an actual unit's value) of ``n`` failure steps; None where NEVER."""
    if n == 0:
        return {k: None for k in QUANTILES}
    idx = sorted({max(0, math.ceil(q * n) - 1) for q in QUANTILES.values()})
    part = numpy.partition(steps, idx)
    out = {}
    for k, q in QUANTILES.items():
        v = int(part[max(0, math.ceil(q * n) - 1)])
        out[k] = None if v == NEVER else v
    return out


def _sig(x: float | None) -> float | None:
    """Six significant digits (None for a missing or infinite value): what a report shows."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.6g}")


def _float_quantiles(a: numpy.ndarray) -> dict[str, float | None]:
    if a.size == 0:
        return {k: None for k in QUANTILES}
    qs = numpy.quantile(a, list(QUANTILES.values()), method="inverted_cdf")
    return {k: _sig(float(v)) for k, v in zip(QUANTILES, qs)}


class _Part:
    """One group's slice in a shard: the still-running units' states, and every unit's failure step."""

    def __init__(self, group: int, start: int, stop: int, model: Any, xp: Any) -> None:
        self.group, self.start, self.stop, self.model, self.xp = group, start, stop, model, xp
        n = stop - start
        self.fail = numpy.full(n, NEVER, numpy.int32)      # every unit, host memory
        self.idx = xp.arange(n, dtype=xp.int64)            # running units (local index)
        self.first = xp.full(n, NEVER, dtype=xp.int32)     # running units' failure step (NEVER: none yet)
        self.x: dict[str, Any] = {}
        self.h0 = xp.zeros(0)                              # health at the start of the last call
        self.span = 0                                      # steps of the last call


class ShardCore:
    """The units one shard owns, stepped as arrays; plain class (no Ray), ``FleetShard`` wraps it.

    ``slices``: (group index, first unit, end unit) ranges of the plan's groups.
    ``checkpoint_dir``: where the shard's checkpoint lives (None: no checkpoints).
    ``array``: numpy, cupy or auto (``xp.named_module``). A checkpoint found
    there is restored if it belongs to this fleet and slice; one of another
    fleet is an error, never silently used.
    """

    def __init__(self, plan: FleetPlan, shard: int, slices: Sequence[Slice], checkpoint_dir: str | Path | None,
                 array: str = "numpy") -> None:
        self.plan, self.shard, self.slices = plan, shard, [tuple(s) for s in slices]
        self.xp = named_module(array)
        self.array = self.xp.__name__
        self.incarnation = uuid.uuid4().hex
        self.identity = {"fingerprint": plan.fingerprint(), "shard": shard, "slices": self.slices}
        self.path = Path(checkpoint_dir) / f"shard-{shard:04d}.npz" if checkpoint_dir is not None else None
        self.models = {gi: plan.groups[gi].build() for gi, _, _ in self.slices}
        self.seq, self.step = 0, 0
        self.last: dict[str, Any] | None = None
        self.restored = False
        self.parts = [_Part(gi, a, b, self.models[gi], self.xp) for gi, a, b in self.slices]
        if self.path is not None:
            for stale in self.path.parent.glob(f"{self.path.name}.*.tmp"):  # a write cut short by a crash
                stale.unlink(missing_ok=True)
        if self.path is not None and self.path.exists():
            self._restore()
        else:
            self._fresh()

    # --- state -------------------------------------------------------------------------------------------

    def _fresh(self) -> None:
        xp = self.xp
        for p in self.parts:
            g, n = self.plan.groups[p.group], p.stop - p.start
            x = p.model.initial_state(n, xp)
            drawn = draw(g, self.plan.seed, p.start, p.stop, {k: to_numpy(v) for k, v in x.items()})
            x.update({k: xp.asarray(v) for k, v in drawn.items()})
            p.x = x
            p.first = xp.where(p.model.threshold_met(x), xp.int32(0), xp.int32(NEVER)).astype(xp.int32)
            p.h0, p.span = p.model.health(x), 0
            self._compact(p)

    def _compact(self, p: _Part) -> None:
        """Record the failures of the last call and drop those units from the arrays."""
        done = p.first != NEVER
        if not bool(done.any()):
            return
        p.fail[to_numpy(p.idx[done])] = to_numpy(p.first[done])
        keep = ~done
        p.idx, p.first, p.h0 = p.idx[keep], p.first[keep], p.h0[keep]
        p.x = {k: v[keep] for k, v in p.x.items()}

    def _save(self) -> None:
        if self.path is None:
            return
        arrays: dict[str, Any] = {}
        for i, p in enumerate(self.parts):
            arrays[f"p{i}.fail"] = p.fail
            arrays[f"p{i}.idx"] = to_numpy(p.idx)
            arrays[f"p{i}.h0"] = to_numpy(p.h0)
            for k, v in p.x.items():
                arrays[f"p{i}.x.{k}"] = to_numpy(v)
        meta = {**self.identity, "seq": self.seq, "step": self.step, "last": self.last,
                "spans": [p.span for p in self.parts]}
        arrays["meta"] = numpy.array(json.dumps(meta))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            numpy.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _restore(self) -> None:
        xp = self.xp
        try:
            with numpy.load(self.path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                data = {k: z[k] for k in z.files if k != "meta"}
        except (OSError, ValueError, KeyError) as err:
            raise TwinError(f"shard {self.shard}: cannot read its checkpoint {self.path}: {err}") from err
        mine = json.loads(json.dumps(self.identity))
        if {k: meta.get(k) for k in mine} != mine:
            raise TwinError(f"shard {self.shard}: the checkpoint {self.path} is of another fleet or shard layout; "
                            f"remove it or use another checkpoint folder")
        self.seq, self.step, self.last = meta["seq"], meta["step"], meta["last"]
        for i, p in enumerate(self.parts):
            p.fail = data[f"p{i}.fail"]
            p.idx = xp.asarray(data[f"p{i}.idx"])
            p.h0 = xp.asarray(data[f"p{i}.h0"])
            p.x = {k: xp.asarray(data[f"p{i}.x.{k}"]) for k in p.model.states}
            p.first = xp.full(p.idx.shape[0], NEVER, dtype=xp.int32)
            p.span = meta["spans"][i]
        self.restored = True

    # --- stepping ----------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Who this incarnation is, where it stands and what it runs on."""
        return {"shard": self.shard, "incarnation": self.incarnation, "seq": self.seq, "step": self.step,
                "array": self.array, "restored": self.restored, "units": sum(b - a for _, a, b in self.slices)}

    def run(self, seq: int, steps: int) -> dict[str, Any]:
        """Apply call ``seq``: up to ``steps`` more steps (never past the horizon), then checkpoint.

        A call whose number was already applied (Ray retried it after a
        restart) returns that call's summary again and steps nothing.
        """
        if seq == self.seq and self.last is not None:
            return {**self.last, "incarnation": self.incarnation, "replayed": True}
        if seq != self.seq + 1:
            raise TwinError(f"shard {self.shard}: call {seq} is out of sequence (last applied: {self.seq})")
        steps = max(0, min(steps, self.plan.steps - self.step))
        start = time.perf_counter()
        stepped = 0
        for p in self.parts:
            stepped += self._advance(p, self.step, steps)
        self.step += steps
        self.seq = seq
        elapsed = time.perf_counter() - start
        failed = {}
        for p in self.parts:
            name = self.plan.groups[p.group].name
            failed[name] = failed.get(name, 0) + int((p.fail != NEVER).sum())
        self.last = {"shard": self.shard, "seq": seq, "step": self.step, "twin_steps": stepped,
                     "elapsed_s": elapsed, "failed": failed, "replayed": False}
        self._save()
        return {**self.last, "incarnation": self.incarnation}

    def _advance(self, p: _Part, s0: int, steps: int) -> int:
        xp, model, dt = self.xp, p.model, self.plan.dt
        n = int(p.idx.shape[0])
        p.span = steps
        if n == 0 or steps == 0:
            return 0
        p.h0 = model.health(p.x)
        g = self.plan.groups[p.group]
        u_seq = _inputs(g, s0, steps)
        size = CPU_CHUNK if xp is numpy else n
        with numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):  # failed units run on
            for a in range(0, n, size):
                sl = slice(a, min(a + size, n))
                xc = {k: v[sl] for k, v in p.x.items()}
                fc = p.first[sl]
                for j, u in enumerate(u_seq):
                    xc = model.next_state(xc, u, dt)
                    hit = model.threshold_met(xc)
                    xp.minimum(fc, xp.where(hit, xp.int32(s0 + j + 1), xp.int32(NEVER)), out=fc)
                for k, v in xc.items():
                    p.x[k][sl] = v
        self._compact(p)
        return n * steps

    def surviving(self, p: _Part) -> tuple[numpy.ndarray, numpy.ndarray]:
        """Health of ``p``'s running units now, and their RUL extrapolating the last call's health decline."""
        xp = self.xp
        h = p.model.health(p.x)
        if p.span == 0 or h.shape[0] == 0:
            return to_numpy(h), numpy.full(int(h.shape[0]), numpy.inf)
        with numpy.errstate(divide="ignore", invalid="ignore"):
            rate = (p.h0 - h) / (p.span * self.plan.dt)
            rul = xp.where(rate > 0, h / xp.where(rate > 0, rate, 1.0), xp.inf)
        return to_numpy(h), to_numpy(rul)

    def summary_quantiles(self) -> dict[str, dict[str, Any]]:
        """Per group of this shard: failure-time and survivor-RUL quantiles (seconds), for the metrics."""
        out: dict[str, dict[str, Any]] = {}
        for p in self.parts:
            name = self.plan.groups[p.group].name
            q = _quantile_steps(p.fail.copy(), p.fail.size)
            _, rul = self.surviving(p)
            out[name] = {"failure_time": {k: None if v is None else v * self.plan.dt for k, v in q.items()},
                         "rul": _float_quantiles(rul)}
        return out

    def result(self) -> list[dict[str, Any]]:
        """Every part: its range, failure steps (every unit) and survivors' health and RUL (in unit order)."""
        out = []
        for p in self.parts:
            health, rul = self.surviving(p)
            out.append({"group": p.group, "start": p.start, "stop": p.stop, "fail": p.fail,
                        "health": health, "rul": rul})
        return out


def _inputs(g: Any, s0: int, steps: int) -> list[dict[str, float]]:
    """The inputs of steps ``s0 .. s0 + steps - 1``, one dict per step (equal dicts shared)."""
    seen: dict[tuple[float, ...], dict[str, float]] = {}
    out = []
    for s in range(s0, s0 + steps):
        u = g.inputs_at(s)
        out.append(seen.setdefault(tuple(u.values()), u))
    return out


@ray.remote
class FleetShard:
    """``ShardCore`` as a Ray actor, with per-shard metrics."""

    def __init__(self, plan: FleetPlan, shard: int, slices: Sequence[Slice], checkpoint_dir: str | None,
                 array: str = "numpy") -> None:
        self.core = ShardCore(plan, shard, slices, checkpoint_dir, array)
        self._metrics = _Metrics(plan.fleet, shard)

    def ready(self) -> dict[str, Any]:
        return self.core.info()

    def run(self, seq: int, steps: int) -> dict[str, Any]:
        summary = self.core.run(seq, steps)
        if not summary["replayed"]:
            self._metrics.record(summary, self.core.summary_quantiles())
        return summary

    def result(self) -> list[dict[str, Any]]:
        return self.core.result()


class _Metrics:
    """The shard's Prometheus metrics through Ray's metrics agent."""

    def __init__(self, fleet: str, shard: int) -> None:
        from ray.util.metrics import Counter, Gauge

        self.tags = {"fleet": fleet, "shard": str(shard)}
        keys = ("fleet", "shard")
        self.rate = Gauge("twinloop_fleet_twin_steps_per_second", "twin-steps per second of the last call",
                          tag_keys=keys)
        self.steps = Counter("twinloop_fleet_twin_steps_total", "twin-steps stepped", tag_keys=keys)
        self.failed = Gauge("twinloop_fleet_units_failed", "units failed so far", tag_keys=(*keys, "group"))
        self.ttf = Gauge("twinloop_fleet_failure_time_seconds", "failure-time quantile of the shard's units "
                         "(set once known)", tag_keys=(*keys, "group", "quantile"))
        self.rul = Gauge("twinloop_fleet_rul_seconds", "remaining-useful-life quantile of the shard's running "
                         "units (health decline of the last call, extrapolated)", tag_keys=(*keys, "group", "quantile"))

    def record(self, summary: dict[str, Any], quantiles: dict[str, dict[str, Any]]) -> None:
        if summary["twin_steps"]:
            self.steps.inc(summary["twin_steps"], tags=self.tags)
        if summary["elapsed_s"] > 0:
            self.rate.set(summary["twin_steps"] / summary["elapsed_s"], tags=self.tags)
        for group, n in summary["failed"].items():
            self.failed.set(n, tags={**self.tags, "group": group})
        for group, q in quantiles.items():
            for name, gauge in (("failure_time", self.ttf), ("rul", self.rul)):
                for k, v in q[name].items():
                    if v is not None:
                        gauge.set(v, tags={**self.tags, "group": group, "quantile": k})


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


@dataclass
class GroupResult:
    """One group's outcome: failure-time distribution, failures over time, survivors at the horizon.

    Failure times are step ends (seconds from the start). A quantile past the
    horizon (fewer units failed than it needs) is None. ``survivor_rul_s``
    extrapolates each survivor's health decline over the last call linearly,
    a cheap estimate, optimistic for wear that accelerates.
    """

    name: str
    model: str
    units: int
    failed: int
    fraction_failed: float
    failure_time_s: dict[str, float | None]
    mean_failure_time_s: float | None  # of the failed units
    bin_width_s: float
    failures_per_bin: list[int]
    survivors: int
    survivor_health: dict[str, float | None]
    survivor_rul_s: dict[str, float | None]


@dataclass
class FleetResult:
    """A fleet's simulated outcome (``outcome()``: depends only on the fleet file) and how the run went."""

    fleet: str
    seed: int
    horizon_s: float
    dt_s: float
    steps: int
    units: int
    array: str
    groups: list[GroupResult]
    notes: list[str]
    shards: int
    wall_s: float
    stepping_s: float
    twin_steps: int
    restarts: int
    events: list[str] = field(default_factory=list)

    @property
    def twin_steps_per_s(self) -> float:
        """Units stepped per second of wall time while the shards stepped (actor start-up not counted)."""
        return self.twin_steps / self.stepping_s if self.stepping_s > 0 else 0.0

    def outcome(self) -> dict[str, Any]:
        """The deterministic part: the same fleet file (seed) gives the same dict, whatever the shards."""
        return {"fleet": self.fleet, "seed": self.seed, "horizon_s": self.horizon_s, "dt_s": self.dt_s,
                "steps": self.steps, "units": self.units, "array": self.array,
                "groups": [vars(g).copy() for g in self.groups], "notes": list(self.notes)}

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: ``outcome()`` plus ``run`` (shards, timings, restarts), which differs from run to run."""
        return {**self.outcome(), "run": {
            "shards": self.shards, "wall_s": round(self.wall_s, 3), "stepping_s": round(self.stepping_s, 3),
            "twin_steps": self.twin_steps, "twin_steps_per_s": round(self.twin_steps_per_s),
            "restarts": self.restarts, "events": list(self.events)}}


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
    groups = _summarise(plan, [p for shard in parts for p in shard])
    return FleetResult(plan.fleet, plan.seed, plan.horizon, plan.dt, plan.steps, plan.units,
                       "+".join(modules), groups, notes, shards, time.perf_counter() - began, stepping,
                       twin_steps, restarts, events)


def _summarise(plan: FleetPlan, parts: list[dict[str, Any]]) -> list[GroupResult]:
    out = []
    for gi, g in enumerate(plan.groups):
        mine = sorted((p for p in parts if p["group"] == gi), key=lambda p: p["start"])
        fail = numpy.full(g.units, NEVER, numpy.int32)
        for p in mine:
            fail[p["start"]:p["stop"]] = p["fail"]
        health = numpy.concatenate([p["health"] for p in mine]) if mine else numpy.zeros(0)
        rul = numpy.concatenate([p["rul"] for p in mine]) if mine else numpy.zeros(0)
        out.append(group_result(plan, gi, fail, health, rul))
    return out


def group_result(plan: FleetPlan, gi: int, fail: numpy.ndarray, health: numpy.ndarray,
                 rul: numpy.ndarray) -> GroupResult:
    """A group's summary from every unit's failure step and the survivors' health and RUL (unit order)."""
    g, dt = plan.groups[gi], plan.dt
    hit = fail[fail != NEVER].astype(numpy.int64)
    n_failed = int(hit.size)
    q = _quantile_steps(fail.copy(), g.units)
    bins = numpy.bincount(numpy.minimum(hit * plan.bins // plan.steps, plan.bins - 1),
                          minlength=plan.bins) if n_failed else numpy.zeros(plan.bins, numpy.int64)
    return GroupResult(
        name=g.name, model=g.model, units=g.units, failed=n_failed, fraction_failed=_sig(n_failed / g.units),
        failure_time_s={k: None if v is None else _sig(v * dt) for k, v in q.items()},
        mean_failure_time_s=_sig(int(hit.sum()) * dt / n_failed) if n_failed else None,
        bin_width_s=_sig(plan.horizon / plan.bins), failures_per_bin=[int(c) for c in bins],
        survivors=int(health.size), survivor_health=_float_quantiles(health), survivor_rul_s=_float_quantiles(rul))


def run_local(plan: FleetPlan, slices: Sequence[Slice] | None = None, array: str = "numpy") -> list[GroupResult]:
    """The whole fleet (or ``slices`` of it) in this process, no Ray and no checkpoints: the bare vectorised path."""
    core = ShardCore(plan, 0, slices or split(plan, 1)[0], None, array)
    seq = 0
    while core.step < plan.steps:
        seq += 1
        core.run(seq, plan.steps_per_call)
    return _summarise(plan, core.result())
