"""The per-device twin as a Ray actor: assimilates samples, reports health and RUL."""

from __future__ import annotations

import math
import uuid
from typing import Any, Literal, Mapping

import ray

from twinloop.twins.estimate import ParticleFilter
from twinloop.twins.registry import models

MaturityLevel = Literal["model", "shadow", "twin", "intelligent"]


def _finite(signals: Mapping[str, Any], names: Mapping[str, Any]) -> dict[str, float]:
    """The signals named in ``names`` whose values are finite numbers (a NaN reading is skipped)."""
    out = {}
    for k, v in signals.items():
        if k in names and v is not None and math.isfinite(float(v)):
            out[k] = float(v)
    return out


class DeviceTwin:
    """One device's twin: physics model + particle filter + a columnar estimate log.

    Plain class so it runs and tests without Ray; ``TwinActor`` wraps it. A new
    ``incarnation`` is drawn whenever the object is (re)built, so a caller can
    tell that an actor restarted and lost its history.
    """

    def __init__(self, device: str, model: str, params: Mapping[str, float] | None = None,
                 level: MaturityLevel = "shadow", n_particles: int = 1000, seed: int = 0,
                 rul_every_s: float | None = None) -> None:
        self.device, self.model_name, self.level = device, model, level
        self.model = models.get(model)(**dict(params or {}))
        self.filter = ParticleFilter(self.model, n_particles, seed)
        self.inputs = self.model.default_inputs()
        self.log: dict[str, list[float | None]] = {"t": []}
        self.incarnation = uuid.uuid4().hex
        self.seq = 0
        self.rul_every_s = rul_every_s
        self._rul_at: float | None = None

    def ready(self) -> str:
        """The incarnation id; answering at all means the model was built."""
        return self.incarnation

    def assimilate(self, t: float, signals: Mapping[str, float]) -> tuple[str, int]:
        """Take one sample of named signals (inputs and outputs); returns (incarnation, sequence)."""
        self.inputs.update(_finite(signals, self.model.inputs))
        self.filter.update(t, self.inputs, _finite(signals, self.model.outputs))
        est = self.filter.estimate()
        est.update({f"innovation_{k}": v for k, v in self.filter.last_innovation.items()})
        est.update({f"predicted_{k}": v for k, v in self.filter.last_prediction.items()})
        est.update({f"predicted_{k}_std": v for k, v in self.filter.last_prediction_std.items()})
        if self.rul_every_s is not None:
            due = self._rul_at is None or t - self._rul_at >= self.rul_every_s
            rul = self.filter.predict_rul(self.inputs) if due else {}
            if due:
                self._rul_at = float(t)
            est.update({k: rul.get(k) for k in ("rul_p05_s", "rul_p50_s", "rul_p95_s")})
        # One entry per row in every column (None where a quantity was not computed, e.g. the
        # innovation of an output whose reading was NaN), so columns line up with ``t``.
        row = len(self.log["t"])
        self.log["t"].append(float(t))
        for key in est:
            self.log.setdefault(key, [None] * row)
        for key, column in self.log.items():
            if key != "t":
                column.append(est.get(key))
        self.seq += 1
        return self.incarnation, self.seq

    def estimate(self) -> dict[str, float | None]:
        """Latest state, health and remaining useful life (seconds; None beyond the horizon)."""
        est: dict[str, float | None] = dict(self.filter.estimate())
        est.update(self.filter.predict_rul(self.inputs))
        est["t"] = self.filter.t
        return est

    def current_inputs(self) -> dict[str, float]:
        """The inputs the twin is running on (last sampled, else the model's defaults)."""
        return dict(self.inputs)

    def history(self) -> dict[str, list[float | None]]:
        """Every estimate logged so far, one column per quantity."""
        return {k: list(v) for k, v in self.log.items()}


@ray.remote(max_restarts=3, max_task_retries=0, num_cpus=0)
class TwinActor(DeviceTwin):
    """DeviceTwin as a Ray actor (one per device in HIL runs)."""
