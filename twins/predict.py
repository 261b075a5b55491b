"""Monte Carlo time to failure: step every sample of a state cloud in one array call until its threshold.

The samples are the model's unit axis, so a 1000-sample prediction is one
``next_state`` call per time step on NumPy or CuPy, not 1000 simulations.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy

from twinloop.twins.model import Arrays, DegradationModel
from twinloop.twins.xp import array_module, to_numpy

Loading = Mapping[str, Any] | Callable[[float], Mapping[str, Any]]


#: Units stepped together on the CPU: small enough that a step's temporaries stay in cache, large
#: enough that NumPy's per-call overhead is spread thin (measured best near 10-20k on 2 cores).
CPU_CHUNK = 16_384


def _chunks(n: int, xp: Any, chunk: int | None) -> list[slice]:
    size = chunk or (CPU_CHUNK if xp is numpy else n)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _part(values: Mapping[str, Any], sl: slice, n: int) -> dict[str, Any]:
    """The slice of every per-unit array (scalars and arrays of another length pass through)."""
    return {k: v[sl] if getattr(v, "shape", ())[:1] == (n,) else v for k, v in values.items()}


def advance(model: DegradationModel, x: Arrays, inputs: Mapping[str, Any], dt: float, steps: int,
            chunk: int | None = None) -> Arrays:
    """``steps`` steps of every unit under constant ``inputs``, a cache-sized chunk of units at a time.

    Stepping one chunk many times before the next keeps its arrays in cache,
    which is what makes large fleets as fast per unit as small ones on a CPU.
    """
    xp = array_module(*x.values())
    n = next(iter(x.values())).shape[0]
    parts = []
    for sl in _chunks(n, xp, chunk):
        part, u = _part(x, sl, n), _part(inputs, sl, n)
        for _ in range(steps):
            part = model.next_state(part, u, dt)
        parts.append(part)
    return parts[0] if len(parts) == 1 else {k: xp.concatenate([p[k] for p in parts]) for k in parts[0]}


def failure_times(model: DegradationModel, x: Arrays, loading: Loading, dt: float, horizon: float,
                  t0: float = 0.0, rng: Any = None, process_noise: bool = True,
                  chunk: int | None = None) -> numpy.ndarray:
    """Time (from ``t0``) at which each sample of ``x`` first meets the model's threshold; inf past ``horizon``.

    ``loading``: the future inputs, constant or a function of time. With
    ``process_noise`` each step adds the model's random-walk noise (sigma *
    sqrt(dt)), drawn from ``rng`` (default: seeded 0). A sample is counted at
    the end of the step in which it crosses, as progpy's simulate_to_threshold
    does. Samples are stepped a cache-sized chunk at a time (see ``advance``).
    """
    xp = array_module(*x.values())
    rng = rng if rng is not None else xp.random.default_rng(0)
    n = next(iter(x.values())).shape[0]
    def load(sl: slice) -> Loading:
        if callable(loading):
            return lambda t: _part(loading(t), sl, n)
        return _part(loading, sl, n)

    return numpy.concatenate([_failure_times(model, _part(x, sl, n), load(sl), dt, horizon, t0, rng, process_noise)
                              for sl in _chunks(n, xp, chunk)])


def _failure_times(model: DegradationModel, x: Arrays, loading: Loading, dt: float, horizon: float, t0: float,
                   rng: Any, process_noise: bool) -> numpy.ndarray:
    xp = array_module(*x.values())
    n = next(iter(x.values())).shape[0]
    noisy = [(k, s * math.sqrt(dt)) for k, s in model.process_noise.items()] if process_noise else []
    done = model.threshold_met(x)
    ttf = xp.where(done, 0.0, xp.inf)
    for k in range(1, int(math.ceil(horizon / dt)) + 1):
        if bool(done.all()):
            break
        u = loading(t0 + (k - 1) * dt) if callable(loading) else loading
        x = model.next_state(x, u, dt)
        if noisy:
            draws = rng.standard_normal((len(noisy), n))  # one call for every noisy state
            for row, (key, scale) in enumerate(noisy):
                draws[row] *= scale
                x[key] = xp.maximum(x[key] + draws[row], 0.0)
        now = model.threshold_met(x) & ~done
        ttf[now] = k * dt
        done |= now
    return to_numpy(ttf)
