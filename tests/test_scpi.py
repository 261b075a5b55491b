"""The SCPI transport over pyserial, against the emulated instrument on a TCP socket and on a pty."""

from __future__ import annotations

import pytest

from twinloop.errors import ConfigError, TransportOperationError, TransportTimeoutError
from twinloop.rigs.emulators.base import EmulatorKind
from twinloop.rigs.emulators.power_module import PowerModuleDevice
from twinloop.rigs.emulators.scpi_server import ScpiPtyServer, ScpiSocketServer
from twinloop.rigs.registry import open_transport
from twinloop.rigs.scpi import serial_url


@pytest.fixture(params=[ScpiSocketServer, ScpiPtyServer], ids=["socket", "pty"])
def instrument(request: pytest.FixtureRequest):
    kind = EmulatorKind(PowerModuleDevice, request.param)
    emulator = kind.build(sensor_noise=0.0)
    emulator.start()
    yield emulator, kind.signal_map
    emulator.close()


def test_reads_and_writes_through_queries_and_commands(instrument) -> None:
    emulator, signals = instrument
    with open_transport("module", emulator.address, signals, timeout=0.5) as t:
        t.write("power", 30)
        assert t.read(["power", "ambient"]) == {"power": 30.0, "ambient": 25.0}
        for _ in range(600):
            emulator.step(1.0)
        assert 60 < t.read(["temperature"])["temperature"] < 70
        assert emulator.device.values["power"] == 30.0


def test_an_unanswered_query_is_a_timeout_naming_the_query(instrument) -> None:
    emulator, signals = instrument
    ghost = {**signals, "voltage": {"query": "MEAS:VOLT?", "unit": "V"}}
    with open_transport("module", emulator.address, ghost, timeout=0.3) as t:
        with pytest.raises(TransportTimeoutError, match=r"no answer to 'MEAS:VOLT\?' within 0.3 s"):
            t.read(["voltage"])
        assert t.read(["ambient"]) == {"ambient": 25.0}  # the line recovers for the next query
        emulator.server.wedge()
        with pytest.raises(TransportTimeoutError):
            t.read(["ambient"])
        emulator.server.unwedge()
        assert t.read(["ambient"]) == {"ambient": 25.0}


def test_a_reply_that_is_not_a_number_and_a_signal_without_a_set_command(instrument) -> None:
    emulator, signals = instrument
    odd = {**signals, "ident": {"query": "*IDN?", "unit": "1"},
           "locked": {"query": "SOUR:POW?", "unit": "W", "writable": True}}
    with open_transport("module", emulator.address, odd, timeout=0.5) as t:
        with pytest.raises(TransportOperationError, match=r"'\*IDN\?' answered 'twinloop,power_module"):
            t.read(["ident"])
        with pytest.raises(TransportOperationError, match="'locked' has no 'set' command"):
            t.write("locked", 1.0)


@pytest.mark.parametrize("address, words", [
    ("scpi+socket://127.0.0.1", "must look like scpi+socket://HOST:PORT"),
    ("scpi+serial://", "must look like scpi+serial:///dev/ttyUSB0"),
    ("scpi+serial:///dev/ttyUSB0?speed=9600", "unknown setting 'speed'"),
])
def test_bad_addresses_are_config_errors(address: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        serial_url(address)
    assert words in str(err.value)


def test_options_are_validated_by_the_transport() -> None:
    with pytest.raises(ConfigError, match="unknown option 'baud'"):
        open_transport("module", "scpi+socket://127.0.0.1:5025", {}, options={"baud": 9600})
    t = open_transport("module", "scpi+socket://127.0.0.1:5025", {}, options={"read_terminator": "\r\n"})
    assert t.options.read_terminator == "\r\n"
