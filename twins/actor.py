"""The per-device twin as a Ray actor: assimilates samples, reports health and RUL."""

from __future__ import annotations

from typing import Any, Literal, Mapping

import ray

from twinloop.twins.estimate import ParticleFilter
from twinloop.twins.registry import models

MaturityLevel = Literal["model", "shadow", "twin", "intelligent"]


class DeviceTwin:
    """One device's twin: physics model + particle filter + a columnar estimate log.

    Plain class so it runs and tests without Ray; ``TwinActor`` wraps it.
    """

    def __init__(self, device: str, model: str, params: Mapping[str, float] | None = None,
                 level: MaturityLevel = "shadow", n_particles: int = 1000, seed: int = 0) -> None:
        self.device, self.model_name, self.level = device, model, level
        self.model = models.get(model)(**dict(params or {}))
        self.filter = ParticleFilter(self.model, n_particles, seed)
        self.inputs = self.model.default_inputs()
        self.log: dict[str, list[float]] = {"t": []}

    def assimilate(self, t: float, signals: Mapping[str, float]) -> None:
        """Take one sample of named signals (inputs and outputs of the model)."""
        self.inputs.update({k: float(v) for k, v in signals.items() if k in self.model.inputs})
        measured = {k: float(v) for k, v in signals.items() if k in self.model.outputs}
        self.filter.update(t, self.inputs, measured)
        est = self.filter.estimate()
        est.update({f"innovation_{k}": v for k, v in self.filter.last_innovation.items()})
        self.log["t"].append(float(t))
        for key, value in est.items():
            self.log.setdefault(key, []).append(value)

    def estimate(self) -> dict[str, Any]:
        """Latest state, health and remaining useful life under the latest inputs."""
        est = self.filter.estimate()
        est.update(self.filter.predict_rul(self.inputs))
        return {"device": self.device, "model": self.model_name, "level": self.level,
                "t": self.filter.t, "inputs": dict(self.inputs), **est}

    def history(self) -> dict[str, list[float]]:
        """Every estimate logged so far, one column per quantity."""
        return {k: list(v) for k, v in self.log.items()}


@ray.remote(max_restarts=3, max_task_retries=1, num_cpus=0)
class TwinActor(DeviceTwin):
    """DeviceTwin as a Ray actor (one per device in HIL runs)."""
