"""Modbus over pymodbus: TCP (``modbus+tcp://HOST:PORT/unit/ID``) and RTU on a serial line
(``modbus+rtu:///dev/ttyUSB0?baudrate=19200&parity=E&unit=1``).

Register maps give each signal a table (holding or input registers, coils,
discrete inputs), a type (int16 ... float64), scale and offset, and the byte
and word order of multi-register values. Values are packed with ``struct``
here, so a value a register cannot hold is a clear error (or, on the
emulator's side, saturates as device firmware does).
"""

from __future__ import annotations

import logging
import struct
from typing import Any, Callable, Literal, Mapping
from urllib.parse import parse_qsl, urlsplit

from pydantic import ConfigDict, Field, model_validator

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from twinloop.errors import (ConfigError, TransportInitError, TransportOperationError,
                             TransportTimeoutError)
from twinloop.rigs.transport import SignalSpec, Transport

FORMATS = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f", "float64": "d"}
RANGES: dict[str, tuple[float, float]] = {"int16": (-2**15, 2**15 - 1), "uint16": (0, 2**16 - 1),
                                          "int32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1),
                                          "float32": (-3.4028234e38, 3.4028234e38),
                                          "float64": (-1.7976931348623157e308, 1.7976931348623157e308),
                                          "bool": (0, 1)}
MAX_WORDS = 125  # one read request, by the Modbus specification
MAX_BITS = 2000

# Every pymodbus failure reaches the caller as a TransportError naming device and address,
# and the run records it; pymodbus's own log lines (hex dumps, "no response") only repeat it.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class ModbusSignal(SignalSpec):
    """A signal in registers or bits (``register`` in YAML is the address in its table)."""

    model_config = ConfigDict(populate_by_name=True)
    # ``register`` would shadow ABCMeta.register on pydantic models.
    reg: int = Field(alias="register", ge=0, le=65535)
    type: Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bool"] = "int16"
    table: Literal["holding", "input", "coil", "discrete"] = "holding"
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"

    @model_validator(mode="after")
    def _bits(self) -> "ModbusSignal":
        if (self.table in ("coil", "discrete")) != (self.type == "bool"):
            raise ValueError("coils and discrete inputs are type 'bool', and only they are")
        if self.table in ("input", "discrete") and self.writable:
            raise ValueError(f"a {self.table} table is read-only; it cannot be writable")
        return self

    @property
    def width(self) -> int:
        """Registers (or bits) the value spans."""
        return 1 if self.type == "bool" else struct.calcsize(FORMATS[self.type]) // 2

    @property
    def raw_range(self) -> tuple[float, float]:
        """The smallest and largest raw value the type holds."""
        return RANGES[self.type]

    def encode(self, raw: float, saturate: bool = False) -> list[int]:
        """Raw value -> register words (or a one-element bit list) in the device's byte and word order.

        A value the type cannot hold raises ValueError saying so, or with
        ``saturate`` is clipped to the type's range (a device's firmware view).
        """
        low, high = self.raw_range
        value = raw if self.type.startswith("float") else int(round(raw))
        if not low <= value <= high:
            if not saturate:
                units = (low * self.scale + self.offset, high * self.scale + self.offset)
                raise ValueError(f"{raw * self.scale + self.offset:g} {self.unit} is outside what a {self.type} "
                                 f"register with scale {self.scale:g} holds ({min(units):g}..{max(units):g} "
                                 f"{self.unit})")
            value = min(max(value, low), high)
        if self.type == "bool":
            return [int(value)]
        data = struct.pack(">" + FORMATS[self.type], value)
        words = list(struct.unpack(f">{self.width}H", data))
        if self.byte_order == "little":
            words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
        return words[::-1] if self.word_order == "little" else words

    def decode(self, words: list[int]) -> float:
        """Register words (or a bit) -> raw value."""
        if self.type == "bool":
            return float(bool(words[0]))
        if self.word_order == "little":
            words = words[::-1]
        if self.byte_order == "little":
            words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
        return float(struct.unpack(">" + FORMATS[self.type], struct.pack(f">{self.width}H", *words))[0])


def parse_modbus_address(address: str) -> tuple[str, int, int]:
    """``modbus+tcp://127.0.0.1:5020/unit/1`` -> (host, port, unit id)."""
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


