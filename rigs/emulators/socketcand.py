"""A socketcand server on 127.0.0.1: other processes reach this process's ``virtual`` CAN channels over TCP.

socketcand (github.com/linux-can/socketcand, ``doc/protocol.md``) puts CAN
buses on a TCP port with an ASCII protocol; python-can's ``socketcand``
interface is its client. This server speaks the part of it such a client uses::

    server: < hi >
    client: < open can0 >           server: < ok >       (or < error could not open bus >, then closes)
    client: < rawmode >             server: < ok >
    server: < frame 100 1712345678.123456 0A0B0C >       every frame on the bus; 8 hex digits: extended id
    server: < error 040 1712345678.123456 >              an error frame: its class (linux/can/error.h)
    client: < send 200 2 1e 0 >                          a frame onto the bus
    client: < echo >                server: < echo >

Each client holds its own connection to the virtual channel, so, like a raw
CAN socket, it sees every frame the other nodes send and not its own. BCM
mode (the mode after ``open``) takes ``send`` and ``echo`` and forwards no
frames; its cyclic jobs and subscriptions are not served. The listener binds
a loopback address only: the virtual channel never leaves the process.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Mapping

import can

from twinloop.rigs.emulators.listener import LoopbackListener, close_socket

log = logging.getLogger(__name__)

#: Quiet time after ``< ok >`` to ``< rawmode >``: python-can's client reads that reply with one
#: ``recv`` and refuses anything joined to it, so the first frame must not arrive in the same read.
RAW_SETTLE_S = 0.05
CAN_EFF_MASK = 0x1FFFFFFF


def frame_line(msg: can.Message) -> str | None:
    """The line socketcand's raw mode sends for ``msg`` (None for a remote frame, which it does not send)."""
    if msg.is_error_frame:
        return f"< error {msg.arbitration_id & CAN_EFF_MASK:03X} {msg.timestamp:.6f} >"
    if msg.is_remote_frame:
        return None
    ident = f"{msg.arbitration_id:08X}" if msg.is_extended_id else f"{msg.arbitration_id:03X}"
    if msg.is_fd:
        flags = (msg.bitrate_switch and 0x01) | (msg.error_state_indicator and 0x02)
        return f"< fdframe {ident} {flags:02X} {msg.timestamp:.6f} {bytes(msg.data).hex().upper()} >"
    return f"< frame {ident} {msg.timestamp:.6f} {bytes(msg.data).hex().upper()} >"


def parse_send(words: list[str]) -> can.Message:
    """The frame of ``< send ID LEN [BYTE]* >``; raises ValueError on bad syntax."""
    ident, length, data = words[1], int(words[2], 16), bytes(int(b, 16) for b in words[3:])
    if len(data) != length or len(ident) > 8:
        raise ValueError(f"bad send command {' '.join(words)!r}")
    return can.Message(arbitration_id=int(ident, 16), is_extended_id=len(ident) == 8, data=data, check=True)


class SocketcandServer(LoopbackListener):
    """socketcand on ``host`` (a loopback address) and ``port`` (0: chosen by the system).

    ``buses`` maps the bus names clients ``open`` to python-can virtual
    channels of this process. Stopping closes the listener and every client
    connection; starting again listens on the same port.
    """

    def __init__(self, buses: Mapping[str, str], host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.buses = dict(buses)

    def accepted(self, conn: socket.socket) -> None:
        session = _Session(conn, self.buses)
        self.track(session)
        threading.Thread(target=self._serve, args=(session,), name=f"socketcand-{self.port}-client",
                         daemon=True).start()

    def _serve(self, session: "_Session") -> None:
        try:
            session.run()
        finally:
            session.close()
            self.untrack(session)


class _Session:
    """One client: commands in on its thread; in raw mode, frames out from a second thread."""

    def __init__(self, conn: socket.socket, buses: Mapping[str, str]) -> None:
        self.conn, self.buses = conn, buses
        self.bus: can.BusABC | None = None
        self.raw_from: float | None = None  # monotonic time from which frames go out (raw mode)
        self._send_lock = threading.Lock()

    def say(self, line: str) -> None:
        with self._send_lock:
            self.conn.sendall(line.encode("ascii"))

    def run(self) -> None:
        try:
            self.say("< hi >")
            pending = b""
            while data := self.conn.recv(4096):
                pending += data
                while (start := pending.find(b"<")) >= 0 and (end := pending.find(b">", start)) >= 0:
                    command, pending = pending[start + 1:end].decode("ascii", "replace").split(), pending[end + 1:]
                    if not self.command(command):
                        return
                if pending.find(b"<") < 0 or len(pending) > 4096:
                    pending = b""  # no command begins in it, or none ends
        except OSError:
            pass  # the client left, or the server stopped

    def command(self, words: list[str]) -> bool:
        """Act on one command; False ends the session."""
        verb, bus = (words[0] if words else ""), self.bus
        if bus is None:
            if verb == "open" and len(words) == 2 and words[1] in self.buses:
                self.bus = can.Bus(interface="virtual", channel=self.buses[words[1]])
                threading.Thread(target=self._forward, args=(self.bus,), name="socketcand-frames",
                                 daemon=True).start()
                self.say("< ok >")
                return True
            self.say("< error could not open bus >" if verb == "open" else "< error unknown command >")
            return verb != "open"
        if verb == "rawmode":
            self.raw_from = time.monotonic() + RAW_SETTLE_S
            self.say("< ok >")
        elif verb == "bcmmode":
            self.raw_from = None
            self.say("< ok >")
        elif verb == "echo":
            self.say("< echo >")
        elif verb == "send":
            try:
                frame = parse_send(words)
            except (ValueError, IndexError) as err:
                log.warning("socketcand: %s", err)  # as socketcand: a syntax error is logged, not answered
                return True
            try:
                bus.send(frame)
            except can.CanError:
                return False  # the bus was left: the session is closing
        else:
            self.say("< error unknown command >")
        return True

    def _forward(self, bus: can.BusABC) -> None:
        """Every frame on the bus to the client while in raw mode (dropped in BCM mode)."""
        try:
            while True:
                msg = bus.recv(timeout=0.1)
                start = self.raw_from
                if msg is None or start is None:
                    continue
                if (wait := start - time.monotonic()) > 0:
                    time.sleep(wait)
                if (line := frame_line(msg)) is not None:
                    self.say(line)
        except (can.CanError, OSError):
            pass  # the bus was left or the client is gone

    def close(self) -> None:
        close_socket(self.conn)
        bus, self.bus = self.bus, None
        if bus is not None:
            bus.shutdown()

