"""A CAN node for an emulated device on python-can's ``virtual`` bus (in the harness process), and the
same node reached from other processes through a socketcand server on 127.0.0.1.

It sends the device's status messages every control cycle (20 ms of wall
time) and after every physics step and takes command messages as setpoints.
Power off takes it off the bus (the node goes silent); a hang keeps it on
the bus but silent. Its ``link`` (``CanLink``) disturbs the frames it sends:
held back (latency, jitter), lost (drop), damaged (corrupt: receivers see a
CRC error frame), cut mid-frame (then silent), or ``bus_off``. Frames stay
inside the process, or on 127.0.0.1 through socketcand: nothing reaches a
network (never ``udp_multicast`` here).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, ClassVar

import can
import cantools
from pydantic import Field

from twinloop.config import Strict
from twinloop.rigs.can import CAN_ERR_BUSOFF, CAN_ERR_PROT, error_frame
from twinloop.rigs.device import EmulatedDevice
from twinloop.rigs.emulators.base import Hangs
from twinloop.rigs.emulators.link import HeldReplies, LinkFaults
from twinloop.rigs.emulators.socketcand import SocketcandServer

CYCLE_S = 0.02
#: data[3] of a protocol-violation error frame: the fault was in the CRC sequence (linux/can/error.h).
CAN_ERR_PROT_LOC_CRC_SEQ = 0x08


class CanLink(LinkFaults):
    """Link faults on a CAN node's frames, plus ``bus_off``.

    A corrupted frame fails its CRC at every receiver, which sees an error
    frame (``CAN_ERR_PROT``, location CRC sequence) in its place; a cut one
    stops half way and the node goes silent. ``bus_off``: the node's next
    frame is an error frame carrying ``CAN_ERR_BUSOFF``, then it is silent
    (and deaf to commands) until the fault ends or its power is cycled.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.bus_off = False
        self._announced = False  # the bus-off error frame has gone out

    @property
    def active(self) -> bool:
        return super().active or self.bus_off

    def set(self, kind: str, value: float | None = None) -> None:
        if kind != "bus_off":
            super().set(kind, value)
            return
        with self.lock:
            self.bus_off, self._announced = True, False

    def clear(self, kind: str | None = None) -> None:
        if kind in (None, "bus_off"):
            with self.lock:
                self.bus_off = False
                self.epoch += 1
        if kind != "bus_off":
            super().clear(kind)

    def frame(self, msg: can.Message) -> can.Message | None:
        """What the bus carries of ``msg``: it, an error frame in its place, or nothing."""
        with self.lock:
            if self.bus_off:
                if self._announced:
                    return None
                self._announced = True
                return error_frame(CAN_ERR_BUSOFF)
        data = bytes(msg.data)
        out = self.fate(data)
        if out is None or len(out) < len(data):
            return None  # lost, or cut mid-frame (the node is silent from now on)
        if out != data:
            return error_frame(CAN_ERR_PROT, bytes([0, 0, 0, CAN_ERR_PROT_LOC_CRC_SEQ]))
        return msg


