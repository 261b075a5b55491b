"""A null-modem cable between two pseudo-terminals, so a serial server and a serial client each
open a path, as they would open the two ends of a USB-RS485 link."""

from __future__ import annotations

import os
import select
import threading
import tty

from twinloop.rigs.emulators.link import HeldReplies, LinkFaults


class NullModem:
    """Two ptys whose bytes are copied across by one thread; ``device_path`` for the emulator,
    ``host_path`` for the harness. ``faults`` (link faults) apply to what the device sends."""

    def __init__(self) -> None:
        self._fds = [os.openpty(), os.openpty()]
        for _, slave in self._fds:
            tty.setraw(slave)
        self.device_path, self.host_path = (os.ttyname(slave) for _, slave in self._fds)
        self.faults = LinkFaults()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="null-modem", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        (a, _), (b, _) = self._fds
        replies = HeldReplies(self.faults, lambda data: os.write(b, data))  # what the device sends
        while not self._closed.is_set():
            ready, _, _ = select.select([a, b], [], [], replies.wait(0.05))
            try:
                for fd in ready:
                    data = os.read(fd, 4096)
                    if fd == a:
                        replies.send(data)
                    else:
                        os.write(a, data)
                replies.deliver()
            except OSError:
                return

    def close(self) -> None:
        """Cut the cable and release both ptys."""
        self._closed.set()
        self._thread.join(timeout=5)
        for master, slave in self._fds:
            for fd in (master, slave):
                try:
                    os.close(fd)
                except OSError:
                    pass
