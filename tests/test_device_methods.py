"""Device methods over OPC UA: a scenario's `call` step reaches a real asyncua method node."""

from __future__ import annotations

import pytest

from twinloop.errors import TransportInitError, TransportOperationError
from twinloop.harness.plan import plan
from twinloop.harness.runner import execute
from twinloop.harness.scenario import parse_scenario
from twinloop.rigs.profile import RigProfile, RigSource
from twinloop.rigs.registry import emulator_kind, open_transport

SCENARIO = """\
scenario: methods
dut: {id: pm, version: "1"}
devices:
  module: {type: power_module}
steps:
  - wait: 2 s
  - call: {device: module, method: set_operating_point, args: [%s, 0], note: "load on, fan off"}
  - wait: 2 s
expect:
  - {name: tj, signal: module.temperature, max: 125 degC}
"""


def opcua_rig() -> RigSource:
    profile = RigProfile.model_validate({"rig": "emulated-opcua", "clock": "simulated", "devices": {"module": {
        "emulator": "power_module", "protocol": "opcua", "timeout": "1 s"}}})
    return RigSource(profile, "<emulated>", None, "0" * 64)


def test_a_call_step_sets_what_the_method_sets_and_is_logged() -> None:
    record = execute(plan(parse_scenario("m.yaml", SCENARIO % "250"), opcua_rig()))
    assert record.outcome == "pass", record.error
    power, fan = record.samples.columns["module.power"], record.samples.columns["module.fan"]
    assert power[:3] == [0.0, 0.0, 0.0] and power[3:] == [250.0, 250.0]
    assert fan[:3] == [1.0, 1.0, 1.0] and fan[3:] == [0.0, 0.0]
    [call] = [e for e in record.events if e.kind == "call"]
    assert call.data["method"] == "set_operating_point" and call.data["args"] == [250, 0] and call.data["ok"]


def test_a_refused_call_is_an_error_naming_the_status() -> None:
    record = execute(plan(parse_scenario("m.yaml", SCENARIO % "9000"), opcua_rig()))
    assert record.outcome == "error" and "refused: BadOutOfRange" in record.error


def test_a_method_the_server_lacks_fails_at_open_and_transports_without_methods_refuse() -> None:
    kind = emulator_kind("power_module", "opcua")
    with kind.build() as emulator:
        t = open_transport("module", emulator.address, kind.signal_map,
                           options={"methods": {"reset": "2:power_module/2:reset"}})
        with pytest.raises(TransportInitError, match="method 'reset': node 2:power_module/2:reset not found"):
            t.open()
    modbus = emulator_kind("power_module", "modbus")
    with modbus.build() as emulator:
        with open_transport("module", emulator.address, modbus.signal_map) as t:
            with pytest.raises(TransportOperationError, match="no method 'set_operating_point'; declared: none"):
                t.call("set_operating_point", [1.0, 1.0])