class CanDeviceNode(Hangs):
    """Serves ``device`` by its ``can_map`` (a DBC file and which DBC signal carries which value)."""

    scheme: ClassVar[str] = "can+virtual"
    has_link: ClassVar[bool] = True  # link faults apply to the node's own frames, no relay
    extra_faults: ClassVar[tuple[str, ...]] = ("bus_off",)

    def __init__(self, device: EmulatedDevice, host: str = "127.0.0.1", channel: str | None = None) -> None:
        super().__init__()
        self.device = device
        self.channel = channel or f"twinloop-{uuid.uuid4().hex[:12]}"
        spec = self._spec(type(device))
        self.db = cantools.database.load_file(spec["dbc"])
        self.signals: dict[str, dict[str, Any]] = spec["signals"]
        self.status = sorted({s["message"] for s in self.signals.values()})
        self.link = CanLink()
        self.bus: can.BusABC | None = None
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._frames = HeldReplies(self.link, self._emit, self.link.frame)
        self._send_lock = threading.Condition()  # frames leave in order; wakes the cycle for held ones

    @staticmethod
    def _spec(device: type[EmulatedDevice]) -> dict[str, Any]:
        spec = getattr(device, "can_map", None)
        if spec is None:
            raise ValueError(f"device type '{device.device_type}' has no CAN interface (no can_map)")
        return spec

    @classmethod
    def signal_map(cls, device: type[EmulatedDevice]) -> dict[str, dict[str, Any]]:
        return {name: dict(s) for name, s in cls._spec(device)["signals"].items()}

    @classmethod
    def transport_options(cls, device: type[EmulatedDevice]) -> dict[str, Any]:
        """What the CAN transport needs besides the signal map: the DBC file."""
        return {"dbc": str(cls._spec(device)["dbc"])}

    @property
    def address(self) -> str:
        return f"can+virtual://{self.channel}"

    def start(self) -> None:
        """Join the bus and start the control cycle."""
        self.bus = can.Bus(interface="virtual", channel=self.channel)
        self._halt.clear()
        self._thread = threading.Thread(target=self._cycle, name=f"can-node-{self.channel}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Leave the bus (power off); safe to call twice. Frames held by the link are lost, and a
        bus-off ends: the controller restarts with the power."""
        self._halt.set()
        with self._send_lock:
            self._send_lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._send_lock:
            self._frames.held.clear()
            if self.bus is not None:
                self.bus.shutdown()
                self.bus = None
        self.link.clear("bus_off")

    def _cycle(self) -> None:
        """Every CYCLE_S a control cycle; in between, held frames go out when due."""
        due_sync = time.monotonic() + CYCLE_S
        while not self._halt.is_set():
            with self._send_lock:
                self._frames.deliver()
                wait = self._frames.wait(due_sync - time.monotonic())
                if wait > 0:
                    self._send_lock.wait(wait)
            if not self._halt.is_set() and time.monotonic() >= due_sync:
                self.sync()
                due_sync = max(due_sync + CYCLE_S, time.monotonic())

    def push(self) -> None:
        """Send every status message with the device's present values (under its lock, so in order)."""
        if self.bus is None or self.wedged:
            return
        with self.device.lock:
            for name in self.status:
                message = self.db.get_message_by_name(name)
                values = {s.name: (s.initial or 0) for s in message.signals}
                for signal, spec in self.signals.items():
                    if spec["message"] == name:
                        values[spec["signal"]] = self.device.read(signal)
                data = message.encode(values, scaling=True, strict=False)
                self._send(can.Message(arbitration_id=message.frame_id, data=data,
                                       is_extended_id=message.is_extended_frame))

    def _send(self, msg: can.Message) -> None:
        """Pass ``msg`` through the link: out now, held for later (latency), damaged or lost."""
        with self._send_lock:
            self._frames.send(msg)
            self._send_lock.notify()  # the cycle wakes for a frame it must send later

    def _emit(self, msg: can.Message) -> None:
        """Put ``msg`` on the bus; a bus that is gone or full drops it, as a controller would."""
        bus = self.bus
        if bus is None:
            return
        try:
            bus.send(msg)
        except can.CanError:
            pass

    def pull(self) -> None:
        """Take the command frames received so far as setpoints (a bus-off node hears none)."""
        bus = self.bus
        if bus is None:
            return
        frame = bus.recv(timeout=0)
        while frame is not None:
            if not self.link.bus_off:
                self._command(frame)
            frame = bus.recv(timeout=0)

    def sync(self) -> None:
        """One control cycle: commands in, status out."""
        self.pull()
        self.push()

    def _command(self, frame: can.Message) -> None:
        if frame.is_error_frame:
            return
        try:
            message = self.db.get_message_by_frame_id(frame.arbitration_id)
        except KeyError:
            return
        decoded = message.decode(frame.data, decode_choices=False)
        for name, spec in self.signals.items():
            if spec.get("set_message") == message.name and spec.get("set_signal") in decoded:
                self.device.write(name, float(decoded[spec["set_signal"]]))


class SocketcandOptions(Strict):
    """Where the socketcand server listens, and the bus name clients open."""

    port: int = Field(0, ge=0, le=65535, description="TCP port on 127.0.0.1; 0: chosen by the system")
    bus: str = Field("can0", pattern=r"^[A-Za-z0-9_.-]{1,16}$", description="bus name clients open")


class CanSocketcandNode(CanDeviceNode):
    """The CAN node, with a socketcand server on 127.0.0.1 in front of its bus, so other processes reach it.

    The server is the bus's gateway, not part of the device: it starts with
    the node's first power-on, keeps its port across power cycles (a node that
    is off is silent on a bus that is still there) and stops on ``close``.
    """

    scheme: ClassVar[str] = "can+socketcand"
    options_model: ClassVar[type[Strict]] = SocketcandOptions

    def __init__(self, device: EmulatedDevice, host: str = "127.0.0.1", channel: str | None = None,
                 options: SocketcandOptions | None = None) -> None:
        super().__init__(device, host, channel)
        options = options or SocketcandOptions()
        self.bus_name = options.bus
        self.gateway = SocketcandServer({self.bus_name: self.channel}, host=host, port=options.port)

    @property
    def address(self) -> str:
        return f"can+socketcand://{self.gateway.host}:{self.gateway.port}/{self.bus_name}"

    def start(self) -> None:
        if not self.gateway.running:
            self.gateway.start()
        super().start()

    def close(self) -> None:
        """Power off for good and stop the socketcand server."""
        self.stop()
        self.gateway.stop()
