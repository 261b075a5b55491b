"""A twin that fails is visible in the record and makes the outcome an error; one Ray restarts resumes exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from twinloop.harness.plan import plan
from twinloop.harness.runner import execute
from twinloop.harness.services import Services

SMOKE = Path(__file__).parents[1] / "scenarios" / "smoke.yaml"


def twin_actor():
    names = [n for n in ray.util.list_named_actors() if n.startswith("twinloop/")]
    assert len(names) == 1, names
    return ray.get_actor(names[0])


def test_a_killed_twin_is_an_error_event(twinloop_ray: Services) -> None:
    def kill_the_twin(t: float, total: float) -> None:
        if t == 50.0:
            ray.kill(twin_actor(), no_restart=True)

    record = execute(plan(SMOKE), progress=kill_the_twin)
    assert record.outcome == "error" and "twin of device 'module' failed" in record.error
    [event] = [e for e in record.events if e.kind == "twin_error"]
    assert event.device == "module" and event.t <= record.samples.t[-1]  # samples in flight may fail too
    assert 50 < len(record.samples.t) < 601  # the rig's data up to the loss is kept
    assert record.events[-1].kind == "safe_state"
    assert "module" not in record.twins  # a lost twin's partial estimate is not passed off as whole
    assert not [n for n in ray.util.list_named_actors() if n.startswith("twinloop/")]  # actors stopped


@pytest.mark.parametrize("kill_at", [50.0, 300.0, 550.0])
def test_a_twin_ray_restarts_resumes_from_its_checkpoint_with_every_sample_once(twinloop_ray: Services,
                                                                               kill_at: float) -> None:
    healthy = execute(plan(SMOKE))

    def kill_the_twin(t: float, total: float) -> None:
        if t == kill_at:
            ray.kill(twin_actor(), no_restart=False)

    record = execute(plan(SMOKE), progress=kill_the_twin)
    assert record.outcome == "pass", record.error
    [event] = [e for e in record.events if e.kind == "twin_restarted"]
    assert event.note == "restored" and "no sample lost" in event.message
    history = record.twins["module"].history
    assert history["t"] == record.samples.t                     # every sample once, in order
    # the emulator, the clock and the twin are seeded: a restart changes nothing the twin computed
    assert history["damage"] == healthy.twins["module"].history["damage"]
    assert record.twins["module"].final["damage"] == healthy.twins["module"].final["damage"]
    assert not [n for n in ray.util.list_named_actors() if n.startswith("twinloop/")]


def test_a_healthy_run_leaves_no_actor_behind(twinloop_ray: Services) -> None:
    record = execute(plan(SMOKE))
    assert record.outcome == "pass" and record.twins["module"].history["t"][-1] == 600.0
    assert not [n for n in ray.util.list_named_actors() if n.startswith("twinloop/")]
