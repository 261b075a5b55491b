"""CAN transport over python-can, with signals decoded and encoded by cantools from a DBC file.

Addresses name a python-can interface and channel: ``can+virtual://bench0``,
``can+socketcan://can0``, ``can+socketcand://127.0.0.1:29536/can0``,
``can+pcan://PCAN_USBBUS1``. ``read`` drains what has arrived, keeping the
last frame of each message the signal map reads, and needs a frame of each
message it reads that came after the previous read, waiting up to the device
timeout for one: a CAN bus gives no other sign that a node died. Only the
frames a read returns are decoded. Error frames become transport errors naming
their SocketCAN error class (a CRC error is a protocol violation; bus-off).
Writes encode the whole command message (the other signals keep their last
value; the first write starts from what the device reports) and, with
``options.periodic``, the message is sent again on that period.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, ClassVar, Mapping
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from twinloop.config import Strict, parse_duration
from twinloop.errors import (ConfigError, TransportError, TransportInitError, TransportOperationError,
                             TransportTimeoutError)
from twinloop.rigs.transport import SignalSpec, Transport

logging.getLogger("can").setLevel(logging.ERROR)

CAN_EFF_FLAG = 0x80000000  # marks an extended identifier in the keys of frames read
#: SocketCAN error classes (linux/can/error.h): an error frame's arbitration id is a set of them.
CAN_ERR_PROT = 0x008
CAN_ERR_BUSOFF = 0x040
CAN_ERR_RESTARTED = 0x100
ERROR_CLASSES = {0x001: "TX timeout", 0x002: "lost arbitration", 0x004: "controller problem",
                 CAN_ERR_PROT: "protocol violation", 0x010: "transceiver problem", 0x020: "no ACK",
                 CAN_ERR_BUSOFF: "bus-off", 0x080: "bus error", CAN_ERR_RESTARTED: "controller restarted",
                 0x200: "error counter warning"}
#: Where in a frame a protocol violation was seen (data[3]): the CRC sequence or its delimiter.
CAN_ERR_PROT_LOC_CRC = (0x08, 0x18)


def error_frame(classes: int, data: bytes = b"") -> Any:
    """A SocketCAN error frame of ``classes`` (e.g. ``CAN_ERR_BUSOFF``), as a CAN controller reports one."""
    import can

    return can.Message(arbitration_id=classes, is_error_frame=True, is_extended_id=True,
                       data=data.ljust(8, b"\0"))


def describe_error(classes: int, crc: bool = False) -> str:
    """The error classes of ``classes`` in words, e.g. ``bus-off`` or ``protocol violation (CRC error)``."""
    names = [("protocol violation (CRC error)" if bit == CAN_ERR_PROT and crc else name)
             for bit, name in ERROR_CLASSES.items() if classes & bit]
    return ", ".join(names) or "unknown error class"


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
    """The last frame of each message read, decoded when read; command messages encoded whole."""

    scheme: ClassVar[str] = "can"
    signal_spec = CanSignal
    options_model = CanOptions

    path_options: ClassVar[tuple[str, ...]] = ("dbc",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bus_args = bus_args(self.address)
        self.db = self.load_dbc(self.device, self.signals, self.options)
        self.bus: Any = None
        self.can_error: type[Exception] = Exception  # python-can's CanError, once open
        self.messages = {m: self.db.get_message_by_name(m) for m in {s.message for s in self.signals.values()}}
        #: Message read by frame key (the arbitration id, with CAN_EFF_FLAG for an extended one).
        self.keys = {m.frame_id | (CAN_EFF_FLAG if m.is_extended_frame else 0): name
                     for name, m in self.messages.items()}
        self.plans: dict[tuple[str, ...], Any] = {}  # see _plan
        self.fresh: dict[str, bytearray] = {}  # data of the last frame of each message since it was last read
        self.commands: dict[str, dict[str, float]] = {}
        self.tasks: dict[str, Any] = {}
        self.error_classes = self.error_frames = 0  # error frames since the last read
        self.crc_error = False

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
        if kwargs["interface"] == "socketcand":
            self._reach(kwargs["host"], kwargs["port"])
        try:
            self.bus = can.Bus(**kwargs)
        except (can.CanError, OSError, ValueError, ImportError) as err:
            raise TransportInitError(f"{self._where()}: cannot open the CAN bus: {err}") from err
        self.fresh, self.error_classes, self.error_frames, self.crc_error = {}, 0, 0, False
        self.can_error = can.CanError

    def _reach(self, host: str, port: int) -> None:
        """Fail fast if no socketcand server listens (python-can's client retries for 10 s)."""
        try:
            socket.create_connection((host, port), timeout=self.timeout).close()
        except OSError as err:
            raise TransportInitError(f"{self._where()}: no socketcand server at {host}:{port}: {err}") from err

    def _lost(self) -> bool:
        """True if a socketcand server closed our connection, which python-can's client reads as silence.

        Peeks at the client's socket (a name private to python-can 4.x; without it, never lost).
        """
        sock = getattr(self.bus, "_SocketCanDaemonBus__socket", None)
        if sock is None:
            return False
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _close(self) -> None:
        for task in self.tasks.values():
            task.stop()
        self.tasks.clear()
        if self.bus is not None:
            self.bus.shutdown()
            self.bus = None

    def _error(self, frame: Any) -> None:
        classes = frame.arbitration_id & 0x1FFFFFFF
        if classes == CAN_ERR_RESTARTED:
            return  # the controller is back after a bus-off: news, not a failure
        self.error_classes |= classes
        self.error_frames += 1
        data = frame.data
        self.crc_error |= bool(classes & CAN_ERR_PROT and len(data) > 3 and data[3] in CAN_ERR_PROT_LOC_CRC)

    def _drain(self, wait_s: float = 0.0) -> None:
        """Take every frame that has arrived (waiting up to ``wait_s`` for the first): one dict store each."""
        recv, keys, fresh = self.bus.recv, self.keys, self.fresh
        try:
            frame = recv(wait_s)
            while frame is not None:
                if frame.is_error_frame:
                    self._error(frame)
                else:
                    name = keys.get(frame.arbitration_id | CAN_EFF_FLAG if frame.is_extended_id
                                    else frame.arbitration_id)
                    if name is not None:  # else traffic of other nodes, or a message no signal reads
                        fresh[name] = frame.data
                frame = recv(0.0)
        except self.can_error as err:
            raise TransportOperationError(f"{self._where()}: bus error: {err}") from err

    def _raise_error(self) -> None:
        n, classes, crc = self.error_frames, self.error_classes, self.crc_error
        self.error_classes, self.error_frames, self.crc_error = 0, 0, False
        raise TransportOperationError(f"{self._where()}: error frame on the bus: {describe_error(classes, crc)} "
                                      f"(class 0x{classes:x}{f', {n} frames' if n > 1 else ''})")

    def _plan(self, names: tuple[str, ...]) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
        """The messages a read of ``names`` needs, each with the (name, DBC signal) pairs it carries."""
        plan = self.plans.get(names)
        if plan is None:
            by_message: dict[str, list[tuple[str, str]]] = {}
            for n in names:
                spec = self.signals[n]
                by_message.setdefault(spec.message, []).append((n, spec.signal))
            plan = self.plans[names] = tuple((m, tuple(pairs)) for m, pairs in by_message.items())
        return plan

    def _read(self, specs: Mapping[str, CanSignal]) -> dict[str, float]:
        plan = self._plan(tuple(specs))
        self._drain()
        fresh, deadline = self.fresh, None
        while True:
            if self.error_frames:
                self._raise_error()
            quiet = [m for m, _ in plan if m not in fresh]
            if not quiet:
                break
            now = time.monotonic()
            deadline = deadline or now + self.timeout
            if now >= deadline:
                raise TransportTimeoutError(f"{self._where()}: no frame of {', '.join(sorted(quiet))} within "
                                            f"{self.timeout} s")
            self._drain(min(deadline - now, 0.05))
            if self._lost():
                self.close()  # the next call connects again
                raise TransportOperationError(f"{self._where()}: the socketcand server closed the connection")
        out = {}
        for m, pairs in plan:
            values = self.messages[m].decode(fresh.pop(m), decode_choices=False)
            for n, signal in pairs:
                out[n] = float(values[signal])
        return out

    def _present(self, message: Any) -> dict[str, float]:
        """Starting values of a command message: what the device reports for each signal it commands.

        A command frame carries every signal at once, so the first write must not
        reset the others (writing ``power`` must not switch the fan off). Signals
        the device does not report, or a device that stays silent, start at the
        DBC's initial values.
        """
        values = {s.name: (s.initial or 0) for s in message.signals}
        reported = {n: spec for n, spec in self.signals.items() if spec.set_message == message.name}
        try:
            present = self._read(reported)
        except TransportError:
            return values
        for n, spec in reported.items():
            if spec.set_signal in values:
                values[spec.set_signal] = present[n]
        return values

    def _write(self, name: str, spec: CanSignal, raw: float) -> None:
        import can

        if spec.set_message is None:
            raise TransportOperationError(f"{self._where()}: '{name}' has no set_message/set_signal in the rig profile")
        message = self.db.get_message_by_name(spec.set_message)
        values = self.commands.get(spec.set_message)
        if values is None:
            values = self.commands[spec.set_message] = self._present(message)
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
        except (can.CanError, OSError) as err:
            if isinstance(err, OSError):
                self.close()  # a socketcand connection is gone: the next call connects again
            raise TransportOperationError(f"{self._where()}: sending {spec.set_message} failed: {err}") from err
