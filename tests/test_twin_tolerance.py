"""A tolerance judged against the twin's own uncertainty: sigmas, not a fixed band."""

from __future__ import annotations

from pathlib import Path

import pytest

from twinloop.errors import ConfigError
from twinloop.harness.plan import plan
from twinloop.harness.runner import execute
from twinloop.harness.scenario import parse_scenario
from twinloop.harness.services import Services

ROOT = Path(__file__).parents[1]
AGREES = "  - name: twin_agrees\n    tolerance: {signal: module.temperature, sigmas: 4}\n"


def smoke(steps_extra: str = "", expect_extra: str = AGREES) -> str:
    text = (ROOT / "scenarios" / "smoke.yaml").read_text()
    return text.replace("  - wait: 5 min\nexpect:", f"  - wait: 5 min\n{steps_extra}expect:") + expect_extra


def test_a_twin_that_tracks_the_device_passes_within_its_own_sigma(twinloop_ray: Services) -> None:
    record = execute(plan(parse_scenario("agrees.yaml", smoke())))
    verdict = next(v for v in record.verdicts if v.name == "twin_agrees")
    assert verdict.outcome == "pass", verdict.detail
    assert verdict.unit == "sigma" and 0 < verdict.value <= 4
    history = record.twins["module"].history
    assert all(s is None or s > 0 for s in history["predicted_temperature_std"])


def test_a_sensor_the_twin_cannot_explain_fails_beyond_its_sigma(twinloop_ray: Services) -> None:
    stuck = "  - fault: {kind: stuck, signal: module.temperature, value: 40 degC, duration: 60 s}\n  - wait: 1 min\n"
    record = execute(plan(parse_scenario("stuck.yaml", smoke(stuck))))
    verdict = next(v for v in record.verdicts if v.name == "twin_agrees")
    assert verdict.outcome == "fail"
    assert verdict.value > 4 and "sigma at t=" in verdict.detail


@pytest.mark.parametrize("spec, words", [
    ("{signal: module.temperature, within: 1 degC, sigmas: 3}", "give exactly one of 'within'"),
    ("{signal: module.temperature}", "give exactly one of 'within'"),
    ("{signal: module.temperature, sigmas: 0}", "greater than 0"),
])
def test_within_or_sigmas_is_checked_at_load(spec: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        plan(parse_scenario("bad.yaml", smoke(expect_extra=f"  - name: t\n    tolerance: {spec}\n")))
