"""Link faults between an emulator and the harness: latency, jitter, dropped, corrupted and cut replies.

``LinkFaults`` holds what is injected and decides the fate of each reply (a
TCP chunk, a pty write, a CAN frame). ``FaultyLink`` applies it to any TCP
server (Modbus TCP, SCPI socket, OPC UA): a relay on 127.0.0.1 in front of the
server, present only when a scenario injects link faults, so the protocol code
on both sides is the real one and sees real bytes going wrong.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import deque
from typing import Callable, Generic, TypeVar

from twinloop.rigs.emulators.listener import LoopbackListener, close_socket

T = TypeVar("T")

#: Faults a link can carry; ``value`` means: latency/jitter seconds, drop/corrupt the fraction of replies.
LINK_FAULTS = ("latency", "jitter", "drop", "corrupt", "cut")


class LinkFaults:
    """What is injected on one link, and the fate of each reply sent over it.

    ``latency``: every reply waits ``value`` s; ``jitter``: plus a uniform
    0..``value`` s; ``drop``: a fraction ``value`` of replies is lost (default
    all); ``corrupt``: a fraction ``value`` has one byte flipped (default all);
    ``cut``: the next reply stops half way and the link goes silent (a device
    that hangs mid-reply); ``wedge``: the link goes silent, connection kept.
    Ending a fault drops the replies it was still holding back (``epoch``), so
    a link that recovers carries no stale answers.
    """

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.latency = self.jitter = self.drop = self.corrupt = 0.0
        self.cut = False
        self.wedged = False
        self.epoch = 0

    @property
    def active(self) -> bool:
        """True while any fault is injected (errors on this link are then expected)."""
        return bool(self.latency or self.jitter or self.drop or self.corrupt or self.cut or self.wedged)

    def set(self, kind: str, value: float | None = None) -> None:
        """Inject ``kind`` (one of ``LINK_FAULTS`` or ``wedge``)."""
        with self.lock:
            if kind in ("latency", "jitter"):
                if value is None or value < 0:
                    raise ValueError(f"fault '{kind}' needs a duration of 0 s or more as its value")
                setattr(self, kind, float(value))
            elif kind in ("drop", "corrupt"):
                fraction = 1.0 if value is None else float(value)
                if not 0.0 < fraction <= 1.0:
                    raise ValueError(f"fault '{kind}' takes the fraction of replies affected, in (0, 1]; "
                                     f"got {value}")
                setattr(self, kind, fraction)
            elif kind == "cut":
                self.cut = True
            elif kind == "wedge":
                self.wedged = True
            else:
                raise ValueError(f"unknown link fault '{kind}'")

    def clear(self, kind: str | None = None) -> None:
        """End ``kind`` (every link fault if None)."""
        with self.lock:
            self.epoch += 1
            for name in (LINK_FAULTS + ("wedge",)) if kind is None else (kind,):
                if name in ("cut", "wedge"):
                    self.cut = False
                    self.wedged = False  # a cut link stays silent until the cut is ended
                else:
                    setattr(self, name, 0.0)

    def delay(self) -> float:
        """Seconds to hold the next reply (0 without latency or jitter)."""
        with self.lock:
            return self.latency + (self.rng.uniform(0.0, self.jitter) if self.jitter else 0.0)

    def fate(self, data: bytes) -> bytes | None:
        """What arrives of ``data``: None if lost or the link is silent, else the (maybe damaged) bytes."""
        with self.lock:
            if self.wedged:
                return None
            if self.cut:
                self.cut, self.wedged = False, True
                return data[: len(data) // 2] or None
            if self.drop and self.rng.random() < self.drop:
                return None
            if self.corrupt and data and self.rng.random() < self.corrupt:
                i = self.rng.randrange(len(data))
                return data[:i] + bytes([data[i] ^ (1 << self.rng.randrange(8))]) + data[i + 1:]
            return data


class HeldReplies(Generic[T]):
    """Replies on their way over a faulty link: delivered in order, each at its due time.

    For servers that run one loop (a pty's ``select``, a CAN node's cycle):
    ``send`` never blocks the loop, ``wait`` says how long it may sleep,
    ``deliver`` writes what is due. ``fate`` decides what arrives of a reply
    (default the link's, on bytes; a CAN node passes its frame-level one).
    """

    def __init__(self, faults: LinkFaults, write: Callable[[T], object],
                 fate: Callable[[T], T | None] | None = None) -> None:
        self.faults, self.write = faults, write
        self.fate: Callable[[T], T | None] = fate or faults.fate  # type: ignore[assignment]
        self.held: deque[tuple[float, int, T]] = deque()  # due time, epoch, reply

    def send(self, reply: T) -> None:
        """Pass ``reply`` through the link's faults: now, later, damaged or never."""
        if not self.held and not self.faults.active:
            self.write(reply)
            return
        while self.held and self.held[0][1] != self.faults.epoch:
            self.held.popleft()  # held by a fault that has ended: lost with it
        pause = self.faults.delay()
        if pause or self.held:
            due = max(time.monotonic() + pause, self.held[-1][0] if self.held else 0.0)
            self.held.append((due, self.faults.epoch, reply))
        elif (out := self.fate(reply)) is not None:
            self.write(out)

    def wait(self, longest: float) -> float:
        """Seconds the loop may sleep before the next reply is due (at most ``longest``)."""
        return longest if not self.held else min(longest, max(0.0, self.held[0][0] - time.monotonic()))

    def deliver(self) -> None:
        """Write every reply now due (those of an ended fault are dropped)."""
        while self.held and self.held[0][0] <= time.monotonic():
            _, epoch, reply = self.held.popleft()
            if epoch == self.faults.epoch and (out := self.fate(reply)) is not None:
                self.write(out)


class FaultyLink(LoopbackListener):
    """A TCP relay on 127.0.0.1 in front of ``target``; replies (server to client) pass through ``faults``.

    Requests go through untouched. Stopping closes the listener and every
    connection (the device is off); starting again listens on the same port.
    """

    def __init__(self, target: Callable[[], tuple[str, int]], faults: LinkFaults, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self.target, self.faults = target, faults

    def accepted(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.target(), timeout=2.0)
            server.settimeout(None)
        except OSError:
            close_socket(client)  # the device behind the link is not listening
            return
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.track(client, server)
        threading.Thread(target=self._relay, args=(client, server, False), daemon=True).start()
        threading.Thread(target=self._relay, args=(server, client, True), daemon=True).start()

    def _relay(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while data := src.recv(65536):
                if replies:
                    epoch, pause = self.faults.epoch, self.faults.delay()
                    if pause:
                        time.sleep(pause)
                        if self.faults.epoch != epoch:
                            continue  # the fault ended while this reply was held: it is dropped
                    data = self.faults.fate(data)
                    if data is None:
                        continue
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            close_socket(s)
        self.untrack(src, dst)
