"""Anomaly detection on a twin's normalised innovations, at a false-alarm rate the user sets.

After each update the particle filter exposes, per output, the innovation
``z = (measured - predicted mean) / sigma`` with ``sigma`` the model's assumed
sensor noise. Under a correct model ``z`` is roughly standard normal and
independent from sample to sample; a fault the model does not know (sensor
offset or drift, stuck sensor, unmodelled heat source, a fan that broke
without the twin being told) makes it biased, too large or too small.
:class:`InnovationMonitor` tests for that with two classical residual tests:

``"cusum"`` -- two-sided CUSUM, for a shift of the mean (bias)
    Page, E. S., "Continuous inspection schemes", *Biometrika* 41(1/2),
    100-115, 1954. Per output::

        S+ <- max(0, S+ + z - k)      alarm "high" when S+ > h
        S- <- max(0, S- - z - k)      alarm "low"  when S- > h

    with reference value ``k = shift / 2``, which makes the chart most
    sensitive to a mean shift of ``shift`` sigma (Page's scheme is the
    sequential likelihood-ratio test for that shift). A chart that alarms
    restarts at zero, so the alarms of an in-control chart come once per
    average run length (ARL) and the per-sample false-alarm rate is
    ``1 / ARL``. The threshold ``h`` comes from Siegmund's approximation of
    the ARL of a one-sided CUSUM on N(mu, 1) data (Siegmund, D., *Sequential
    Analysis: Tests and Confidence Intervals*, Springer, 1985; as given in
    Montgomery, *Introduction to Statistical Quality Control*, ch. 9)::

        ARL(mu) ~ (exp(-2 D b) + 2 D b - 1) / (2 D^2),  D = mu - k,  b = h + 1.166
        (ARL = b^2 when D = 0)

    The 1.166 is the overshoot correction of the normal random walk. The rate
    is split evenly over the ``2 m`` one-sided charts of ``m`` outputs
    (``1/ARL_two-sided = 1/ARL+ + 1/ARL-``; Bonferroni across outputs), so
    each one-sided chart gets ``ARL0 = 2 m / false_alarm_rate`` and ``h`` is
    the root of ``ARL(0) = ARL0``. After a shift of ``delta`` sigma the same
    formula with ``mu = delta`` gives the expected detection delay from a
    chart at zero (:meth:`InnovationMonitor.expected_delay`).

``"chi2"`` -- windowed chi-square (normalised innovation squared) test, for a variance change
    The consistency test of Kalman-filter innovations (Bar-Shalom, Li and
    Kirubarajan, *Estimation with Applications to Tracking and Navigation*,
    Wiley, 2001, sec. 5.4; Mehra and Peschon, "An innovations approach to
    fault detection and diagnosis in dynamic systems", *Automatica* 7, 1971):
    ``Q = sum of z^2`` over the last ``window`` samples and all outputs is
    chi-square with ``nu`` = the number of values summed. Alarm "high"
    (innovations too large: noise grew, a sensor went bad) when ``Q`` is
    above the upper ``false_alarm_rate / 2`` quantile of chi2(nu), "low"
    (innovations too small, e.g. a stuck sensor the filter tracks
    exactly) when below the lower ``false_alarm_rate / 2`` quantile; the low
    side is tested only once the window is full. The window slides and is
    not cleared on an alarm, so ``Q`` of an in-control sequence exceeds the
    quantile with exactly the target probability at every sample (alarms
    come in clusters, the long-run fraction of alarmed samples is the
    target). The quantiles are computed without SciPy: Wilson-Hilferty's
    cube-root normal approximation (Wilson and Hilferty, "The distribution
    of chi-square", *PNAS* 17, 684-688, 1931) as a start, refined by Newton
    steps on the regularised incomplete gamma function (series and Lentz
    continued fraction, Press et al., *Numerical Recipes*, 3rd ed., sec. 6.2),
    and cached per (rate, nu).

``"both"`` runs the two with half the rate each (a union bound: the fraction
of samples with an alarm stays at most ``false_alarm_rate``).

"False-alarm rate" is per sample: the long-run fraction of calls to
:meth:`InnovationMonitor.update` that return an :class:`Alarm` when the
innovations are i.i.d. standard normal. Real filters are only roughly that
(a particle filter lags while its cloud converges after start-up), so use
``warmup`` to skip the start-up samples.

Cost per update is a few float operations per output (plus a sum over the
window for ``chi2``), pure Python, no allocation beyond the window.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections import deque
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Iterable, Literal, Mapping

Method = Literal["cusum", "chi2", "both"]
Direction = Literal["high", "low"]

#: Overshoot correction of Siegmund's ARL approximation for normal data (rho = 0.583, b = h + 2 rho).
SIEGMUND_OVERSHOOT = 1.166
#: Largest per-sample false-alarm rate accepted: the threshold approximations are made for rare alarms.
MAX_FALSE_ALARM_RATE = 0.05
#: Largest CUSUM design shift (sigma) accepted: beyond it h becomes so small that Siegmund's
#: approximation no longer holds (and a shift that large shows in one sample anyway).
MAX_SHIFT = 3.0


# --------------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------------

def siegmund_arl(h: float, k: float, mu: float = 0.0) -> float:
    """Siegmund's approximate average run length of a one-sided CUSUM on N(``mu``, 1) data.

    Chart ``S <- max(0, S + z - k)``, alarm when ``S > h``, started at zero.
    """
    b = h + SIEGMUND_OVERSHOOT
    d = mu - k
    if abs(d) < 1e-9:
        return b * b
    return (math.exp(-2.0 * d * b) + 2.0 * d * b - 1.0) / (2.0 * d * d)


@functools.lru_cache(maxsize=256)
def cusum_threshold(arl0: float, k: float) -> float:
    """The decision interval ``h`` whose in-control one-sided ARL (Siegmund) is ``arl0``."""
    if not arl0 > 1.0:
        raise ValueError(f"arl0 must be > 1, got {arl0!r}")
    # ARL(0) grows monotonically with h; bisect on h in [0, hi].
    lo, hi = 0.0, 1.0
    while siegmund_arl(hi, k) < arl0:
        hi *= 2.0
    if siegmund_arl(lo, k) >= arl0:
        return 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if siegmund_arl(mid, k) < arl0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _gamma_p_series(a: float, x: float) -> float:
    """Regularised lower incomplete gamma P(a, x) by its series (converges fast for x < a + 1)."""
    term = total = 1.0 / a
    ap = a
    for _ in range(10_000):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * 1e-16:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_q_fraction(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x) by its continued fraction (modified Lentz; x >= a + 1)."""
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < tiny:
            d = tiny
        c = b + an / c
        if abs(c) < tiny:
            c = tiny
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def chi2_cdf(x: float, dof: int) -> float:
    """P(chi2(dof) <= x)."""
    if x <= 0.0:
        return 0.0
    a, y = 0.5 * dof, 0.5 * x
    return _gamma_p_series(a, y) if y < a + 1.0 else 1.0 - _gamma_q_fraction(a, y)


