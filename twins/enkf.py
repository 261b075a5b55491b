"""Ensemble Kalman filter state and parameter estimation, and RUL prediction, over any DegradationModel.

A drop-in alternative to :class:`twinloop.twins.estimate.ParticleFilter`: the
same constructor shape, ``update``, ``estimate``, ``predict_rul``,
``last_innovation``, ``last_prediction`` (and ``last_prediction_std``), so the
twin actor can run either. Members are the model's unit axis, so one
``next_state`` call forecasts the whole ensemble on NumPy or CuPy.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy

from twinloop.twins.model import Arrays, DegradationModel
from twinloop.twins.estimate import forecast, rul_percentiles, summarise
from twinloop.twins.predict import failure_times


class EnsembleKalmanFilter:
    """Stochastic ensemble Kalman filter with perturbed observations.

    Evensen, "Sequential data assimilation with a nonlinear quasi-geostrophic
    model using Monte Carlo methods to forecast error statistics", J. Geophys.
    Res. 99(C5), 1994; with the perturbed observations of Burgers, van Leeuwen
    & Evensen, "Analysis scheme in the ensemble Kalman filter", Mon. Weather
    Rev. 126, 1998, without which the analysed ensemble's spread is too small.

    Forecast: every member steps through the model's ``next_state`` and gets
    the model's random-walk ``process_noise`` (sigma * sqrt(dt)), as the
    particle filter's particles do. Analysis, for the outputs measured at this
    sample (finite readings of outputs the model has; a NaN or absent one is
    left out, and with none left the forecast stands)::

        x_a = x_f + K (y + eps - H(x_f)),   K = C_xy (C_yy + R)^-1,   eps ~ N(0, R)

    with ``C_xy`` and ``C_yy`` the ensemble covariances of the states with the
    predicted outputs and of the predicted outputs, and ``R`` the model's
    ``output_noise`` squared. ``H`` is the model's own ``output`` applied to
    every member, so a nonlinear output function needs no Jacobian (the
    ensemble's statistics linearise it; Houtekamer & Mitchell, Mon. Weather
    Rev. 126, 1998, section 2). The update is a linear regression of the states
    on the outputs, exact for Gaussian ensembles and linear outputs and an
    approximation otherwise: the particle filter stays the reference for
    strongly non-Gaussian posteriors (a bounded state piled against its limit).

    Parameters come for free: the update moves every state the ensemble
    correlates with the outputs, so a model that carries a per-unit parameter
    as a state (the power module's ``r_ca`` and ``k_ref``, the pump bearing's
    ``k``) has it estimated online with the physical state ("augmented state";
    Evensen, "The ensemble Kalman filter for combined state and parameter
    estimation", IEEE Control Systems 29(3), 2009). A parameter the data says
    nothing about (``k_ref`` over minutes) keeps roughly its prior spread.

    States the model lists in ``prior`` start uniform over it; a state that is
    also a measured output starts at the reading plus a draw of its sensor
    noise; the rest at ``initial_state``'s values. States the particle filter
    keeps non-negative (the ``process_noise`` and ``prior`` keys) are clipped at
    zero after the forecast noise and after each analysis.
    """

    def __init__(self, model: DegradationModel, n_members: int = 200, seed: int = 0,
                 xp: Any = numpy) -> None:
        if n_members < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {n_members}")
        self.model, self.n, self.xp = model, int(n_members), xp
        self.rng = xp.random.default_rng(seed)
        self.x: Arrays | None = None
        self.t: float | None = None
        self.last_innovation: dict[str, float] = {}
        self.last_prediction: dict[str, float] = {}
        #: 1-sigma of each prediction: the ensemble's spread of the output and the sensor noise together.
        self.last_prediction_std: dict[str, float] = {}
        #: The states kept >= 0, as the particle filter keeps them.
        self.nonnegative = [k for k in model.states if k in model.process_noise or k in model.prior]

    # -- assimilation ---------------------------------------------------------------------------

    def _init(self, readings: Mapping[str, float]) -> None:
        m, xp = self.model, self.xp
        overrides: dict[str, Any] = {}
        for key, value in readings.items():
            if key in m.states:
                overrides[key] = value + m.output_noise.get(key, 0.0) * self.rng.standard_normal(self.n)
        for key, (low, high) in m.prior.items():
            overrides[key] = low + (high - low) * self.rng.random(self.n)
        self.x = m.initial_state(self.n, xp, **overrides)

    def _clip(self, x: Arrays) -> Arrays:
        for key in self.nonnegative:
            x[key] = self.xp.maximum(x[key], 0.0)
        return x

    def update(self, t: float, inputs: Mapping[str, float], measured: Mapping[str, float]) -> None:
        """Forecast the ensemble to time ``t`` under ``inputs``, then analyse it with ``measured``."""
        m, xp = self.model, self.xp
        readings = {k: float(v) for k, v in measured.items()
                    if v is not None and math.isfinite(float(v))}
        if self.x is None:
            self._init(readings)
        elif t > self.t:
            self.x = forecast(m, self.x, inputs, t - self.t, self.rng)
        self.t = t
        predicted = m.output(self.x, inputs)
        keys = [k for k in readings if k in predicted]
        self.last_innovation, self.last_prediction, self.last_prediction_std = {}, {}, {}
        if not keys:
            return
        sigma = xp.asarray([m.output_noise.get(k, 1.0) for k in keys], dtype=float)
        y = xp.asarray([readings[k] for k in keys], dtype=float)
        hx = xp.stack([xp.broadcast_to(xp.asarray(predicted[k], dtype=float), (self.n,)) for k in keys])
        hx_mean = hx.mean(axis=1)
        hx_var = hx.var(axis=1, ddof=1)
        for i, key in enumerate(keys):
            s, mean = float(sigma[i]), float(hx_mean[i])
            self.last_prediction[key] = mean
            self.last_prediction_std[key] = math.sqrt(max(float(hx_var[i]), 0.0) + s * s)
            self.last_innovation[key] = (readings[key] - mean) / s
        self._analyse(y, sigma, hx, hx_mean)

    def _analyse(self, y: Any, sigma: Any, hx: Any, hx_mean: Any) -> None:
        """x_a = x_f + C_xy (C_yy + R)^-1 (y + eps - H(x_f)), worked in outputs scaled by their noise."""
        xp, n = self.xp, self.n
        names = list(self.x)
        states = xp.stack([xp.broadcast_to(xp.asarray(self.x[k], dtype=float), (n,)) for k in names])
        anomalies = states - states.mean(axis=1, keepdims=True)                 # (d, n)
        # Scaled by the sensor noise, C_yy + R becomes C_yy/R + I: well conditioned whatever the units.
        out_anomalies = (hx - hx_mean[:, None]) / sigma[:, None]                 # (m, n)
        c_xy = anomalies @ out_anomalies.T / (n - 1)                            # (d, m)
        s = out_anomalies @ out_anomalies.T / (n - 1) + xp.eye(len(sigma))       # (m, m)
        eps = self.rng.standard_normal((len(sigma), n))                          # perturbed observations
        innovations = (y[:, None] - hx) / sigma[:, None] + eps                   # (m, n)
        states = states + c_xy @ xp.linalg.solve(s, innovations)
        self.x = self._clip({k: states[i] for i, k in enumerate(names)})

    # -- reporting ------------------------------------------------------------------------------

    def samples(self) -> Arrays:
        """A copy of the ensemble (members are equally weighted), for Monte Carlo prediction."""
        return {k: v.copy() for k, v in self.x.items()}

    def estimate(self) -> dict[str, float]:
        """Ensemble mean and standard deviation of every state and of health."""
        return {} if self.x is None else summarise(self.model, self.x, self.xp.full(self.n, 1.0 / self.n))

    def predict_rul(self, inputs: Mapping[str, float], horizon_s: float | None = None,
                    steps: int = 200) -> dict[str, float | None]:
        """Time to the failure threshold per member under constant ``inputs``.

        The members step deterministically (no process noise), as the particle
        filter's do, ``steps`` steps over the horizon and again more finely over
        the span where they cross when that span is short. Returns percentiles
        in seconds; ``None`` where a percentile does not fail within the horizon.
        """
        if self.x is None:
            return {}
        return rul_percentiles(self.model, self.x, numpy.full(self.n, 1.0 / self.n), inputs,
                               horizon_s or self.model.rul_horizon_s, steps)
