"""A particle filter for a whole shard of devices: units x particles in one flat array.

:class:`twinloop.twins.estimate.ParticleFilter` filters one device, its
particles on the model's unit axis. A fleet shard of ``U`` devices with ``P``
particles each would need ``U`` filters and ``U`` model calls per sample;
:class:`BatchParticleFilter` lays all ``U * P`` particles out unit-major on the
same axis (unit ``u`` owns ``[u * P:(u + 1) * P]``), so ``next_state`` and
``output`` run once for the shard (on NumPy once per cache-sized block of
units, see ``block_units``), and every per-unit step (weights, ESS,
resampling, Liu-West, summaries, RUL percentiles) is a reduction over the
``(units, P)`` view: no Python loop over units, on NumPy or CuPy alike.

Speed (``scripts/bench_batch_filter.py``, 1000 units x 1000 particles, one
update + resample, 2-core CPU VM): ~1.7x a loop of 1000 ParticleFilters, and
~8x at 100 particles, where per-call overhead dominates the loop.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy

from twinloop.errors import TwinError
from twinloop.twins.estimate import ParticleFilter, forecast
from twinloop.twins.model import Arrays, DegradationModel
from twinloop.twins.predict import CPU_CHUNK, failure_times
from twinloop.twins.xp import to_numpy


def systematic_indices(xp: Any, w: Any, offsets: Any) -> Any:
    """Systematic resampling of every row of ``w`` (rows, P) at once: the particle each position picks.

    Row r's positions are ``(offsets[r] + j) / P``, j = 0..P-1, and position j
    picks the first particle whose cumulative weight reaches it (clipped to
    P - 1), exactly as ``searchsorted(cumsum(w), positions)`` in
    :class:`ParticleFilter`. Both sequences are sorted, so instead of a binary
    search per position each particle counts the positions it covers
    (``floor(c * P - offset)``, corrected by one either way so the comparison
    is the same floating-point one), and a histogram of those counts summed
    along the row gives the picks: linear, no Python loop over rows.
    """
    rows, n = w.shape
    cum = xp.cumsum(w, axis=1)
    off = offsets[:, None]
    covered = xp.floor(cum * n - off)                              # last j with (off + j) / n <= cum, +-1
    covered = covered + ((off + (covered + 1)) / n <= cum)
    covered = covered - ((off + covered) / n > cum)
    count = xp.clip(covered + 1, 0, n).astype(xp.int64)           # positions at or below each cum
    # position j picks #{i: count_i <= j}: histogram of the counts, summed along the row
    hist = xp.bincount((count + (n + 1) * xp.arange(rows)[:, None]).ravel(), minlength=rows * (n + 1))
    return xp.minimum(xp.cumsum(hist.reshape(rows, n + 1)[:, :n], axis=1), n - 1)


class BatchParticleFilter:
    """SIR filter of ``units`` devices at once, each with its own ``particles``-member cloud.

    The same filter as :class:`ParticleFilter`, unit by unit: weights,
    effective sample size and the resampling decision (ESS < P/2) are per
    unit, systematic resampling and the Liu-West kernel (per-unit covariance,
    discount 0.95, the ``>= 0`` clamp and the 1e-9 regularisation of the
    correlation) touch only the units that degenerated. With ``units=1`` the
    random draws come in the same order and shapes as ParticleFilter's, so the
    two clouds agree to floating-point rounding (bit for bit where the batched
    matmul sums as the single one does).

    The shard shares one clock: every ``update`` is at one time ``t`` for all
    units (a fleet sampled together, e.g. by one poller). A unit with nothing
    at that time gets NaN readings and keeps its weights; its cloud is still
    forecast, so it stays in step with the others.

    Inputs and readings are per unit: arrays of shape ``(units,)`` (repeated to
    every particle of the unit) or scalars (the same for all). Results
    (``estimate``, ``predict_rul``, ``last_*``) are NumPy arrays of shape
    ``(units,)``: the filter's arrays stay on the device, only these small
    summaries come back to the host.

    ``block_units``: units filtered per array call. On CuPy the default is the
    whole shard, one call. On NumPy it is a cache-sized block of units
    (``predict.CPU_CHUNK`` particles, as ``failure_times`` steps them): a step
    makes some 40 temporaries the size of the block, and whole-shard ones
    (8 MB each at 1000 x 1000) cost more in page faults and cache misses than
    the loop over blocks costs in calls. Pass ``block_units=units`` for one
    call on NumPy too.
    """

    discount = ParticleFilter.discount

    def __init__(self, model: DegradationModel, units: int, particles: int = 1000, seed: int = 0,
                 xp: Any = numpy, block_units: int | None = None) -> None:
        if units < 1 or particles < 1:
            raise TwinError(f"batch particle filter: units={units} and particles={particles} must be >= 1")
        self.model, self.units, self.particles, self.xp = model, units, particles, xp
        if block_units is None:
            block_units = max(1, CPU_CHUNK // particles) if xp is numpy else units
        self.block_units = max(1, min(block_units, units))
        self.rng = xp.random.default_rng(seed)
        #: States, flat (units * particles,), unit-major; the filter owns them and updates them in place.
        self.x: Arrays | None = None
        #: Normalised weights per unit, (units, particles).
        self.w = xp.full((units, particles), 1.0 / particles)
        self.t: float | None = None
        #: Which units resampled in the last update, (units,) bool.
        self.resampled = xp.zeros(units, dtype=bool)
        self._innovation: dict[str, Any] = {}
        self._prediction: dict[str, Any] = {}
        self._prediction_std: dict[str, Any] = {}

    # -- per-unit values onto the flat particle axis ------------------------------------------

    def _per_unit(self, value: Any) -> Any:
        """A scalar or a ``(units,)`` array as an ``(units,)`` float array of the filter's module."""
        v = self.xp.asarray(value, dtype=float)
        if v.ndim == 0:
            return v + self.xp.zeros(self.units)
        if v.shape != (self.units,):
            raise TwinError(f"batch particle filter: got shape {v.shape}, want () or ({self.units},)")
        return v

    def expand(self, values: Mapping[str, Any], first: int = 0, last: int | None = None) -> dict[str, Any]:
        """Inputs for units ``first:last`` of the flat cloud: ``(units,)`` arrays repeated to each unit's
        particles, scalars as they are."""
        out: dict[str, Any] = {}
        for key, value in values.items():
            if getattr(value, "ndim", 0) == 0:
                out[key] = value
            else:
                out[key] = self.xp.repeat(self._per_unit(value)[first:last], self.particles)
        return out

    def _view(self, v: Any, units: int) -> Any:
        return self.xp.broadcast_to(v, (units * self.particles,)).reshape(units, self.particles)

    # -- filtering ------------------------------------------------------------------------------

    def _init(self, measured: Mapping[str, Any]) -> None:
        m, xp, n = self.model, self.xp, self.units * self.particles
        overrides: dict[str, Any] = {}
        read = [k for k in measured if k in m.states]
        if read:  # a measured state starts at its reading; a unit without one at the model's default
            fresh = m.initial_state(n, xp)
            for key in read:
                value = xp.repeat(self._per_unit(measured[key]), self.particles)
                overrides[key] = xp.where(xp.isnan(value), fresh[key], value)
        for key, (low, high) in m.prior.items():
            overrides[key] = low + (high - low) * self.rng.random(n)
        self.x = {k: xp.broadcast_to(v, (n,)).copy() for k, v in m.initial_state(n, xp, **overrides).items()}

    def update(self, t: float, inputs: Mapping[str, Any], measured: Mapping[str, Any]) -> None:
        """Propagate every cloud to the shard's time ``t`` under ``inputs`` and weigh each unit by its readings.

        ``measured``: per-unit readings, ``(units,)`` arrays or scalars; NaN
        means that unit has no reading of that output now and gets no
        likelihood from it (with none at all its weights stay as they were).
        """
        xp, U = self.xp, self.units
        first = self.x is None
        if first:
            self._init(measured)
        dt = 0.0 if first or t <= self.t else t - self.t
        self.t = t
        readings = {k: self._per_unit(v) for k, v in measured.items() if k in self.model.outputs}
        self._innovation = {k: xp.empty(U) for k in readings}
        self._prediction = {k: xp.empty(U) for k in readings}
        self._prediction_std = {k: xp.empty(U) for k in readings}
        self.resampled = xp.zeros(U, dtype=bool)
        for lo in range(0, U, self.block_units):
            self._update_block(lo, min(lo + self.block_units, U), dt, inputs, readings)

    def _update_block(self, lo: int, hi: int, dt: float, inputs: Mapping[str, Any],
                      readings: Mapping[str, Any]) -> None:
        """The update of units ``lo:hi``: forecast, weigh, and resample those that degenerated."""
        m, xp, P, n = self.model, self.xp, self.particles, hi - lo
        flat = slice(lo * P, hi * P)
        x = {k: v[flat] for k, v in self.x.items()}
        u = self.expand(inputs, lo, hi)
        if dt > 0:
            x = forecast(m, x, u, dt, self.rng)
        predicted = m.output(x, u)
        w = self.w[lo:hi]
        loglik = xp.zeros((n, P))
        seen = xp.zeros(n, dtype=bool)
        for key, value in readings.items():
            value = value[lo:hi]
            missing = xp.isnan(value)
            seen = seen | ~missing
            sigma = m.output_noise.get(key, 1.0)
            y = self._view(predicted[key], n)
            mean = (w * y).sum(axis=1)
            spread = (w * (y - mean[:, None]) ** 2).sum(axis=1)
            self._prediction[key][lo:hi] = mean
            self._prediction_std[key][lo:hi] = xp.sqrt(xp.maximum(spread, 0.0) + sigma * sigma)
            self._innovation[key][lo:hi] = (value - mean) / sigma
            loglik = loglik - xp.where(missing[:, None], 0.0, 0.5 * ((value[:, None] - y) / sigma) ** 2)
        new = w * xp.exp(loglik - loglik.max(axis=1, keepdims=True))
        w = xp.where(seen[:, None], new / new.sum(axis=1, keepdims=True), w)
        degenerate = 1.0 / (w ** 2).sum(axis=1) < P / 2
        rows = xp.nonzero(degenerate)[0]
        if rows.size:
            x = self._resample(x, w, rows)
            w[rows] = 1.0 / P
        for key, v in x.items():
            self.x[key][flat] = v
        self.w[lo:hi] = w
        self.resampled[lo:hi] = degenerate

    def _resample(self, x: Arrays, w: Any, rows: Any) -> Arrays:
        """Systematic resampling plus the Liu-West kernel of the block's units ``rows``, all in one go."""
        xp, P = self.xp, self.particles
        n = w.shape[0]
        R = int(rows.size)
        w = w[rows]                                                               # (R, P)
        keys = list(self.model.prior)
        d = len(keys)
        if keys:
            hidden = xp.stack([self._view(x[k], n)[rows] for k in keys], axis=1)  # (R, d, P)
            mean = xp.matmul(hidden, w[:, :, None])[:, :, 0]                       # (R, d)
            centred = hidden - mean[:, :, None]
            cov = xp.matmul(centred * w[:, None, :], centred.transpose(0, 2, 1))   # (R, d, d)
            scale = xp.sqrt(xp.maximum(xp.diagonal(cov, axis1=1, axis2=2), 1e-300))
            corr = cov / (scale[:, :, None] * scale[:, None, :]) + 1e-9 * xp.eye(d)
            root = scale[:, :, None] * xp.linalg.cholesky(corr)                    # cov = root @ root^T
        local = systematic_indices(xp, w, self.rng.random(R))
        src = (rows[:, None] * P + local).ravel()
        if keys:
            a = (3 * self.discount - 1) / (2 * self.discount)
            h = math.sqrt(1 - a * a)
            kernel = xp.matmul(root, self.rng.standard_normal((R, d, P)))          # (R, d, P)
        out = {}
        for key, v in x.items():
            moved = v[src]
            if key in self.model.prior:
                i = keys.index(key)
                moved = xp.maximum(a * moved.reshape(R, P) + (1 - a) * mean[:, i, None] + h * kernel[:, i],
                                   0.0).ravel()
            if R < n:  # the block's other units keep their particles
                v = v.copy()
                v[(rows[:, None] * P + xp.arange(P)).ravel()] = moved
                moved = v
            out[key] = moved
        return out

    # -- results --------------------------------------------------------------------------------

    @property
    def last_innovation(self) -> dict[str, numpy.ndarray]:
        """Per output, each unit's (reading - prediction) / sigma at the last update; NaN without a reading."""
        return {k: to_numpy(v) for k, v in self._innovation.items()}

    @property
    def last_prediction(self) -> dict[str, numpy.ndarray]:
        """Per output, each unit's weighted mean prediction at the last update (before reweighting)."""
        return {k: to_numpy(v) for k, v in self._prediction.items()}

    @property
    def last_prediction_std(self) -> dict[str, numpy.ndarray]:
        """Per output, 1 sigma of each unit's prediction: its cloud's spread and the sensor noise together."""
        return {k: to_numpy(v) for k, v in self._prediction_std.items()}

    def cloud(self, unit: int) -> tuple[Arrays, Any]:
        """A copy of unit ``unit``'s particles and weights, e.g. to hand it to a single ParticleFilter."""
        sl = slice(unit * self.particles, (unit + 1) * self.particles)
        return {k: v[sl].copy() for k, v in self.x.items()}, self.w[unit].copy()

    def estimate(self) -> dict[str, numpy.ndarray]:
        """Each unit's weighted mean and standard deviation of every state and of health, ``(units,)`` each."""
        if self.x is None:
            return {}
        xp, out = self.xp, {}
        for key, v in dict(self.x, health=self.model.health(self.x)).items():
            v = self._view(v, self.units)
            mean = (self.w * v).sum(axis=1)
            out[key] = to_numpy(mean)
            out[f"{key}_std"] = to_numpy(xp.sqrt(xp.maximum((self.w * (v - mean[:, None]) ** 2).sum(axis=1), 0.0)))
        return out

    def predict_rul(self, inputs: Mapping[str, Any], horizon_s: float | None = None,
                    steps: int = 200) -> dict[str, Any]:
        """Each unit's weighted 5/50/95 % time to failure under constant per-unit ``inputs``.

        One ``failure_times`` call steps the whole shard's cloud, ``steps``
        deterministic steps over the horizon; NaN where a percentile does not
        fail within it. Unlike ``rul_percentiles`` there is no second, finer
        pass for clouds that all fail early (that span differs by unit), so
        the resolution is ``horizon_s / steps``: pass a shorter horizon or
        more steps for finer percentiles.
        """
        if self.x is None:
            return {}
        U, P = self.units, self.particles
        horizon = horizon_s or self.model.rul_horizon_s
        ttf = failure_times(self.model, dict(self.x), self.expand(inputs), horizon / steps, horizon,
                            process_noise=False).reshape(U, P)
        w = to_numpy(self.w)
        order = numpy.argsort(ttf, axis=1)
        ttf_sorted = numpy.take_along_axis(ttf, order, axis=1)
        cdf = numpy.cumsum(numpy.take_along_axis(w, order, axis=1), axis=1)
        out: dict[str, Any] = {}
        for q, name in ((5, "rul_p05_s"), (50, "rul_p50_s"), (95, "rul_p95_s")):
            at = numpy.minimum((cdf < q / 100).sum(axis=1), P - 1)    # searchsorted(cdf, q), row by row
            value = ttf_sorted[numpy.arange(U), at]
            out[name] = numpy.where(numpy.isfinite(value), value, numpy.nan)
        out["p_fail_in_horizon"] = (w * numpy.isfinite(ttf)).sum(axis=1)
        out["horizon_s"] = horizon
        return out