def parse_rtu_address(address: str) -> tuple[str, int, dict[str, Any]]:
    """``modbus+rtu:///dev/ttyUSB0?baudrate=19200&parity=E&unit=1`` -> (port, unit id, serial settings)."""
    url = urlsplit(address)
    if not url.path:
        raise ConfigError(f"Modbus RTU address {address!r} must look like "
                          "modbus+rtu:///dev/ttyUSB0?baudrate=19200&unit=1")
    settings: dict[str, Any] = {}
    unit = 1
    for key, value in parse_qsl(url.query):
        try:
            if key == "unit":
                unit = int(value)
            elif key in ("baudrate", "bytesize", "stopbits"):
                settings[key] = int(value)
            elif key == "parity" and value in ("N", "E", "O"):
                settings[key] = value
            else:
                raise ValueError
        except ValueError:
            raise ConfigError(f"Modbus RTU address {address!r}: bad setting {key}={value} (unit, baudrate, "
                              "bytesize, stopbits, parity N/E/O)") from None
    if not 0 <= unit <= 247:
        raise ConfigError(f"Modbus RTU address {address!r}: unit must be in 0..247")
    return url.path, unit, settings


class ModbusTcpTransport(Transport):
    """Reads and writes scaled signals with the pymodbus client; contiguous reads in one request."""

    scheme = "modbus+tcp"
    signal_spec = ModbusSignal

    @classmethod
    def check(cls, device: str, address: str | None, signals: Mapping[str, SignalSpec], options: Any) -> None:
        if address is not None:
            cls.parse(address)

    @staticmethod
    def parse(address: str) -> Any:
        return parse_modbus_address(address)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client, self.unit, self.where = self.make_client()
        self._plans: dict[tuple[str, ...], list[tuple[str, Callable[..., Any], int, int, list[tuple[str, ModbusSignal]]]]] = {}

    def make_client(self) -> tuple[Any, int, str]:
        host, port, unit = parse_modbus_address(self.address)
        return ModbusTcpClient(host, port=port, timeout=self.timeout, retries=0), unit, f"{host}:{port}"

    def _open(self) -> None:
        if not self.client.connect():
            raise TransportInitError(f"{self._where()}: no Modbus device answers (connection to {self.where} "
                                     "refused or timed out)")

    def _close(self) -> None:
        self.client.close()

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
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

    def _plan(self, names: tuple[str, ...]) -> list[tuple[str, Callable[..., Any], int, int, list[tuple[str, ModbusSignal]]]]:
        """Requests that read ``names``: one per table where they fit in one request, else one per signal."""
        plan = []
        readers = {"holding": self.client.read_holding_registers, "input": self.client.read_input_registers,
                   "coil": self.client.read_coils, "discrete": self.client.read_discrete_inputs}
        for table, fn in readers.items():
            group = [(n, self.signals[n]) for n in names if self.signals[n].table == table]
            if not group:
                continue
            start = min(s.reg for _, s in group)
            end = max(s.reg + s.width for _, s in group)
            if end - start <= (MAX_BITS if table in ("coil", "discrete") else MAX_WORDS):
                plan.append((table, fn, start, end - start, group))
            else:
                plan += [(table, fn, s.reg, s.width, [(n, s)]) for n, s in group]
        return plan

    def _read(self, specs: Mapping[str, ModbusSignal]) -> dict[str, float]:
        key = tuple(specs)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(key)
        out: dict[str, float] = {}
        for table, fn, start, count, group in plan:
            response = self._call(f"read {table} {start}..{start + count - 1}", fn, start, count=count)
            values = response.bits if table in ("coil", "discrete") else response.registers
            for n, s in group:
                out[n] = s.decode(values[s.reg - start:s.reg - start + s.width])
        return out

    def _write(self, name: str, spec: ModbusSignal, raw: float) -> None:
        if spec.table not in ("holding", "coil"):
            raise TransportOperationError(f"{self._where()}: '{name}' is in the {spec.table} table (read-only)")
        try:
            words = spec.encode(raw)
        except ValueError as err:
            raise TransportOperationError(f"{self._where()}: cannot write {name}: {err}") from None
        if spec.table == "coil":
            self._call(f"write coil {name} at {spec.reg}", self.client.write_coil, spec.reg, bool(words[0]))
        else:
            self._call(f"write {name} at register {spec.reg}", self.client.write_registers, spec.reg, words)


class ModbusRtuTransport(ModbusTcpTransport):
    """The same register maps over a serial line (RTU framing)."""

    scheme = "modbus+rtu"

    @staticmethod
    def parse(address: str) -> Any:
        return parse_rtu_address(address)

    def make_client(self) -> tuple[Any, int, str]:
        port, unit, settings = parse_rtu_address(self.address)
        return ModbusSerialClient(port, timeout=self.timeout, retries=0, **settings), unit, port
