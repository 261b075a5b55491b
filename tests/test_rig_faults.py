"""For every transport: a device that dies mid-run is an error within the timeout, with the samples
before it kept, and with on_error: continue the run resumes when the device comes back."""

from __future__ import annotations

import pytest

from twinloop.harness.plan import plan
from twinloop.harness.runner import execute
from twinloop.harness.scenario import parse_scenario
from twinloop.rigs.profile import RigProfile, RigSource
from twinloop.rigs.registry import emulator_kind

SCENARIO = """\
scenario: dies
dut: {id: pm, version: "1"}
on_error: %s
devices:
  module: {type: power_module}
steps:
  - set: {signal: module.power, value: 20 W}
  - wait: 10 s
expect:
  - {name: tj, signal: module.temperature, max: 125 degC}
"""
PROTOCOLS = ["modbus", "modbus-rtu", "scpi", "scpi-pty", "opcua", "can", "can-socketcand"]


def run(protocol: str, on_error: str, dead: tuple[float, float]):
    """Reach an emulator by address (as a bench reaches hardware) and kill it during ``dead``."""
    kind = emulator_kind("power_module", protocol)
    emulator = kind.build()
    emulator.start()
    profile = RigProfile.model_validate({"rig": "bench", "clock": "simulated", "devices": {"module": {
        "address": emulator.address, "signals": kind.signal_map, "timeout": "300 ms",
        "options": kind.transport_options,
        "safe_state": {"power": 0, "fan": 1}}}})
    state = {"alive": True}

    def progress(t: float, total: float) -> None:
        alive = not dead[0] <= t < dead[1]
        if alive != state["alive"]:
            emulator.start() if alive else emulator.stop()
            state["alive"] = alive
    try:
        p = plan(parse_scenario("dies.yaml", SCENARIO % on_error), RigSource(profile, "<bench>", None, "0" * 64))
        return execute(p, progress)
    finally:
        emulator.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_device_that_dies_mid_run_is_an_error_with_the_earlier_samples_kept(protocol: str) -> None:
    record = run(protocol, "stop", (3.0, 1e9))
    assert record.outcome == "error" and "device 'module'" in record.error
    assert record.samples.t == [0.0, 1.0, 2.0, 3.0]
    assert all(v is not None for v in record.samples.columns["module.temperature"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_with_on_error_continue_sampling_resumes_when_the_device_is_back(protocol: str) -> None:
    record = run(protocol, "continue", (3.0, 6.0))
    temps = record.samples.columns["module.temperature"]
    assert len(temps) == 11 and all(v is None for v in temps[4:7])
    assert all(v is not None for v in temps[7:])
    assert record.outcome == "error"  # errors were run past, never hidden
