"""Open the devices of a run: start their emulators, connect their transports, apply safe states."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, IO

from twinloop.errors import TransportInitError, TwinloopError
from twinloop.rigs.transport import SignalSpec, Transport


@dataclass(frozen=True)
class DeviceSetup:
    """Everything needed to reach one device, already validated (see the harness's plan)."""

    name: str
    transport: type[Transport]
    signals: dict[str, SignalSpec]
    timeout: float
    safe_state: dict[str, float] = field(default_factory=dict)
    address: str | None = None
    emulator: type | None = None
    emulator_params: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    #: The emulator's protocol server options (validated), and whether a fault relay stands in front.
    server_options: Any = None
    relay: bool = False


@dataclass(frozen=True)
class SafeStateResult:
    """What applying one device's safe state did: the values written, or why it failed."""

    device: str
    values: dict[str, float]
    error: str | None = None


#: One lock file per physical device address, shared by every twinloop process of this user
#: (pytest-xdist workers included), so two runs never drive the same device at once.
LOCK_DIR = Path(tempfile.gettempdir()) / f"twinloop-device-locks-{os.getuid()}"


class DeviceLock:
    """An exclusive lock on one device address (``flock``: released if the holder dies)."""

    def __init__(self, device: str, address: str, wait_s: float) -> None:
        self.device, self.address, self.wait_s = device, address, wait_s
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock, waiting up to ``wait_s``; a TransportInitError names the holder after that."""
        LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
        path = LOCK_DIR / (hashlib.sha256(self.address.encode()).hexdigest()[:32] + ".lock")
        f = open(path, "a+", encoding="utf-8")
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    f.seek(0)
                    holder = f.read().strip() or "another process"
                    f.close()
                    raise TransportInitError(
                        f"device '{self.device}' at {self.address} is in use by {holder}; waited "
                        f"{self.wait_s:g} s") from None
                time.sleep(0.05)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        self._file = f

    def release(self) -> None:
        """Give the lock back; safe to call twice."""
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None


class Rig:
    """A live rig: ``transports`` by device name; emulators step with ``advance``."""

    def __init__(self, devices: dict[str, DeviceSetup], lock_wait_s: float = 60.0) -> None:
        self.devices = devices
        self.lock_wait_s = lock_wait_s
        self.locks: list[DeviceLock] = []
        self.transports: dict[str, Transport] = {}
        self.emulators: dict[str, Any] = {}
        self.fault_timers: dict[tuple[str, str, str | None], float] = {}  # (device, kind, signal) -> s left
        self.fault_ended: dict[str, float] = {}  # device -> time.monotonic() its last link fault ended

    def open(self) -> "Rig":
        """Start emulators and open every transport; on failure closes what opened."""
        try:
            for name, setup in self.devices.items():
                address = setup.address
                if address is not None:
                    lock = DeviceLock(name, address, self.lock_wait_s)
                    lock.acquire()
                    self.locks.append(lock)
                if setup.emulator is not None:
                    emulator = setup.emulator.build(relay=setup.relay, server_options=setup.server_options,
                                                    **setup.emulator_params)
                    self.emulators[name] = emulator.start()
                    address = emulator.address
                transport = setup.transport(name, address, setup.signals, timeout=setup.timeout,
                                            options=setup.options)
                transport.open()
                self.transports[name] = transport
        except BaseException:
            self.close()
            raise
        return self

    def advance(self, dt: float) -> None:
        """Step every emulator's physics by ``dt`` seconds, and end timed faults that ran out."""
        for emulator in self.emulators.values():
            emulator.step(dt)
        for key in list(self.fault_timers):
            self.fault_timers[key] -= dt
            if self.fault_timers[key] <= 0:
                del self.fault_timers[key]
                self.end_fault(*key)

    def _server(self, device: str) -> Any:
        server = getattr(self.emulators.get(device), "server", None)
        if server is None:
            raise TwinloopError(f"device '{device}' is not an emulator here: it cannot inject faults "
                                "or switch power")
        return server

    def inject(self, device: str, kind: str, duration: float | None = None, signal: str | None = None,
               value: float | None = None) -> None:
        """Inject fault ``kind`` into an emulated device for ``duration`` seconds (None: until the end).

        ``wedge``: the device keeps its connection but stops answering, so every
        call on it runs into the transport's timeout. ``stuck``/``noise``: a
        sensor fault on ``signal`` (see ``EmulatedDevice.fault``). Link faults
        (``latency``, ``jitter``, ``drop``, ``corrupt``, ``cut``, CAN's
        ``bus_off``) hit the bytes or frames between device and harness (see
        ``LinkFaults``).
        """
        server = self._server(device)
        try:
            if kind == "wedge" and getattr(server, "can_hang", True):
                server.wedge()
            elif kind in ("stuck", "noise"):
                self.emulators[device].device.fault(kind, signal, value)
            else:
                self._link(device).set(kind, value)
        except ValueError as err:
            raise TwinloopError(f"device '{device}': {err}") from None
        if duration is not None:
            self.fault_timers[(device, kind, signal)] = duration

    def _link(self, device: str) -> Any:
        link = self.emulators[device].link
        if link is None:
            raise TwinloopError(f"device '{device}': link faults need the fault relay, which the plan "
                                "starts only for scenarios that inject them")
        return link

    def end_fault(self, device: str, kind: str, signal: str | None = None) -> None:
        """End an injected fault."""
        server = self._server(device)
        if kind in ("stuck", "noise"):
            self.emulators[device].device.clear(signal)
            return
        if kind == "wedge" and getattr(server, "can_hang", True):
            server.unwedge()
        else:
            self._link(device).clear(kind)
        self.fault_ended[device] = time.monotonic()

    def power(self, device: str, on: bool) -> None:
        """Switch an emulated device off (it stops listening, its load drops) or on again (same address)."""
        server = self._server(device)
        emulator = self.emulators[device]
        if on:
            emulator.start()
            return
        server.unwedge()  # a hung device restarts with its power; link faults are the cable's and stay
        if emulator.link is not None:
            emulator.link.clear("wedge")
        for key in [k for k in self.fault_timers if k[0] == device and k[1] in ("wedge", "cut", "bus_off")]:
            del self.fault_timers[key]
        emulator.stop()
        emulator.power_off()

    def faulted(self, device: str, since: float | None = None) -> bool:
        """True if an injected fault may explain an error on ``device`` in a call begun at ``since``
        (``time.monotonic()``; default now): a fault is on now, or one ended less than a device timeout
        before the call began (what it left in flight, a late reply or CAN error frames, may still arrive).
        """
        emulator = self.emulators.get(device)
        if emulator is None:
            return False
        link = emulator.link
        if emulator.server.wedged or (link is not None and link.active):
            return True
        ended = self.fault_ended.get(device)
        began = time.monotonic() if since is None else since
        return ended is not None and began - ended < self.devices[device].timeout

    def apply_safe_state(self) -> list[SafeStateResult]:
        """Write each open device's safe state; a failure is reported, never raised."""
        results = []
        for name, transport in self.transports.items():
            values = self.devices[name].safe_state
            error = None
            try:
                for signal, value in values.items():
                    transport.write(signal, value)
            except TwinloopError as err:
                error = str(err)
            results.append(SafeStateResult(name, dict(values), error))
        return results

    def close(self) -> list[str]:
        """Close transports and stop emulators; always safe to call, never raises.

        Returns what failed to close (a run records it; the other devices are
        still closed and every lock released).
        """
        problems = []
        for name, part in [*self.transports.items(), *self.emulators.items()]:
            try:
                part.close()
            except Exception as err:  # one device's clean-up must not skip the others'
                problems.append(f"device '{name}': closing {type(part).__name__} failed: {err}")
        self.transports.clear()
        self.emulators.clear()
        for lock in self.locks:
            lock.release()
        self.locks.clear()
        return problems

    def __enter__(self) -> "Rig":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
