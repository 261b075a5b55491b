"""The plugin's fixtures for Python tests: rig, twin and run_record of a marked scenario."""

from __future__ import annotations

import pytest

SMOKE = "scenarios/smoke.yaml"


@pytest.mark.scenario(SMOKE)
def test_rig_is_open_and_drives_the_emulated_device(rig) -> None:
    module = rig.transports["module"]
    module.write("power", 12.5)
    assert module.read(["power"]) == {"power": pytest.approx(12.5)}


@pytest.mark.scenario(SMOKE)
def test_twin_is_the_scenarios_model_in_process(twin) -> None:
    twin.assimilate(0.0, {"temperature": 25.0, "power": 0.0, "ambient": 25.0, "fan": 1.0})
    assert twin.model_name == "power_module_thermal" and "damage" in twin.estimate()


@pytest.mark.scenario(SMOKE)
def test_run_record_is_the_committed_run(run_record) -> None:
    assert run_record.outcome == "pass" and run_record.scenario.name == "smoke"


def test_a_fixture_without_the_marker_says_what_is_missing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(rig):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*needs @pytest.mark.scenario('path/to/scenario.yaml')*"])
