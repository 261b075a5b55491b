"""The Modbus TCP transport against the pymodbus emulator on 127.0.0.1 (real sockets)."""

from __future__ import annotations

import socket

import pytest

from twinloop.rigs.emulators.power_module import PowerModuleEmulator
from twinloop.rigs.modbus import parse_modbus_address
from twinloop.rigs.registry import open_transport, transports
from twinloop.errors import (ConfigError, TransportInitError, TransportOperationError,
                             TransportUnavailableError)


def test_reads_and_writes_scaled_signals(power_module_emulator: PowerModuleEmulator) -> None:
    emu = power_module_emulator
    with open_transport("module", emu.address, emu.signal_map) as transport:
        transport.write("power", 12.5)
        values = transport.read()
        assert values["power"] == pytest.approx(12.5)
        assert values["ambient"] == pytest.approx(25.0)
        assert set(values) == {"temperature", "ambient", "power", "fan"}
        transport.write("power", 0.0)


def test_physics_moves_the_register(power_module_emulator: PowerModuleEmulator) -> None:
    emu = PowerModuleEmulator(sensor_noise=0.0).start()
    try:
        with open_transport("module", emu.address, emu.signal_map) as transport:
            transport.write("power", 30.0)
            cold = transport.read(["temperature"])["temperature"]
            for _ in range(300):
                emu.step(1.0)
            hot = transport.read(["temperature"])["temperature"]
            transport.write("fan", 0)
            for _ in range(300):
                emu.step(1.0)
            hotter = transport.read(["temperature"])["temperature"]
        assert cold == pytest.approx(25.0, abs=0.01)
        assert 60 < hot < hotter
    finally:
        emu.stop()


def test_read_only_and_unknown_signals_are_refused(power_module_emulator: PowerModuleEmulator) -> None:
    emu = power_module_emulator
    with open_transport("module", emu.address, emu.signal_map) as transport:
        with pytest.raises(TransportOperationError, match="'temperature' is read-only"):
            transport.write("temperature", 20.0)
        with pytest.raises(TransportOperationError, match="no signal 'voltage'"):
            transport.read(["voltage"])


def test_device_refusal_names_device_and_register(power_module_emulator: PowerModuleEmulator) -> None:
    emu = power_module_emulator
    with open_transport("module", emu.address, {"ghost": {"register": 500, "unit": "V"}}) as transport:
        with pytest.raises(TransportOperationError, match="device 'module'.*refused read holding 500"):
            transport.read()


def test_connection_refused_is_an_init_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    transport = open_transport("module", f"modbus+tcp://127.0.0.1:{port}/unit/1",
                               {"t": {"register": 0, "unit": "degC"}}, timeout=0.3)
    with pytest.raises(TransportInitError, match=f"device 'module' at modbus\\+tcp://127.0.0.1:{port}"):
        transport.open()
    transport.close()


def test_registry_and_addresses() -> None:
    assert "modbus+tcp" in transports.names()
    assert parse_modbus_address("modbus+tcp://127.0.0.1:5020/unit/7") == ("127.0.0.1", 5020, 7)
    with pytest.raises(ConfigError, match="must look like"):
        parse_modbus_address("modbus+tcp://127.0.0.1:5020/slave/7")
    with pytest.raises(TransportUnavailableError, match=r"unknown transport 'carrier\+pigeon'; known: (.*, )?modbus\+tcp"):
        open_transport("module", "carrier+pigeon://loft/1", {})
    with pytest.raises(ConfigError, match="signals.t.register"):
        open_transport("module", "modbus+tcp://127.0.0.1:502/unit/1", {"t": {"unit": "degC"}})
