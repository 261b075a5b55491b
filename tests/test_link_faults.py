"""Link faults (latency, jitter, dropped, corrupted and cut replies, a wedged link) on every
transport's emulator: injected from a scenario, they disturb real protocol bytes; the run never
hangs, the disturbed samples are missing and marked as expected, and sampling resumes after."""

from __future__ import annotations

import pytest

from twinloop.errors import ConfigError
from twinloop.harness.plan import plan
from twinloop.harness.runner import execute
from twinloop.harness.scenario import parse_scenario
from twinloop.rigs.emulators.link import LinkFaults
from twinloop.rigs.profile import RigProfile, RigSource

SCENARIO = """\
scenario: link
dut: {id: pm, version: "1"}
on_error: continue
devices:
  module: {type: power_module}
steps:
  - set: {signal: module.power, value: 20 W}
  - wait: 3 s
  - fault: {device: module, kind: %s, duration: 3 s}
  - wait: 6 s
expect:
  - {name: tj, signal: module.temperature, max: 125 degC}
"""
TCP_AND_PTY = ["modbus", "modbus-rtu", "scpi", "scpi-pty", "opcua"]


def rig(protocol: str) -> RigSource:
    profile = RigProfile.model_validate({"rig": "emulated", "clock": "simulated", "devices": {"module": {
        "emulator": "power_module", "protocol": protocol, "timeout": "200 ms"}}})
    return RigSource(profile, "<emulated>", None, "0" * 64)


def run(protocol: str, fault: str):
    return execute(plan(parse_scenario("link.yaml", SCENARIO % fault), rig(protocol)))


def test_link_fault_decisions() -> None:
    link = LinkFaults(seed=1)
    assert link.fate(b"abcd") == b"abcd" and link.delay() == 0 and not link.active
    link.set("latency", 0.05)
    link.set("jitter", 0.01)
    assert 0.05 <= link.delay() <= 0.06
    link.set("corrupt", 1.0)
    damaged = link.fate(b"\x00" * 8)
    assert damaged is not None and len(damaged) == 8 and sum(bin(b).count("1") for b in damaged) == 1
    link.clear()
    link.set("cut")
    assert link.fate(b"abcdef") == b"abc" and link.fate(b"abcdef") is None  # silent after the cut
    link.clear("cut")
    link.set("drop")
    assert link.fate(b"abc") is None
    with pytest.raises(ValueError, match="fraction"):
        link.set("drop", 1.5)


@pytest.mark.parametrize("protocol", TCP_AND_PTY)
@pytest.mark.parametrize("fault", ["{kind: drop}", "{kind: cut}", "{kind: wedge}"], ids=["drop", "cut", "wedge"])
def test_silent_link_gives_expected_errors_then_sampling_resumes(protocol: str, fault: str) -> None:
    record = run(protocol, fault.split()[1].rstrip("}"))
    temps = record.samples.columns["module.temperature"]
    assert record.samples.t == [float(t) for t in range(10)]
    assert all(v is not None for v in temps[:3]), temps
    assert all(v is None for v in temps[4:6]), temps  # replies lost while the fault lasts
    assert all(v is not None for v in temps[7:]), temps  # and back once it ends
    errors = [e for e in record.events if e.kind == "transport_error"]
    assert errors and all(e.note == "expected: injected fault" for e in errors), [(e.t, e.note, e.message) for e in errors]
    assert record.outcome == "pass", record.error


@pytest.mark.parametrize("protocol", TCP_AND_PTY)
def test_latency_beyond_the_timeout_is_a_timeout_and_small_latency_is_not(protocol: str) -> None:
    record = run(protocol, "latency, value: 1 s")
    temps = record.samples.columns["module.temperature"]
    assert all(v is None for v in temps[4:6]) and all(v is not None for v in temps[7:]), temps
    record = run(protocol, "latency, value: 5 ms")
    assert all(v is not None for v in record.samples.columns["module.temperature"])


def test_corrupted_replies_never_pass_as_values_where_the_protocol_has_a_checksum() -> None:
    """Modbus RTU's CRC refuses every damaged reply (Modbus TCP, SCPI and unsecured OPC UA carry no
    checksum: a flipped bit in a value arrives as a wrong value, as on a real link)."""
    record = run("modbus-rtu", "corrupt")
    temps = record.samples.columns["module.temperature"]
    assert all(v is None for v in temps[4:6]) and all(v is not None for v in temps[7:]), temps


@pytest.mark.parametrize("protocol", TCP_AND_PTY)
def test_corrupted_replies_never_hang_a_run(protocol: str) -> None:
    record = run(protocol, "corrupt")
    assert record.samples.t == [float(t) for t in range(10)]
    assert all(v is not None for v in record.samples.columns["module.temperature"][7:])


def test_link_fault_values_are_checked_at_plan() -> None:
    with pytest.raises(ConfigError, match="latency' needs a 'value'"):
        plan(parse_scenario("link.yaml", SCENARIO % "latency"), rig("modbus"))
    with pytest.raises(ConfigError, match="fraction"):
        plan(parse_scenario("link.yaml", SCENARIO % "drop, value: 3"), rig("modbus"))


def test_the_relay_stands_only_where_link_faults_are_injected() -> None:
    p = plan(parse_scenario("link.yaml", SCENARIO % "drop"), rig("modbus"))
    assert p.devices["module"].setup.relay
    p = plan(parse_scenario("link.yaml", SCENARIO % "wedge"), rig("modbus"))
    assert not p.devices["module"].setup.relay  # the Modbus server hangs by itself
    p = plan(parse_scenario("link.yaml", SCENARIO % "drop"), rig("modbus-rtu"))
    assert not p.devices["module"].setup.relay  # the pty line carries the fault


def test_an_error_in_a_call_begun_within_a_timeout_of_a_fault_ending_is_expected() -> None:
    """A call begun just after a fault ended may still meet what the fault left in flight."""
    from twinloop.rigs.rig import Rig

    p = plan(parse_scenario("link.yaml", SCENARIO % "wedge"), rig("modbus"))
    with Rig({"module": p.devices["module"].setup}) as r:
        assert not r.faulted("module")
        r.inject("module", "wedge")
        assert r.faulted("module")
        r.end_fault("module", "wedge")
        ended = r.fault_ended["module"]
        assert r.faulted("module", since=ended + 0.1)  # timeout 200 ms
        assert not r.faulted("module", since=ended + 0.3)
