"""The real-time engine: integer ticks, zero at the first step, overruns recorded, emulators stepped."""

from __future__ import annotations

from pathlib import Path

import pytest

from twinloop.harness.clock import RealClock, SimulatedClock
from twinloop.harness.plan import plan
from twinloop.harness.runner import execute
from twinloop.harness.scenario import parse_scenario
from twinloop.rigs.emulators.power_module import PowerModuleEmulator
from twinloop.rigs.profile import RigProfile, RigSource

NO_TWIN = """\
scenario: clock-check
dut: {id: pm, version: "1"}
devices:
  module: {type: power_module}
sample: {every: EVERY}
steps:
  - set: {signal: module.power, value: 30, unit: W}
  - wait: WAIT
expect:
  - {name: tj, signal: module.temperature, unit: degC, max: 125}
"""


def scenario(every: str, wait: str):
    return parse_scenario("clock-check.yaml", NO_TWIN.replace("EVERY", every).replace("WAIT", wait))


class FakeTime:
    """A monotonic clock that moves only when slept on, or when a test makes a read slow."""

    def __init__(self) -> None:
        self.ns = 10**12

    def monotonic_ns(self) -> int:
        return self.ns

    def sleep(self, seconds: float) -> None:
        self.ns += round(seconds * 1e9)


def test_ticks_are_integer_multiples_of_the_period() -> None:
    record = execute(plan(scenario("100 ms", "10 s")))
    assert len(record.samples.t) == 101
    assert record.samples.t == [k * 100_000_000 / 1e9 for k in range(101)]  # 0.3, never 0.30000000000000004
    assert record.samples.t[-1] == 10.0


def test_real_clock_zero_is_taken_at_start_not_construction() -> None:
    fake = FakeTime()
    clock = RealClock(fake.monotonic_ns, fake.sleep)
    fake.ns += 5 * 10**9  # slow set-up between construction and the first step
    clock.start()
    assert clock.sleep_until(0) == 0 and clock.sleep_until(1_000_000_000) == 0
    assert clock.elapsed_ns() == 1_000_000_000


def test_overruns_are_recorded_and_missed_ticks_skipped_not_burst() -> None:
    fake = FakeTime()
    clock = RealClock(fake.monotonic_ns, fake.sleep)
    reads = {"n": 0}

    def slow_device(dt: float) -> None:  # the 4th period's work takes 2.5 periods
        reads["n"] += 1
        if reads["n"] == 4:
            fake.ns += 2_500_000_000

    clock.listeners.append(slow_device)
    record = execute(plan(scenario("1 s", "10 s")), clock=clock)
    overruns = [e for e in record.events if e.kind == "overrun"]
    assert len(overruns) == 1 and overruns[0].t == 4.0 and overruns[0].data["missed"] == 2
    assert overruns[0].data["late_s"] == pytest.approx(2.5)
    t = record.samples.t
    assert t == [0.0, 1.0, 2.0, 3.0, 6.0, 7.0, 8.0, 9.0, 10.0]  # ticks 4 and 5 skipped, none burst
    assert all(read >= sched for sched, read in zip(t, record.samples.t_read))
    assert record.samples.t_read[4] == pytest.approx(6.5) and record.samples.t_read[5] == 7.0


def test_simulated_clock_steps_listeners_by_the_time_jumped() -> None:
    clock, steps = SimulatedClock(), []
    clock.listeners.append(steps.append)
    clock.start()
    assert clock.sleep_until(1_500_000_000) == 0 and clock.sleep_until(1_500_000_000) == 0
    assert steps == [1.5] and clock.elapsed_ns() == 1_500_000_000


def test_emulators_step_on_a_real_clock_in_a_mixed_rig() -> None:
    """One device reached by address (as real hardware is), one emulated: both heat up in real time."""
    real = PowerModuleEmulator(sensor_noise=0.0).start()
    try:
        profile = RigProfile.model_validate({"rig": "mixed", "devices": {
            "module": {"emulator": "power_module", "params": {"sensor_noise": 0.0}},
            "other": {"address": real.address, "signals": real.signal_map}}})
        text = NO_TWIN.replace("EVERY", "200 ms").replace("WAIT", "2 s").replace(
            "  module: {type: power_module}", "  module: {type: power_module}\n  other: {type: power_module}")
        record = execute(plan(parse_scenario("mixed.yaml", text), RigSource(profile, "mixed.yaml", None, "0" * 64)))
    finally:
        real.stop()
    assert record.rig.clock == "real" and record.outcome == "pass", record.error
    temps = record.samples.columns["module.temperature"]
    assert temps[-1] > temps[0] + 1.0  # 30 W into a 30 s thermal mass: ~+2.5 K in 2 s
    assert record.samples.columns["other.temperature"][-1] == 25.0  # nothing stepped the outside device
    assert len(record.samples.t) == 11
