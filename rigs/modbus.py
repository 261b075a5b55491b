"""Modbus TCP transport over pymodbus: ``modbus+tcp://HOST:PORT/unit/ID``."""

from __future__ import annotations

import logging
from typing import Any, Literal, Mapping

from pydantic import ConfigDict, Field

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from twinloop.rigs.transport import SignalSpec, Transport
from twinloop.errors import (ConfigError, TransportInitError, TransportOperationError,
                             TransportTimeoutError)

DataType = ModbusTcpClient.DATATYPE
RANGES: dict[str, tuple[float, float]] = {"int16": (-2**15, 2**15 - 1), "uint16": (0, 2**16 - 1),
                                          "int32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1),
                                          "float32": (-3.4028234e38, 3.4028234e38)}
TYPES: dict[str, DataType] = {"int16": DataType.INT16, "uint16": DataType.UINT16,
                              "int32": DataType.INT32, "uint32": DataType.UINT32,
                              "float32": DataType.FLOAT32}


# Every pymodbus failure reaches the caller as a TransportError naming device and address,
# and the run records it; pymodbus's own log lines (hex dumps, "no response") only repeat it.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

class ModbusSignal(SignalSpec):
    """A signal in one or two holding/input registers (``register`` in YAML)."""

    model_config = ConfigDict(populate_by_name=True)
    # ``register`` would shadow ABCMeta.register on pydantic models.
    reg: int = Field(alias="register", ge=0, le=65535)
    type: Literal["int16", "uint16", "int32", "uint32", "float32"] = "int16"
    table: Literal["holding", "input"] = "holding"

    @property
    def width(self) -> int:
        """Registers the value spans."""
        return TYPES[self.type].value[1]

    @property
    def raw_range(self) -> tuple[float, float]:
        """The smallest and largest raw value the register type holds."""
        return RANGES[self.type]

    def encode(self, raw: float, saturate: bool = False) -> list[int]:
        """Raw value -> register words (big-endian word order).

        A value the type cannot hold raises ValueError saying so, or with
        ``saturate`` is clipped to the type's range (a device's firmware view).
        """
        low, high = self.raw_range
        value = raw if self.type == "float32" else int(round(raw))
        if not low <= value <= high:
            if not saturate:
                units = (low * self.scale + self.offset, high * self.scale + self.offset)
                raise ValueError(f"{raw * self.scale + self.offset:g} {self.unit} is outside what a {self.type} "
                                 f"register with scale {self.scale:g} holds ({min(units):g}..{max(units):g} "
                                 f"{self.unit})")
            value = min(max(value, low), high)
        return ModbusTcpClient.convert_to_registers(value, TYPES[self.type])

    def decode(self, words: list[int]) -> float:
        """Register words -> raw value."""
        return float(ModbusTcpClient.convert_from_registers(words, TYPES[self.type]))


def parse_modbus_address(address: str) -> tuple[str, int, int]:
    """``modbus+tcp://127.0.0.1:5020/unit/1`` -> (host, port, unit id)."""
    from urllib.parse import urlsplit

    url = urlsplit(address)
    parts = [p for p in url.path.split("/") if p]
    try:
        port = url.port or 502
    except ValueError:
        raise ConfigError(f"bad port in Modbus address {address!r}") from None
    if not url.hostname or len(parts) != 2 or parts[0] != "unit" or not parts[1].isdigit() \
            or not 0 <= int(parts[1]) <= 255:
        raise ConfigError(f"Modbus address {address!r} must look like "
                          "modbus+tcp://HOST:PORT/unit/ID with ID in 0..255")
    return url.hostname, port, int(parts[1])


class ModbusTcpTransport(Transport):
    """Reads and writes scaled signals in Modbus registers with the pymodbus client."""

    scheme = "modbus+tcp"
    signal_spec = ModbusSignal

    @classmethod
    def check(cls, device: str, address: str | None, signals: Mapping[str, SignalSpec], options: Any) -> None:
        if address is not None:
            parse_modbus_address(address)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.host, self.port, self.unit = parse_modbus_address(self.address)
        self.client = ModbusTcpClient(self.host, port=self.port, timeout=self.timeout, retries=0)

    def _open(self) -> None:
        if not self.client.connect():
            raise TransportInitError(f"{self._where()}: no Modbus server answers "
                                     f"(connection to {self.host}:{self.port} refused or timed out)")

    def _close(self) -> None:
        self.client.close()

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            response = fn(*args, device_id=self.unit, **kwargs)
        except ModbusIOException as err:
            raise TransportTimeoutError(f"{self._where()}: no answer to {what} within "
                                        f"{self.timeout} s ({err})") from err
        except ConnectionException as err:
            raise TransportOperationError(f"{self._where()}: connection lost during {what}: {err}") from err
        if response.isError():
            raise TransportOperationError(f"{self._where()}: device refused {what}: {response}")
        return response

    def _read(self, specs: Mapping[str, ModbusSignal]) -> dict[str, float]:
        out: dict[str, float] = {}
        for table in ("holding", "input"):
            group = {n: s for n, s in specs.items() if s.table == table}
            if not group:
                continue
            start = min(s.reg for s in group.values())
            end = max(s.reg + s.width for s in group.values())
            fn = self.client.read_holding_registers if table == "holding" else self.client.read_input_registers
            if end - start <= 125:  # one request covers them all (Modbus limit: 125 words)
                words = self._call(f"read {table} {start}..{end - 1}", fn, start, count=end - start).registers
                for n, s in group.items():
                    out[n] = s.decode(words[s.reg - start:s.reg - start + s.width])
            else:
                for n, s in group.items():
                    words = self._call(f"read {table} {s.reg}", fn, s.reg, count=s.width).registers
                    out[n] = s.decode(words)
        return out

    def _write(self, name: str, spec: ModbusSignal, raw: float) -> None:
        if spec.table != "holding":
            raise TransportOperationError(f"{self._where()}: '{name}' is an input register (read-only)")
        try:
            words = spec.encode(raw)
        except ValueError as err:
            raise TransportOperationError(f"{self._where()}: cannot write {name}: {err}") from None
        self._call(f"write {name} at register {spec.reg}", self.client.write_registers,
                   spec.reg, words)
