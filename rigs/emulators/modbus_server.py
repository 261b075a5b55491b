"""A pymodbus TCP server on loopback whose registers mirror an emulated device's values."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, ClassVar, Mapping

from pymodbus.constants import ExcCodes
from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from twinloop.errors import TransportInitError
from twinloop.rigs.device import EmulatedDevice
from twinloop.rigs.emulators.base import Emulator, Hangs
from twinloop.rigs.modbus import ModbusSignal


class ModbusDeviceServer(Hangs):
    """Serves ``device`` through a register map (the device's ``modbus_map``, else float32 pairs).

    Reads see the device's sensor values; writes to writable registers set its
    setpoints. A value beyond a register's range is sent saturated at that
    range's end, as a real device's firmware would. The server runs its own
    event loop in a daemon thread so synchronous harness code can drive it.
    """

    scheme = "modbus+tcp"

    def __init__(self, device: EmulatedDevice, host: str = "127.0.0.1", port: int = 0, unit: int = 1,
                 signals: Mapping[str, ModbusSignal] | None = None) -> None:
        super().__init__()
        self.device = device
        self.signals = dict(signals) if signals is not None else {
            name: ModbusSignal.model_validate(spec) for name, spec in self.signal_map(type(device)).items()}
        self.host, self.port, self.unit = host, port, unit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @classmethod
    def signal_map(cls, device: type[EmulatedDevice]) -> dict[str, dict[str, Any]]:
        """The rig-profile signal map for ``device``: its own ``modbus_map``, else one float32 per signal."""
        own = getattr(device, "modbus_map", None)
        if own is not None:
            return {name: dict(spec) for name, spec in own.items()}
        return {name: {"register": 2 * i, "type": "float32", "unit": sig.unit, "writable": sig.writable}
                for i, (name, sig) in enumerate(device.signals.items())}

    @property
    def address(self) -> str:
        """The transport URL that reaches this server."""
        return f"modbus+tcp://{self.host}:{self.port}/unit/{self.unit}"

    def _simdata(self) -> list[SimData]:
        blocks, cursor = [], 0
        for spec in sorted(self.signals.values(), key=lambda s: s.reg):
            if spec.reg > cursor:  # gaps read as zeros, so spans stay readable
                blocks.append(SimData(cursor, count=spec.reg - cursor, values=0,
                                      datatype=DataType.REGISTERS, readonly=True))
            blocks.append(SimData(spec.reg, count=spec.width, values=0,
                                  datatype=DataType.REGISTERS, readonly=not spec.writable))
            cursor = spec.reg + spec.width
        return blocks

    async def _action(self, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        while self.wedged and not (self._stop and self._stop.is_set()):
            await asyncio.sleep(0.01)
        with self.device.lock:
            if set_values:
                for name, spec in self.signals.items():
                    offset = spec.reg - address
                    if spec.writable and 0 <= offset and offset + spec.width <= len(set_values):
                        self.device.write(name, spec.to_units(spec.decode(list(set_values[offset:offset + spec.width]))))
            for name, spec in self.signals.items():
                at = spec.reg - start_address
                registers[at:at + spec.width] = spec.encode(spec.to_raw(self.device.read(name)), saturate=True)
        return None

    def _server(self, device: SimDevice) -> Any:
        return ModbusTcpServer(device, address=(self.host, self.port))

    def _bound(self, server: Any) -> None:
        self.port = server.transport.sockets[0].getsockname()[1]

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        device = SimDevice(self.unit, simdata=self._simdata(), action=self._action)
        server = self._server(device)
        try:
            await server.serve_forever(background=True)
            self._bound(server)
        except BaseException as err:  # reported to start() in the caller's thread
            self._error = err
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await server.shutdown()

    def start(self, timeout: float = 5.0) -> None:
        """Start serving (again, on the same port after ``stop``); returns once the port is bound."""
        self._ready.clear()
        self._error = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),),
                                        name=f"modbus-emulator-{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise TransportInitError(f"Modbus emulator could not listen on {self.host}:{self.port}: "
                                     f"{self._error or 'timed out'}")

    def stop(self) -> None:
        """Stop serving and join the thread; safe to call twice."""
        if self._thread and self._thread.is_alive() and self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=5)
        if self._loop and not self._loop.is_running():
            self._loop.close()


class ModbusRtuDeviceServer(ModbusDeviceServer):
    """The same device as a Modbus RTU slave on a serial line (one end of a pty null modem).

    A pty's path cannot outlive a close, so the line stays in place across
    ``stop``/``start``: a powered-off slave on an RS-485 bus just stops answering.
    """

    scheme = "modbus+rtu"
    has_link = True

    def __init__(self, device: EmulatedDevice, host: str = "127.0.0.1", unit: int = 1,
                 signals: Mapping[str, ModbusSignal] | None = None) -> None:
        from twinloop.rigs.emulators.serial_link import NullModem

        super().__init__(device, host=host, unit=unit, signals=signals)
        self.line = NullModem()
        self.link = self.line.faults  # link faults apply to the slave's replies on the line

    @property
    def address(self) -> str:
        return f"modbus+rtu://{self.line.host_path}?baudrate=115200&unit={self.unit}"

    def _server(self, device: SimDevice) -> Any:
        return ModbusSerialServer(device, port=self.line.device_path, framer=FramerType.RTU, baudrate=115200)

    def _bound(self, server: Any) -> None:
        pass

    def close(self) -> None:
        """Stop and release the line."""
        self.stop()
        self.line.close()


class ModbusEmulator(Emulator):
    """A device type over Modbus TCP on 127.0.0.1; a subclass names it (the form tests and fixtures use).

    The class carries the transport's view (``scheme``, ``signal_map``,
    ``safe_state``) so a test can build a rig profile before starting one.
    """

    device_class: ClassVar[type[EmulatedDevice]]
    scheme: ClassVar[str] = ModbusDeviceServer.scheme
    signal_map: ClassVar[dict[str, dict[str, Any]]]
    safe_state: ClassVar[dict[str, float]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.signal_map = ModbusDeviceServer.signal_map(cls.device_class)
        cls.safe_state = dict(cls.device_class.safe_state)

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, unit: int = 1, **params: Any) -> None:
        device = self.device_class(**params)
        super().__init__(device, ModbusDeviceServer(device, host=host, port=port, unit=unit))
