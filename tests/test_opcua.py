"""The OPC UA transport (asyncua) against the emulated device's server on 127.0.0.1."""

from __future__ import annotations

import time

import pytest

from twinloop.errors import ConfigError, TransportInitError
from twinloop.rigs.emulators.base import EmulatorKind
from twinloop.rigs.emulators.opcua_server import OpcUaDeviceServer
from twinloop.rigs.emulators.power_module import PowerModuleDevice
from twinloop.rigs.registry import open_transport

KIND = EmulatorKind(PowerModuleDevice, OpcUaDeviceServer)


@pytest.fixture(scope="module")
def server():
    emulator = KIND.build(sensor_noise=0.0)
    emulator.start()
    yield emulator
    emulator.close()


def test_reads_by_browse_path_and_node_id_and_writes_typed_values(server) -> None:
    signals = dict(KIND.signal_map)
    signals["ambient"] = {"node": server.server.variables["ambient"].nodeid.to_string(), "unit": "degC"}
    with open_transport("module", server.address, signals, timeout=2.0) as t:
        t.write("power", 30.0)
        server.step(600.0)
        values = t.read()
        assert values["power"] == 30.0 and values["ambient"] == 25.0
        assert 60 < values["temperature"] < 70
        assert server.device.values["power"] == 30.0
        t.write("power", 0.0)
        server.step(1.0)


def test_a_unit_the_server_contradicts_fails_at_open(server) -> None:
    signals = {**KIND.signal_map, "temperature": {**KIND.signal_map["temperature"], "unit": "degF"}}
    with pytest.raises(TransportInitError, match="the server says its unit is 'degC', the rig profile says 'degF'"):
        open_transport("module", server.address, signals, timeout=2.0).open()


def test_a_missing_node_is_named(server) -> None:
    signals = {"voltage": {"path": "2:power_module/2:voltage", "unit": "V"}}
    with pytest.raises(TransportInitError, match="signal 'voltage': node 2:power_module/2:voltage not found"):
        open_transport("module", server.address, signals, timeout=2.0).open()


def test_subscribed_signals_are_pushed_into_a_cache(server) -> None:
    with open_transport("module", server.address, KIND.signal_map, timeout=2.0,
                        options={"subscribe": ["temperature"], "publishing_interval": "50 ms"}) as t:
        server.device.values["temperature"] = 42.0
        server.server.sync()
        deadline = time.monotonic() + 10
        while t.read(["temperature"])["temperature"] != 42.0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert t.read(["temperature", "ambient"]) == {"temperature": 42.0, "ambient": 25.0}


@pytest.mark.parametrize("options, words", [
    ({"subscribe": ["temprature"]}, "subscribe names unknown signal 'temprature'"),
    ({"security_policy": "Basic256Sha256"}, "needs 'certificate' and 'private_key'"),
])
def test_options_are_checked(options: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        open_transport("module", "opc.tcp://127.0.0.1:4840/", KIND.signal_map, options=options)
