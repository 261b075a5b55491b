"""CAN transport over python-can, with signals decoded and encoded by cantools from a DBC file.

Addresses name a python-can interface and channel: ``can+virtual://bench0``,
``can+socketcan://can0``, ``can+socketcand://127.0.0.1:29536/can0``,
``can+pcan://PCAN_USBBUS1``. Received frames go into a last-value cache;
``read`` drains what has arrived and needs a frame of each message it reads
that came after the previous read, waiting up to the device timeout for one:
a CAN bus gives no other sign that a node died. Error frames (bus errors, bus-off) become transport errors.
Writes encode the whole command message (the other signals keep their last
value) and, with ``options.periodic``, the message is sent again on that period.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, ClassVar, Mapping
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from twinloop.config import Strict, parse_duration
from twinloop.errors import ConfigError, TransportInitError, TransportOperationError, TransportTimeoutError
from twinloop.rigs.transport import SignalSpec, Transport

logging.getLogger("can").setLevel(logging.ERROR)


class CanSignal(SignalSpec):
    """A DBC signal that reports the value, and for a writable one the DBC signal that commands it."""

    message: str
    signal: str
    set_message: str | None = None
    set_signal: str | None = None


class CanOptions(Strict):
    """The DBC file, the bitrate, and a period to repeat command messages at."""

    dbc: str = Field(description="path of the DBC file")
    bitrate: int | None = Field(None, gt=0)
    periodic: float | None = Field(None, gt=0, description="repeat command messages at this period")

    _p = field_validator("periodic", mode="before")(lambda v: v if v is None else parse_duration(v))


def bus_args(address: str) -> dict[str, Any]:
    """python-can ``Bus`` keyword arguments for a ``can+INTERFACE://CHANNEL`` address."""
    scheme, _, rest = address.partition("://")
    interface = scheme.removeprefix("can+")
    if interface == "udp_multicast":
        raise ConfigError("the udp_multicast CAN interface sends traffic beyond loopback; use socketcand "
                          "on 127.0.0.1 or virtual")
    url = urlsplit(f"can://{rest}")
    if interface == "socketcand":
        channel = url.path.strip("/")
        if not url.hostname or not url.port or not channel:
            raise ConfigError(f"socketcand address {address!r} must look like can+socketcand://HOST:PORT/can0")
        return {"interface": interface, "host": url.hostname, "port": url.port, "channel": channel}
    channel = (url.netloc + url.path).strip("/")
    if not interface or not channel:
        raise ConfigError(f"CAN address {address!r} must look like can+INTERFACE://CHANNEL, e.g. can+socketcan://can0")
    return {"interface": interface, "channel": channel}