def chi2_sf(x: float, dof: int) -> float:
    """P(chi2(dof) > x), accurate far into the upper tail."""
    if x <= 0.0:
        return 1.0
    a, y = 0.5 * dof, 0.5 * x
    return 1.0 - _gamma_p_series(a, y) if y < a + 1.0 else _gamma_q_fraction(a, y)


def _chi2_logpdf(x: float, dof: int) -> float:
    a = 0.5 * dof
    return (a - 1.0) * math.log(x) - 0.5 * x - a * math.log(2.0) - math.lgamma(a)


@functools.lru_cache(maxsize=4096)
def chi2_quantile(p: float, dof: int, upper: bool = True) -> float:
    """Chi-square quantile x with P(chi2(dof) > x) = p if ``upper``, else P(chi2(dof) < x) = p.

    Wilson-Hilferty start, then safeguarded Newton steps on the log tail
    probability (bisection whenever a step leaves the bracket). Relative
    accuracy ~1e-10 for 1e-12 < p < 0.5 and any ``dof`` >= 1.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof!r}")
    tail = chi2_sf if upper else chi2_cdf
    target = math.log(p)
    zq = NormalDist().inv_cdf(1.0 - p if upper else p)
    c = 2.0 / (9.0 * dof)
    x = dof * max(1.0 - c + zq * math.sqrt(c), 1e-3) ** 3
    # Bracket [lo, hi] on which log tail(x) - target changes sign.
    lo, hi = 0.0, max(x, 1.0)
    while True:
        t = tail(hi, dof)
        if (t < p) if upper else (t > p):
            break
        lo, hi = hi, hi * 2.0
    x = min(max(x, lo), hi)
    for _ in range(200):
        t = tail(x, dof)
        if t <= 0.0:
            g = -math.inf
        else:
            g = math.log(t) - target
        if upper:
            (lo, hi) = (x, hi) if g > 0 else (lo, x)
        else:
            (lo, hi) = (lo, x) if g > 0 else (x, hi)
        if t > 0.0 and abs(g) < 1e-12:
            return x
        # d/dx log sf = -pdf / sf;  d/dx log cdf = pdf / cdf.
        step = None
        if t > 0.0:
            slope = math.exp(_chi2_logpdf(x, dof) - math.log(t)) * (-1.0 if upper else 1.0)
            if slope != 0.0:
                step = x - g / slope
        x = step if step is not None and lo < step < hi else 0.5 * (lo + hi)
        if hi - lo < 1e-14 * hi:
            return x
    return x


# --------------------------------------------------------------------------------------------
# Monitor
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Alarm:
    """One test's verdict that the innovations no longer fit the model.

    ``statistic`` crossed ``threshold`` (``high``: above it; for the chi2 ``low``
    side: below it). ``outputs`` names the output(s) the test looked at:
    the CUSUM charts that crossed in this sample, or every output in the chi2
    window. ``sample`` counts the samples the monitor has used (0-based,
    warm-up included). If several tests alarm at the same sample, the one
    furthest past its threshold is reported and the rest are in ``others``.
    """

    method: Literal["cusum", "chi2"]
    outputs: tuple[str, ...]
    direction: Direction
    statistic: float
    threshold: float
    sample: int
    others: tuple["Alarm", ...] = field(default=())

    def __str__(self) -> str:
        cmp = ">" if self.direction == "high" or self.method == "cusum" else "<"
        return (f"{self.method} {self.direction} on {', '.join(self.outputs)}: "
                f"{self.statistic:.3g} {cmp} {self.threshold:.3g} at sample {self.sample}")

    def as_dict(self) -> dict[str, Any]:
        """Plain data for a log or a JSON record."""
        return {"method": self.method, "outputs": list(self.outputs), "direction": self.direction,
                "statistic": self.statistic, "threshold": self.threshold, "sample": self.sample,
                "others": [o.as_dict() for o in self.others]}


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class InnovationMonitor:
    """Residual test on a twin's normalised innovations with a chosen per-sample false-alarm rate.

    Args:
        false_alarm_rate: target long-run fraction of samples that raise an
            :class:`Alarm` under a correct model, in (0, 0.05]; e.g. 1e-3.
        window: samples in the chi-square window (``chi2``, ``both``).
        method: ``"cusum"`` (mean shifts), ``"chi2"`` (variance changes) or
            ``"both"`` (each at half the rate). See the module docstring.
        shift: mean shift, in sigma, the CUSUM is tuned to detect fastest
            (reference value k = shift / 2), in (0, 3].
        outputs: the outputs to monitor (others are ignored); fixes the
            split of the rate over the CUSUM charts. If not given, every
            output seen is monitored and the split follows the number seen
            so far.
        warmup: samples (with at least one usable innovation) to ignore at
            the start and after :meth:`reset`, while a filter converges.
    """

    def __init__(self, false_alarm_rate: float, window: int = 20, method: Method = "cusum",
                 shift: float = 1.0, outputs: Iterable[str] | None = None, warmup: int = 0) -> None:
        if not _is_real(false_alarm_rate) or not 0.0 < false_alarm_rate <= MAX_FALSE_ALARM_RATE:
            raise ValueError(f"false_alarm_rate must be a number in (0, {MAX_FALSE_ALARM_RATE}] "
                             f"(per sample), got {false_alarm_rate!r}")
        if not _is_int(window) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        if method not in ("cusum", "chi2", "both"):
            raise ValueError(f"method must be 'cusum', 'chi2' or 'both', got {method!r}")
        if not _is_real(shift) or not 0.0 < shift <= MAX_SHIFT:
            raise ValueError(f"shift must be a number in (0, {MAX_SHIFT}] (sigma), got {shift!r}")
        if not _is_int(warmup) or warmup < 0:
            raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
        fixed: tuple[str, ...] | None = None
        if outputs is not None:
            if isinstance(outputs, str):
                raise ValueError(f"outputs must be a collection of output names, not the string {outputs!r}")
            fixed = tuple(dict.fromkeys(outputs))
            if not fixed or not all(isinstance(o, str) and o for o in fixed):
                raise ValueError(f"outputs must be a non-empty collection of output names, got {outputs!r}")
        self.false_alarm_rate = float(false_alarm_rate)
        self.window = int(window)
        self.method: Method = method
        self.shift = float(shift)
        self.k = self.shift / 2.0
        self.warmup = int(warmup)
        self._fixed = fixed
        share = 0.5 if method == "both" else 1.0
        self._rate_cusum = self.false_alarm_rate * share if method != "chi2" else 0.0
        self._rate_chi2 = self.false_alarm_rate * share if method != "cusum" else 0.0
        self._outputs: list[str] = list(fixed or ())
        self.h = math.nan
        self._set_h()
        self.reset()

    # ---- configuration ----

    @property
    def uses_cusum(self) -> bool:
        return self.method != "chi2"

    @property
    def uses_chi2(self) -> bool:
        return self.method != "cusum"

    @property
    def outputs(self) -> tuple[str, ...]:
        """The outputs monitored (given, or seen so far)."""
        return tuple(self._outputs)

    def _set_h(self) -> None:
        m = len(self._outputs)
        if self.uses_cusum and m:
            self.h = cusum_threshold(2.0 * m / self._rate_cusum, self.k)

    def cusum_arl0(self) -> float:
        """In-control ARL of each one-sided CUSUM chart (Siegmund), for the outputs monitored so far."""
        return siegmund_arl(self.h, self.k)

    def expected_delay(self, delta: float) -> float:
        """Siegmund's expected CUSUM detection delay (samples) for a mean shift of ``delta`` sigma on one
        output, counted from a chart at zero (the sample count includes the one that alarms; at least 1,
        where the approximation, made for small shifts, would give less)."""
        if not self.uses_cusum or math.isnan(self.h):
            raise ValueError("expected_delay needs a CUSUM method and at least one known output")
        return max(1.0, siegmund_arl(self.h, self.k, abs(delta)))

    def chi2_thresholds(self, dof: int) -> tuple[float, float]:
        """(low, high) chi-square bounds of the window test for ``dof`` summed values."""
        p = self._rate_chi2 / 2.0
        return chi2_quantile(p, dof, upper=False), chi2_quantile(p, dof, upper=True)

    # ---- state ----

    def reset(self) -> None:
        """Forget all evidence (charts to zero, window emptied, warm-up restarts); keep the configuration."""
        self.samples = 0
        self.alarms = 0
        self._used = 0
        self._pos = {o: 0.0 for o in self._outputs}
        self._neg = {o: 0.0 for o in self._outputs}
        self._win: deque[tuple[float, int]] = deque(maxlen=self.window)
        self._win_outputs: deque[tuple[str, ...]] = deque(maxlen=self.window)
        self._q = 0.0
        self._dof = 0
        self.last_alarm: Alarm | None = None

    def state(self) -> dict[str, float | int | None]:
        """Flat numbers for a log row: the statistics, their thresholds and counters."""
        out: dict[str, float | int | None] = {"samples": self.samples, "alarms": self.alarms,
                                              "warming_up": int(self._used < self.warmup)}
        if self.uses_cusum:
            out["cusum_h"] = None if math.isnan(self.h) else self.h
            for o in self._outputs:
                out[f"cusum_high_{o}"] = self._pos[o]
                out[f"cusum_low_{o}"] = self._neg[o]
        if self.uses_chi2:
            out["chi2"] = self._q
            out["chi2_dof"] = self._dof
            low, high = self.chi2_thresholds(self._dof) if self._dof else (None, None)
            out["chi2_low"] = low if len(self._win) == self.window else None
            out["chi2_high"] = high
        return out

    # ---- the test ----

    def update(self, innovations: Mapping[str, Any]) -> Alarm | None:
        """Take one sample's normalised innovations {output: z}; return an Alarm or None.

        ``None``, NaN and infinite values (a missing or unusable reading) are
        skipped; a sample with none usable changes nothing and returns None.
        """
        z: dict[str, float] = {}
        for key, value in innovations.items():
            if value is None:
                continue
            if self._fixed is not None and key not in self._fixed:
                continue
            v = float(value)
            if math.isfinite(v):
                z[key] = v
        if not z:
            return None
        new = [k for k in z if k not in self._pos]
        if new:
            self._outputs.extend(new)
            for k in new:
                self._pos[k] = self._neg[k] = 0.0
            self._set_h()
        sample = self.samples
        self.samples += 1
        if self._used < self.warmup:
            self._used += 1
            return None
        self._used += 1
        found: list[Alarm] = []
        if self.uses_cusum:
            k, h = self.k, self.h
            high, low = [], []
            for key, v in z.items():
                sp = self._pos[key] + v - k
                sn = self._neg[key] - v - k
                sp = sp if sp > 0.0 else 0.0
                sn = sn if sn > 0.0 else 0.0
                if sp > h:
                    high.append((key, sp))
                    sp = 0.0
                if sn > h:
                    low.append((key, sn))
                    sn = 0.0
                self._pos[key], self._neg[key] = sp, sn
            for direction, hits in (("high", high), ("low", low)):
                if hits:
                    found.append(Alarm("cusum", tuple(k_ for k_, _ in hits), direction,
                                       max(s for _, s in hits), h, sample))
        if self.uses_chi2:
            self._win.append((sum(v * v for v in z.values()), len(z)))
            self._win_outputs.append(tuple(z))
            self._q = math.fsum(q for q, _ in self._win)
            self._dof = sum(n for _, n in self._win)
            low_thr, high_thr = self.chi2_thresholds(self._dof)
            direction, thr = None, 0.0
            if self._q > high_thr:
                direction, thr = "high", high_thr
            elif len(self._win) == self.window and self._q < low_thr:
                direction, thr = "low", low_thr
            if direction is not None:
                seen = {o for names in self._win_outputs for o in names}
                found.append(Alarm("chi2", tuple(o for o in self._outputs if o in seen), direction,
                                   self._q, thr, sample))
        if not found:
            return None

        def excess(a: Alarm) -> float:
            if a.method == "chi2" and a.direction == "low":
                return a.threshold / max(a.statistic, 1e-300)
            return a.statistic / max(a.threshold, 1e-300)

        found.sort(key=excess, reverse=True)
        first = found[0]
        alarm = Alarm(first.method, first.outputs, first.direction, first.statistic, first.threshold,
                      first.sample, tuple(found[1:]))
        self.alarms += 1
        self.last_alarm = alarm
        return alarm


def filter_innovations(filt: Any, predictive: bool = False) -> dict[str, float]:
    """The innovations of a :class:`~twinloop.twins.estimate.ParticleFilter` after its last update.

    ``predictive=False``: ``filt.last_innovation`` as is (normalised by the
    model's sensor noise). ``predictive=True``: normalised instead by the
    full predictive sigma, ``sqrt(cloud spread^2 + sensor noise^2)``
    (``filt.last_prediction_std``), the normalised innovation of the
    Kalman-filter consistency tests; it keeps a wide cloud (start-up, an
    input the filter has not seen before) from reading as a fault.
    """
    if not predictive:
        return dict(filt.last_innovation)
    out = {}
    noise = filt.model.output_noise
    for key, z in filt.last_innovation.items():
        std = filt.last_prediction_std.get(key)
        sigma = noise.get(key, 1.0)
        out[key] = z * sigma / std if std and std > 0 else z
    return out
