"""``ShardCore`` as a Ray actor, with its per-shard metrics through ``ray.util.metrics``.

Metrics (tags ``fleet``, ``shard``, ``group``):
``twinloop_fleet_twin_steps_per_second``, ``twinloop_fleet_twin_steps_total``,
``twinloop_fleet_units_failed``, ``twinloop_fleet_failure_time_seconds`` and
``twinloop_fleet_rul_seconds`` (tag ``quantile``: p05, p50, p95; the shard's
own units). Ray's metrics agent exports them at the node's metrics export
port, prefixed ``ray_``.
"""

from __future__ import annotations

from typing import Any, Sequence

import ray

from twinloop.twins.fleet_shard import ShardCore, Slice
from twinloop.twins.fleet_spec import FleetPlan


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

