"""The units one shard owns, stepped as arrays many steps per call; no Ray (``fleet_actor`` wraps it).

A shard owns a contiguous slice of the fleet's units (of one or more groups)
as the model's arrays and advances it ``steps_per_call`` steps per call, a
cache-sized chunk of units at a time (as ``predict.advance``).

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

``run_local`` steps a whole fleet in this process: the bare vectorised path,
which ``twinloop verify`` re-simulates with.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy

from twinloop.errors import TwinError
from twinloop.twins.fleet_result import NEVER, GroupResult, float_quantiles, quantile_steps, summarise
from twinloop.twins.fleet_spec import FleetPlan, draw
from twinloop.twins.predict import CPU_CHUNK
from twinloop.twins.xp import named_module, to_numpy

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
            q = quantile_steps(p.fail.copy(), p.fail.size)
            _, rul = self.surviving(p)
            out[name] = {"failure_time": {k: None if v is None else v * self.plan.dt for k, v in q.items()},
                         "rul": float_quantiles(rul)}
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


def run_local(plan: FleetPlan, slices: Sequence[Slice] | None = None, array: str = "numpy") -> list[GroupResult]:
    """The whole fleet (or ``slices`` of it) in this process, no Ray and no checkpoints: the bare vectorised path."""
    core = ShardCore(plan, 0, slices or split(plan, 1)[0], None, array)
    seq = 0
    while core.step < plan.steps:
        seq += 1
        core.run(seq, plan.steps_per_call)
    return summarise(plan, core.result())

