"""A SCPI-style instrument for an emulated device: on a TCP socket (LXI raw port) or on a pty (serial).

Each line holds one or more commands separated by ``;``. ``*IDN?`` names the
instrument; ``NAME?`` (or the device's own ``scpi_map`` query) answers a value;
``NAME VALUE`` sets a writable one. An unknown command gets no answer, as on a
real instrument (it would go to the error queue), so the client times out.
"""

from __future__ import annotations

import os
import select
import socket
import socketserver
import threading
import tty
from typing import Any

from twinloop.errors import TransportInitError
from twinloop.rigs.device import EmulatedDevice
from twinloop.rigs.emulators.base import Hangs
from twinloop.rigs.emulators.link import HeldReplies, LinkFaults


class _Instrument(Hangs):
    """The command set and the hung/off states shared by both servers."""

    def __init__(self, device: EmulatedDevice) -> None:
        super().__init__()
        self.device = device
        spec = self.signal_map(type(device))
        self.queries = {s["query"].upper(): name for name, s in spec.items()}
        self.setters = {s["set"].split("{", 1)[0].strip().upper(): name for name, s in spec.items() if s.get("set")}
        self.errors: list[str] = []

    @classmethod
    def signal_map(cls, device: type[EmulatedDevice]) -> dict[str, dict[str, Any]]:
        """The device's own ``scpi_map``, else ``NAME?`` and ``NAME {value}`` per signal."""
        own = getattr(device, "scpi_map", None)
        if own is not None:
            return {name: dict(spec) for name, spec in own.items()}
        return {name: {"query": f"{name.upper()}?", "unit": sig.unit, "writable": sig.writable,
                       **({"set": f"{name.upper()} {{value}}"} if sig.writable else {})}
                for name, sig in device.signals.items()}

    def answer(self, line: str) -> str | None:
        """The reply line to ``line``, or None when it asks nothing (or the instrument is hung)."""
        if self.wedged:
            return None
        replies = []
        for command in (c.strip() for c in line.split(";") if c.strip()):
            upper = command.upper()
            if upper == "*IDN?":
                replies.append(f"twinloop,{self.device.device_type},0,emulated")
            elif upper in self.queries:
                replies.append(f"{self.device.read(self.queries[upper]):.9g}")
            else:
                head, _, value = command.rpartition(" ")
                name = self.setters.get(head.strip().upper())
                try:
                    if name is None:
                        raise ValueError("undefined header")
                    self.device.write(name, float(value))
                except ValueError as err:
                    self.errors.append(f"{command!r}: {err}")
                    return None
        return ";".join(replies) if replies else None


class ScpiSocketServer(_Instrument):
    """The instrument on a TCP port of 127.0.0.1, as an LXI instrument's raw SCPI socket."""

    scheme = "scpi+socket"

    def __init__(self, device: EmulatedDevice, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(device)
        self.host, self.port = host, port
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[Any] = set()

    @property
    def address(self) -> str:
        return f"scpi+socket://{self.host}:{self.port}"

    def start(self) -> None:
        """Listen (again, on the same port after ``stop``)."""
        instrument = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                instrument._connections.add(self.connection)
                try:
                    for raw in self.rfile:
                        reply = instrument.answer(raw.decode("ascii", errors="replace"))
                        if reply is not None:
                            self.wfile.write(reply.encode("ascii") + b"\n")
                except OSError:
                    pass  # the connection was dropped (power off) or the client went away
                finally:
                    instrument._connections.discard(self.connection)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        socketserver.ThreadingTCPServer.daemon_threads = True
        try:
            self._server = socketserver.ThreadingTCPServer((self.host, self.port), Handler)
        except OSError as err:
            raise TransportInitError(f"SCPI emulator could not listen on {self.host}:{self.port}: {err}") from err
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"scpi-emulator-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and drop every connection; safe to call twice."""
        for connection in list(self._connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class ScpiPtyServer(_Instrument):
    """The instrument behind a pseudo-terminal: clients open its path as a serial port.

    A pty's path cannot be kept across a close, so ``stop`` leaves the line in
    place and the instrument silent (a powered-off instrument on a serial line),
    and ``start`` again makes it answer.
    """

    scheme = "scpi+serial"
    has_link = True

    def __init__(self, device: EmulatedDevice, host: str = "127.0.0.1") -> None:
        super().__init__(device)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self.link = LinkFaults()  # link faults apply to the instrument's replies on the line
        self._on = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"scpi-pty-{self.path}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"scpi+serial://{self.path}?baudrate=115200"

    def _serve(self) -> None:
        buffer = b""
        replies = HeldReplies(self.link, lambda data: os.write(self._master, data))
        while not self._closed.is_set():
            ready, _, _ = select.select([self._master], [], [], replies.wait(0.05))
            try:
                replies.deliver()
                if not ready:
                    continue
                chunk = os.read(self._master, 4096)
            except OSError:
                return
            buffer += chunk
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                reply = self.answer(raw.decode("ascii", errors="replace")) if self._on.is_set() else None
                if reply is not None:
                    replies.send(reply.encode("ascii") + b"\n")

    def start(self) -> None:
        self._on.set()

    def stop(self) -> None:
        self._on.clear()

    def close(self) -> None:
        """Close the pty for good (the emulator is done)."""
        self._on.clear()
        self._closed.set()
        self._thread.join(timeout=5)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __del__(self) -> None:
        if not self._closed.is_set():
            self.close()