class CanTransport(Transport):
    """Decoded frames into a cache; command messages encoded whole."""

    scheme: ClassVar[str] = "can"
    signal_spec = CanSignal
    options_model = CanOptions

    path_options: ClassVar[tuple[str, ...]] = ("dbc",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bus_args = bus_args(self.address)
        self.db = self.load_dbc(self.device, self.signals, self.options)
        self.bus: Any = None
        self.cache: dict[str, dict[str, float]] = {}
        self.fresh: set[str] = set()  # messages received since they were last read
        self.commands: dict[str, dict[str, float]] = {}
        self.tasks: dict[str, Any] = {}
        self.error: str | None = None

    @classmethod
    def check(cls, device: str, address: str | None, signals: Mapping[str, SignalSpec], options: Strict) -> None:
        if address is not None:
            bus_args(address)
        cls.load_dbc(device, signals, options)

    @staticmethod
    def load_dbc(device: str, signals: Mapping[str, Any], options: Any) -> Any:
        """The DBC database, with every message and signal the signal map names checked in it."""
        import cantools

        try:
            db = cantools.database.load_file(options.dbc)
        except (OSError, cantools.database.UnsupportedDatabaseFormatError, ValueError) as err:
            raise ConfigError(f"device '{device}': cannot load DBC {options.dbc}: {err}", key="options.dbc") from None
        for name, spec in signals.items():
            for msg, sig, key in ((spec.message, spec.signal, "message"),
                                  (spec.set_message, spec.set_signal, "set_message")):
                if msg is None:
                    continue
                try:
                    db.get_message_by_name(msg).get_signal_by_name(sig or "")
                except KeyError:
                    raise ConfigError(f"device '{device}': signal '{name}': {msg}.{sig} is not in {options.dbc}",
                                      key=f"signals.{name}.{key}") from None
        return db

    def _open(self) -> None:
        import can

        kwargs = dict(self.bus_args)
        if self.options.bitrate:
            kwargs["bitrate"] = self.options.bitrate
        try:
            self.bus = can.Bus(**kwargs)
        except (can.CanError, OSError, ValueError, ImportError) as err:
            raise TransportInitError(f"{self._where()}: cannot open the CAN bus: {err}") from err
        self.cache, self.fresh, self.error = {}, set(), None

    def _close(self) -> None:
        for task in self.tasks.values():
            task.stop()
        self.tasks.clear()
        if self.bus is not None:
            self.bus.shutdown()
            self.bus = None

    def _take(self, frame: Any) -> None:
        if frame.is_error_frame:
            self.error = f"error frame on the bus (id 0x{frame.arbitration_id:x}, data {frame.data.hex()})"
            return
        try:
            message = self.db.get_message_by_frame_id(frame.arbitration_id)
        except KeyError:
            return  # traffic of other nodes
        self.cache[message.name] = dict(message.decode(frame.data, decode_choices=False))
        self.fresh.add(message.name)

    def _drain(self, wait_s: float = 0.0) -> None:
        import can

        try:
            frame = self.bus.recv(timeout=wait_s)
            while frame is not None:
                self._take(frame)
                frame = self.bus.recv(timeout=0)
        except can.CanError as err:
            raise TransportOperationError(f"{self._where()}: bus error: {err}") from err

    def _read(self, specs: Mapping[str, CanSignal]) -> dict[str, float]:
        self._drain()
        needed = {s.message for s in specs.values()}
        deadline = time.monotonic() + self.timeout
        while True:
            if self.error:
                error, self.error = self.error, None
                raise TransportOperationError(f"{self._where()}: {error}")
            quiet = needed - self.fresh
            if not quiet:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportTimeoutError(f"{self._where()}: no frame of {', '.join(sorted(quiet))} within "
                                            f"{self.timeout} s")
            self._drain(min(remaining, 0.05))
        self.fresh -= needed
        return {n: float(self.cache[s.message][s.signal]) for n, s in specs.items()}

    def _write(self, name: str, spec: CanSignal, raw: float) -> None:
        import can

        if spec.set_message is None:
            raise TransportOperationError(f"{self._where()}: '{name}' has no set_message/set_signal in the rig profile")
        message = self.db.get_message_by_name(spec.set_message)
        values = self.commands.setdefault(spec.set_message, {s.name: (s.initial or 0) for s in message.signals})
        values[spec.set_signal] = raw
        try:
            data = message.encode(values, strict=True)
        except Exception as err:  # cantools raises EncodeError for values out of a signal's range
            raise TransportOperationError(f"{self._where()}: cannot encode {spec.set_message}.{spec.set_signal}"
                                          f" = {raw:g}: {err}") from None
        frame = can.Message(arbitration_id=message.frame_id, data=data, is_extended_id=message.is_extended_frame)
        try:
            if self.options.periodic:
                task = self.tasks.get(spec.set_message)
                if task is None:
                    self.tasks[spec.set_message] = self.bus.send_periodic(frame, self.options.periodic)
                else:
                    task.modify_data(frame)
            self.bus.send(frame, timeout=self.timeout)
        except can.CanError as err:
            raise TransportOperationError(f"{self._where()}: sending {spec.set_message} failed: {err}") from err
