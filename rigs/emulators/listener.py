"""A TCP listener on a loopback address for emulator servers written here (the fault relay, socketcand).

It keeps its port across ``stop``/``start``, so a device powered off and on
keeps its address, and ``stop`` closes every connection it handed out.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Any


class LoopbackListener:
    """Accepts connections on ``host``:``port`` (0: chosen by the system) and passes each to ``accepted``.

    Subclasses ``track`` what each connection holds open (sockets, sessions
    with a ``close``) so ``stop`` can close it, and ``untrack`` it when done.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if not ipaddress.ip_address(socket.gethostbyname(host)).is_loopback:
            raise ValueError(f"{type(self).__name__} serves loopback only, not {host!r}")
        self.host, self.port = host, port
        self._listener: socket.socket | None = None
        self._open: set[Any] = set()
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> None:
        """Listen (on the port used before, if any)."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name=f"{type(self).__name__}-{self.port}",
                         daemon=True).start()

    def stop(self) -> None:
        """Close the listener and everything its connections hold open; safe to call twice."""
        listener, self._listener = self._listener, None
        if listener is not None:
            close_socket(listener)
        with self._lock:
            held, self._open = self._open, set()
        for item in held:
            close_socket(item) if isinstance(item, socket.socket) else item.close()

    def track(self, *items: Any) -> None:
        with self._lock:
            self._open.update(items)

    def untrack(self, *items: Any) -> None:
        with self._lock:
            self._open.difference_update(items)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener was closed
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.accepted(conn)

    def accepted(self, conn: socket.socket) -> None:
        """Serve one new connection (start its threads; do not block the accept loop)."""
        raise NotImplementedError


def close_socket(s: socket.socket) -> None:
    """Shut down and close ``s`` (threads blocked on it wake up); never raises."""
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
