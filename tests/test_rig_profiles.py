"""The same scenario passes on the emulated profile of every protocol; every shipped profile loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from twinloop.harness.plan import plan
from twinloop.harness.runner import execute
from twinloop.harness.services import Services
from twinloop.rigs.profile import load_rig

ROOT = Path(__file__).parents[1]
PROFILES = sorted((ROOT / "rigs" / "profiles").glob("*.yaml"))


@pytest.mark.parametrize("profile", [p for p in PROFILES if p.name.startswith("emulated")], ids=lambda p: p.stem)
def test_smoke_passes_on_every_emulated_protocol(profile: Path, twinloop_ray: Services) -> None:
    record = execute(plan(ROOT / "scenarios" / "smoke.yaml", profile))
    assert record.outcome == "pass", record.error
    temps = record.samples.columns["module.temperature"]
    assert temps[0] < 30 and temps[-1] > 100  # the fan failure shows, whatever the protocol


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_every_shipped_profile_plans_against_the_smoke_scenario(profile: Path) -> None:
    p = plan(ROOT / "scenarios" / "smoke.yaml", load_rig(profile))
    assert set(p.devices) == {"module"}
