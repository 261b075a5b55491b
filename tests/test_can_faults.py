"""Faults on an emulated CAN node's frames (its ``link``, a ``CanLink``) as the CAN transport sees them:
silence is a timeout within the device timeout, a damaged frame or a bus-off an error frame naming its
class, latency late frames; ending a fault (or cycling the power) resumes reads."""

from __future__ import annotations

import time

import can
import pytest

from twinloop.errors import TransportOperationError, TransportTimeoutError
from twinloop.harness.plan import plan
from twinloop.harness.runner import execute
from twinloop.harness.scenario import parse_scenario
from twinloop.rigs.emulators.base import EmulatorKind
from twinloop.rigs.emulators.can_node import CanDeviceNode, CanLink
from twinloop.rigs.emulators.power_module import PowerModuleDevice
from twinloop.rigs.profile import RigProfile, RigSource
from twinloop.rigs.registry import open_transport

KIND = EmulatorKind(PowerModuleDevice, CanDeviceNode)
TIMEOUT = 0.2


@pytest.fixture
def node():
    emulator = KIND.build(sensor_noise=0.0)
    emulator.start()
    yield emulator
    emulator.close()


@pytest.fixture
def t(node):
    with open_transport("module", node.address, KIND.signal_map, timeout=TIMEOUT,
                        options=KIND.transport_options) as transport:
        assert transport.read(["ambient"]) == {"ambient": 25.0}
        yield transport


def inject(node, t, kind: str, value: float | None = None) -> None:
    """Inject ``kind`` and let the frames sent before it arrive and be read (or fail to be)."""
    node.link.set(kind, value)
    time.sleep(0.05)
    try:
        t.read(["ambient"])
    except (TransportOperationError, TransportTimeoutError):
        pass


def timed_out(t) -> float:
    """Seconds a read took to fail with a timeout."""
    start = time.monotonic()
    with pytest.raises(TransportTimeoutError, match=f"no frame of PM_Status within {TIMEOUT} s"):
        t.read(["ambient"])
    return time.monotonic() - start


def resumes(t) -> None:
    """Reads come back (an error frame sent before the fault ended may still be reported once)."""
    for _ in range(3):
        try:
            assert t.read(["ambient"]) == {"ambient": 25.0}
            return
        except TransportOperationError:
            continue
    pytest.fail("reads did not resume")


def test_the_node_carries_can_link_faults_and_bus_off() -> None:
    assert CanDeviceNode.has_link and "bus_off" in KIND.faults and "corrupt" in KIND.faults
    link = CanLink()
    frame = can.Message(arbitration_id=0x100, data=bytes(8), is_extended_id=False)
    assert link.frame(frame) is frame and not link.active
    link.set("corrupt")
    damaged = link.frame(frame)
    assert damaged.is_error_frame and damaged.arbitration_id == 0x08 and damaged.data[3] == 0x08
    link.clear()
    link.set("bus_off")
    assert link.active
    off = link.frame(frame)
    assert off.is_error_frame and off.arbitration_id == 0x40 and link.frame(frame) is None
    link.clear("bus_off")
    assert link.frame(frame) is frame and not link.active


@pytest.mark.parametrize("kind", ["drop", "cut", "wedge"])
def test_a_silent_node_is_a_timeout_within_the_device_timeout_then_reads_resume(node, t, kind: str) -> None:
    inject(node, t, kind)
    assert timed_out(t) < TIMEOUT + 0.1
    node.link.clear(kind)
    resumes(t)


def test_a_corrupted_frame_is_a_crc_error_frame(node, t) -> None:
    inject(node, t, "corrupt")
    with pytest.raises(TransportOperationError, match=r"error frame on the bus: protocol violation \(CRC error\) "
                                                      r"\(class 0x8"):
        t.read(["ambient"])
    node.link.clear("corrupt")
    resumes(t)


def test_bus_off_is_named_then_the_node_is_silent_and_deaf_until_cleared(node, t) -> None:
    node.link.set("bus_off")
    with pytest.raises(TransportOperationError, match=r"error frame on the bus: bus-off \(class 0x40\)"):
        for _ in range(3):  # a status frame sent just before may come first
            t.read(["ambient"])
    assert timed_out(t) < TIMEOUT + 0.1
    t.write("power", 42.0)
    time.sleep(0.1)
    assert node.values["power"] == 0.0  # a bus-off node hears no commands
    node.link.clear("bus_off")
    resumes(t)
    assert node.values["power"] == 0.0


def test_a_power_cycle_ends_bus_off(node, t) -> None:
    inject(node, t, "bus_off")
    assert timed_out(t) < TIMEOUT + 0.1
    node.stop()
    node.start()
    assert not node.link.bus_off
    resumes(t)


def test_latency_delays_frames_without_stalling_the_node(node, t) -> None:
    inject(node, t, "latency", 0.5)
    assert timed_out(t) < TIMEOUT + 0.1  # the first delayed frame is not due yet
    start = time.monotonic()
    node.server.push()
    assert time.monotonic() - start < 0.05  # frames are held, the node's cycle goes on
    t.write("fan", 1)
    t.write("power", 40.0)
    deadline = time.monotonic() + 1
    while node.values["power"] != 40.0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert time.monotonic() - start < 0.3  # commands still reach the device at once
    assert t.read(["power"]) == {"power": 0.0}  # status frames sent before the command, arriving late
    time.sleep(0.6)
    assert t.read(["power"]) == {"power": 40.0}
    node.link.clear("latency")
    resumes(t)


def test_jitter_keeps_frames_in_order(node, t) -> None:
    node.link.set("jitter", 0.03)
    with can.Bus(interface="virtual", channel=node.server.channel) as spy:
        for watts in range(1, 21):
            node.device.write("power", float(watts))
            node.server.push()
        seen, deadline = [], time.monotonic() + 3
        while (not seen or seen[-1] < 20) and time.monotonic() < deadline:
            frame = spy.recv(timeout=0.2)
            if frame is not None and frame.arbitration_id == 0x100:
                seen.append(round(t.messages["PM_Status"].decode(frame.data)["Power"]))
    assert seen and seen[-1] == 20 and seen == sorted(seen), seen


SCENARIO = """\
scenario: can-faults
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


@pytest.mark.parametrize("kind", ["drop", "corrupt", "cut", "bus_off", "wedge"])
@pytest.mark.parametrize("protocol", ["can", "can-socketcand"])
def test_scenario_faults_on_can_are_expected_errors_and_sampling_resumes(protocol: str, kind: str) -> None:
    profile = RigProfile.model_validate({"rig": "emulated-can", "clock": "simulated", "devices": {"module": {
        "emulator": "power_module", "protocol": protocol, "timeout": "200 ms"}}})
    record = execute(plan(parse_scenario("can-faults.yaml", SCENARIO % kind),
                          RigSource(profile, "<emulated>", None, "0" * 64)))
    temps = record.samples.columns["module.temperature"]
    assert record.samples.t == [float(s) for s in range(10)]
    assert all(v is not None for v in temps[:3]), temps
    assert all(v is None for v in temps[4:6]), temps
    assert all(v is not None for v in temps[7:]), temps
    errors = [e for e in record.events if e.kind == "transport_error"]
    assert errors and all(e.note == "expected: injected fault" for e in errors), errors
    assert record.outcome == "pass", record.error
