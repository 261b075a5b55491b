"""Twin models, the particle filter and the Ray twin actor."""

from __future__ import annotations

import numpy
import pytest
import ray

from twinloop.harness.services import Services
from twinloop.errors import TwinError
from twinloop.twins.actor import DeviceTwin, TwinActor
from twinloop.twins.registry import models


def drive(twin: DeviceTwin, damage: float, seconds: int = 600, fan_off_at: int | None = None) -> None:
    """Feed ``twin`` noisy samples from a true unit with hidden ``damage``."""
    model = models.get("power_module_thermal")()
    x = model.initial_state(1, damage=damage)
    rng = numpy.random.default_rng(3)
    u = {"power": 30.0, "ambient": 25.0, "fan": 1.0}
    for k in range(seconds):
        if k == fan_off_at:
            u["fan"] = 0.0
        x = model.next_state(x, u, 1.0)
        twin.assimilate(float(k), dict(u, temperature=float(x["temperature"][0]) + rng.normal(0, 0.05)))


@pytest.mark.parametrize("damage", [0.02, 0.08, 0.12])
def test_filter_recovers_hidden_damage(damage: float) -> None:
    twin = DeviceTwin("m", "power_module_thermal", seed=1)
    drive(twin, damage)
    est = twin.estimate()
    assert est["damage"] == pytest.approx(damage, abs=0.01)
    assert est["health"] == pytest.approx(1 - damage / 0.2, abs=0.05)


def test_fan_failure_is_not_mistaken_for_damage_and_shortens_rul() -> None:
    twin = DeviceTwin("m", "power_module_thermal", seed=1)
    drive(twin, 0.08, seconds=300)
    before = twin.estimate()
    drive_more = DeviceTwin("m", "power_module_thermal", seed=1)
    drive(drive_more, 0.08, seconds=600, fan_off_at=300)
    after = drive_more.estimate()
    assert after["damage"] == pytest.approx(0.08, abs=0.01)
    assert after["rul_p50_s"] < before["rul_p50_s"] / 5  # hotter solder ages faster
    assert after["rul_p05_s"] <= after["rul_p50_s"] <= after["rul_p95_s"]


def test_model_steps_a_fleet_in_one_call() -> None:
    model = models.get("power_module_thermal")()
    x = model.initial_state(10_000, damage=numpy.linspace(0, 0.3, 10_000))
    u = {"power": numpy.full(10_000, 30.0), "ambient": 25.0, "fan": 1.0}
    x = model.next_state(x, u, 1.0)
    assert x["temperature"].shape == (10_000,)
    failed = model.threshold_met(x)
    assert failed.sum() == (x["damage"] >= 0.2).sum() > 0


def test_parameters_are_validated() -> None:
    with pytest.raises(TwinError, match="tau=-1.0 s is outside"):
        models.get("power_module_thermal")(tau=-1)
    with pytest.raises(TwinError, match="unknown parameter"):
        models.get("power_module_thermal")(colour=1)
    with pytest.raises(TwinError, match="unknown twin model 'banana'"):
        models.get("banana")


def test_twin_actor_on_ray(twinloop_ray: Services) -> None:
    actor = TwinActor.remote("module", "power_module_thermal", {}, "shadow", 500)
    for k in range(120):
        actor.assimilate.remote(float(k), {"power": 0.0, "ambient": 25.0, "fan": 1.0, "temperature": 25.0})
    est = ray.get(actor.estimate.remote())
    history = ray.get(actor.history.remote())
    assert len(history["t"]) == 120
    assert 0.0 <= est["health"] <= 1.0
    ray.kill(actor)
