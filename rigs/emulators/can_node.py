"""A CAN node for an emulated device on python-can's ``virtual`` bus (in the harness process).

It sends the device's status messages every control cycle (20 ms of wall
time) and after every physics step and takes command messages as setpoints.
Power off closes its bus connection (the node goes silent); a hang keeps it
connected but silent. Frames stay inside the process: nothing reaches a
network (never ``udp_multicast`` here).
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import can
import cantools

from twinloop.rigs.device import EmulatedDevice
from twinloop.rigs.emulators.base import Hangs

CYCLE_S = 0.02


class CanDeviceNode(Hangs):
    """Serves ``device`` by its ``can_map`` (a DBC file and which DBC signal carries which value)."""

    scheme = "can+virtual"

    def __init__(self, device: EmulatedDevice, host: str = "127.0.0.1", channel: str | None = None) -> None:
        super().__init__()
        self.device = device
        self.channel = channel or f"twinloop-{uuid.uuid4().hex[:12]}"
        spec = self._spec(type(device))
        self.db = cantools.database.load_file(spec["dbc"])
        self.signals: dict[str, dict[str, Any]] = spec["signals"]
        self.status = sorted({s["message"] for s in self.signals.values()})
        self.bus: can.BusABC | None = None
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

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
        """Leave the bus (power off); safe to call twice."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.bus is not None:
            self.bus.shutdown()
            self.bus = None

    def _cycle(self) -> None:
        while not self._halt.wait(CYCLE_S):
            self.sync()

    def push(self) -> None:
        """Send every status message with the device's present values (under its lock, so in order)."""
        bus = self.bus
        if bus is None or self.wedged:
            return
        with self.device.lock:
            for name in self.status:
                message = self.db.get_message_by_name(name)
                values = {s.name: (s.initial or 0) for s in message.signals}
                for signal, spec in self.signals.items():
                    if spec["message"] == name:
                        values[spec["signal"]] = self.device.read(signal)
                data = message.encode(values, scaling=True, strict=False)
                try:
                    bus.send(can.Message(arbitration_id=message.frame_id, data=data,
                                         is_extended_id=message.is_extended_frame))
                except can.CanError:
                    return

    def pull(self) -> None:
        """Take the command frames received so far as setpoints."""
        bus = self.bus
        if bus is None:
            return
        frame = bus.recv(timeout=0)
        while frame is not None:
            self._command(frame)
            frame = bus.recv(timeout=0)

    def sync(self) -> None:
        """One control cycle: commands in, status out."""
        self.pull()
        self.push()

    def _command(self, frame: can.Message) -> None:
        try:
            message = self.db.get_message_by_frame_id(frame.arbitration_id)
        except KeyError:
            return
        decoded = message.decode(frame.data, decode_choices=False)
        for name, spec in self.signals.items():
            if spec.get("set_message") == message.name and spec.get("set_signal") in decoded:
                self.device.write(name, float(decoded[spec["set_signal"]]))
