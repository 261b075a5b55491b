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


@pytest.mark.parametrize("type_, value", [("int16", -1234), ("uint16", 60000), ("int32", -123456789),
                                           ("uint32", 4000000000), ("float32", 1.5), ("float64", -2.25e-7)])
@pytest.mark.parametrize("byte_order", ["big", "little"])
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_every_type_and_order_round_trips(type_: str, value: float, byte_order: str, word_order: str) -> None:
    from twinloop.rigs.modbus import ModbusSignal

    spec = ModbusSignal.model_validate({"register": 0, "type": type_, "unit": "1", "byte_order": byte_order,
                                        "word_order": word_order})
    assert spec.decode(spec.encode(value)) == pytest.approx(value)


def test_word_and_byte_order_follow_the_usual_device_conventions() -> None:
    from twinloop.rigs.modbus import ModbusSignal

    def words(**kw: str) -> list[int]:
        return ModbusSignal.model_validate({"register": 0, "type": "uint32", "unit": "1", **kw}).encode(0x11223344)
    assert words() == [0x1122, 0x3344]                          # ABCD
    assert words(word_order="little") == [0x3344, 0x1122]       # CDAB ("word swapped")
    assert words(byte_order="little") == [0x2211, 0x4433]       # BADC
    assert words(byte_order="little", word_order="little") == [0x4433, 0x2211]  # DCBA


def test_coils_read_and_write_against_a_plain_pymodbus_server() -> None:
    import asyncio
    import threading

    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    ready, box = threading.Event(), {}

    async def serve() -> None:
        device = SimDevice(1, simdata=[SimData(0, count=1, values=[False] * 16, datatype=DataType.BITS)])
        server = ModbusTcpServer(device, address=("127.0.0.1", 0))
        await server.serve_forever(background=True)
        box["port"], box["stop"], box["loop"] = (server.transport.sockets[0].getsockname()[1],
                                                 asyncio.Event(), asyncio.get_running_loop())
        ready.set()
        await box["stop"].wait()
        await server.shutdown()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        signals = {"pump_on": {"register": 0, "table": "coil", "type": "bool", "unit": "1", "writable": True}}
        with open_transport("rig", f"modbus+tcp://127.0.0.1:{box['port']}/unit/1", signals) as t:
            assert t.read() == {"pump_on": 0.0}
            t.write("pump_on", 1)
            assert t.read() == {"pump_on": 1.0}
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(timeout=10)


@pytest.mark.parametrize("spec, words", [
    ({"register": 0, "table": "coil", "type": "int16", "unit": "1"}, "coils and discrete inputs are type 'bool'"),
    ({"register": 0, "table": "input", "unit": "1", "writable": True}, "read-only"),
])
def test_register_maps_are_checked(spec: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        open_transport("m", "modbus+tcp://127.0.0.1:502/unit/1", {"x": spec})


@pytest.mark.parametrize("address, words", [
    ("modbus+rtu://", "must look like modbus+rtu:///dev/ttyUSB0"),
    ("modbus+rtu:///dev/ttyUSB0?parity=X", "bad setting parity=X"),
    ("modbus+rtu:///dev/ttyUSB0?unit=300", "unit must be in 0..247"),
])
def test_rtu_addresses_are_checked(address: str, words: str) -> None:
    from twinloop.rigs.modbus import parse_rtu_address

    with pytest.raises(ConfigError) as err:
        parse_rtu_address(address)
    assert words in str(err.value)
