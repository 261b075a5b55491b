"""The CAN transport (python-can + cantools) against the emulated CAN node on the in-process virtual bus."""

from __future__ import annotations

import time
from pathlib import Path

import can
import pytest

from twinloop.errors import ConfigError, TransportOperationError, TransportTimeoutError
from twinloop.harness.plan import plan
from twinloop.rigs.can import bus_args
from twinloop.rigs.emulators.base import EmulatorKind
from twinloop.rigs.emulators.can_node import CanDeviceNode
from twinloop.rigs.emulators.power_module import PowerModuleDevice
from twinloop.rigs.registry import open_transport

ROOT = Path(__file__).parents[1]
KIND = EmulatorKind(PowerModuleDevice, CanDeviceNode)


@pytest.fixture
def node():
    emulator = KIND.build(sensor_noise=0.0)
    emulator.start()
    yield emulator
    emulator.close()


def transport(node, **options):
    return open_transport("module", node.address, KIND.signal_map, timeout=0.5,
                          options={**KIND.transport_options, **options})


def test_status_frames_are_decoded_and_commands_encoded(node) -> None:
    with transport(node) as t:
        t.write("power", 30.0)
        t.write("fan", 0)
        node.step(600.0)
        values = t.read()
        assert values["power"] == 30.0 and values["fan"] == 0.0 and values["ambient"] == 25.0
        assert values["temperature"] > 100


def test_the_first_command_keeps_the_values_the_device_reports_for_the_others(node) -> None:
    """A command frame carries power and fan together: writing power must not switch the fan off."""
    with transport(node) as t:
        assert t.read(["fan"]) == {"fan": 1.0}
        t.write("power", 40.0)
        node.step(0.1)
        assert t.read(["power", "fan"]) == {"power": 40.0, "fan": 1.0}


def test_a_silent_node_is_a_timeout_and_an_error_frame_an_error(node) -> None:
    with transport(node) as t:
        assert t.read(["ambient"]) == {"ambient": 25.0}
        node.server.wedge()
        with pytest.raises(TransportTimeoutError, match="no frame of PM_Status within 0.5 s"):
            t.read(["ambient"])
        node.server.unwedge()
        assert t.read(["ambient"]) == {"ambient": 25.0}
        with can.Bus(interface="virtual", channel=node.server.channel) as other:
            other.send(can.Message(arbitration_id=0x0, is_error_frame=True, data=b"\x04"))
        with pytest.raises(TransportOperationError, match="error frame on the bus"):
            t.read(["ambient"])


def test_commands_can_repeat_periodically(node) -> None:
    with transport(node, periodic="20 ms") as t, can.Bus(interface="virtual", channel=node.server.channel) as spy:
        t.write("power", 12.5)
        deadline, seen = time.monotonic() + 5, 0
        while seen < 3 and time.monotonic() < deadline:
            frame = spy.recv(timeout=0.5)
            seen += frame is not None and frame.arbitration_id == 0x200
        assert seen >= 3


def test_out_of_range_commands_are_refused_clearly(node) -> None:
    with transport(node) as t:
        with pytest.raises(TransportOperationError, match="cannot encode PM_Command.PowerSetpoint = 7000"):
            t.write("power", 7000.0)


@pytest.mark.parametrize("address, words", [
    ("can+udp_multicast://239.0.0.1", "beyond loopback"),
    ("can+socketcand://127.0.0.1/can0", "must look like can+socketcand://HOST:PORT/can0"),
    ("can+socketcan://", "must look like can+INTERFACE://CHANNEL"),
])
def test_bad_and_forbidden_addresses(address: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        bus_args(address)
    assert words in str(err.value)


@pytest.mark.parametrize("change, key, words", [
    ("dbc: ../emulators/power_module.dbc", "devices.module.options.dbc", "cannot load DBC"),
    ("set_signal: PowerSetpoint", "devices.module.signals.power.set_message", "PM_Command.PowerSetpont is not in"),
])
def test_dbc_problems_are_found_at_plan_with_the_rig_line(tmp_path: Path, change: str, key: str, words: str) -> None:
    text = (ROOT / "rigs" / "profiles" / "bench-can.yaml").read_text().replace(
        "../emulators/", str(ROOT / "rigs" / "emulators") + "/")
    text = text.replace(change.replace("../emulators/", str(ROOT / "rigs" / "emulators") + "/"),
                        change.replace("../emulators/", "missing/").replace("Setpoint", "Setpont"))
    rig = tmp_path / "bench-can.yaml"
    rig.write_text(text)
    with pytest.raises(ConfigError) as err:
        plan(ROOT / "scenarios" / "smoke.yaml", rig)
    assert err.value.file == str(rig) and err.value.key == key and words in str(err.value)
