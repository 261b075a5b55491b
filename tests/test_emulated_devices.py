"""Devices apart from protocols: saturation at register limits, sensor faults, the protocol of a rig entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from twinloop.errors import ConfigError, TransportOperationError
from twinloop.harness.plan import plan
from twinloop.harness.runner import execute
from twinloop.harness.scenario import parse_scenario
from twinloop.rigs.emulators.modbus_server import ModbusDeviceServer
from twinloop.rigs.emulators.power_module import PowerModuleDevice, PowerModuleEmulator
from twinloop.rigs.modbus import ModbusTcpTransport

ROOT = Path(__file__).parents[1]
SCENARIO = """\
scenario: sensor-faults
dut: {id: pm, version: "1"}
devices:
  module: {type: power_module}
steps:
  - set: {signal: module.power, value: 20 W}
  - wait: 3 min
  - fault: {kind: stuck, signal: module.temperature, value: 40 degC, duration: 20 s}
  - wait: 1 min
  - fault: {kind: noise, signal: module.temperature, value: 3 degC}
  - wait: 1 min
expect:
  - {name: tj, signal: module.temperature, max: 125 degC}
"""


def test_a_value_beyond_the_register_saturates_at_the_device_and_is_refused_by_the_transport() -> None:
    with PowerModuleEmulator(sensor_noise=0.0) as emulator:
        emulator.device.values["temperature"] = 400.0  # beyond int16 x 0.01 (327.67 degC)
        transport = ModbusTcpTransport("module", emulator.address, emulator.signal_map)
        with transport:
            assert transport.read(["temperature"]) == {"temperature": pytest.approx(327.67)}
            with pytest.raises(TransportOperationError, match=r"outside what a uint16 register with scale 0.1 "
                                                              r"holds \(0..6553.5 W\)"):
                transport.write("power", 7000.0)


def test_a_device_without_its_own_register_map_is_served_as_float32_pairs() -> None:
    class Plain(PowerModuleDevice):
        modbus_map = None  # type: ignore[assignment]
    spec = ModbusDeviceServer.signal_map(Plain)
    assert spec["power"] == {"register": 4, "type": "float32", "unit": "W", "writable": True}


def test_stuck_and_noisy_sensors_are_scenario_faults_with_a_duration() -> None:
    record = execute(plan(parse_scenario("faults.yaml", SCENARIO)))
    temps = record.samples.columns["module.temperature"]
    assert all(v == 40.0 for v in temps[181:200])  # stuck from t=180 s for 20 s, at 40 degC
    assert temps[200] > 45  # the physics carried on underneath
    calm = [abs(b - a) for a, b in zip(temps[210:240], temps[211:241])]
    noisy = [abs(b - a) for a, b in zip(temps[250:300], temps[251:301])]
    assert max(noisy) > 5 * max(calm)
    assert record.outcome == "pass"


@pytest.mark.parametrize("change, key, words", [
    ("{emulator: power_module, protocol: smoke-signals}", "devices.module.protocol",
     "unknown emulator protocol 'smoke-signals'"),
    ("{emulator: power_module, params: {initial_damage: -1}}", "devices.module.params",
     "initial_damage must be in [0, 5)"),
])
def test_rig_entries_for_emulators_are_checked_at_plan(tmp_path: Path, change: str, key: str, words: str) -> None:
    rig = tmp_path / "rig.yaml"
    rig.write_text(f"rig: r\ndevices:\n  module: {change}\n")
    with pytest.raises(ConfigError) as err:
        plan(parse_scenario("faults.yaml", SCENARIO), rig)
    assert err.value.key == key and words in str(err.value)
