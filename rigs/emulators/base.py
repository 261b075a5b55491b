"""An emulator: a protocol-free device composed with one protocol's server, on 127.0.0.1."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from twinloop.rigs.device import EmulatedDevice


class ProtocolServer(Protocol):
    """What a protocol server offers the rig: start/stop on one address, and a hung state."""

    scheme: ClassVar[str]

    @property
    def address(self) -> str: ...

    @property
    def wedged(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def wedge(self) -> None: ...

    def unwedge(self) -> None: ...

    @classmethod
    def signal_map(cls, device: type[EmulatedDevice]) -> dict[str, dict[str, Any]]: ...


class Hangs:
    """The hung state of a server that can stop answering (``wedge``) while keeping its connections."""

    def __init__(self) -> None:
        self._wedged = threading.Event()

    def wedge(self) -> None:
        """Stop answering (requests are still taken in, and dropped), like a hung device."""
        self._wedged.set()

    def unwedge(self) -> None:
        """Answer again."""
        self._wedged.clear()

    @property
    def wedged(self) -> bool:
        """True while the server is not answering (an injected fault)."""
        return self._wedged.is_set()


def fault_kinds(server: type) -> tuple[str, ...]:
    """``wedge`` (the server stops answering, connection kept) where the server can hang, and the
    device's sensor faults ``stuck`` and ``noise``."""
    return (*(("wedge",) if getattr(server, "can_hang", True) else ()), "stuck", "noise")


class Emulator:
    """A device and the server that speaks for it; the rig steps the device and drives the server."""

    def __init__(self, device: EmulatedDevice, server: ProtocolServer) -> None:
        self.device, self.server = device, server

    @property
    def address(self) -> str:
        """Transport URL of the running server."""
        return self.server.address

    @property
    def values(self) -> dict[str, float]:
        """The device's true values (engineering units)."""
        return self.device.values

    def start(self) -> "Emulator":
        self.server.start()
        return self


    def stop(self) -> None:
        self.server.stop()

    def close(self) -> None:
        """Stop for good, releasing what the server holds open between power cycles (a pty)."""
        self.server.stop()
        if hasattr(self.server, "close"):
            self.server.close()

    def step(self, dt: float) -> None:
        """Advance the device's physics by ``dt`` seconds.

        A server that holds copies of the values (OPC UA variables, CAN frames)
        hands its clients' writes to the device first and publishes the new
        values after.
        """
        pull, push = getattr(self.server, "pull", None), getattr(self.server, "push", None)
        if pull:
            pull()
        self.device.step(dt)
        if push:
            push()

    def power_off(self) -> None:
        self.device.power_off()

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class EmulatorKind:
    """A device type served over a protocol: what a plan knows before anything starts."""

    device: type[EmulatedDevice]
    server: type

    @property
    def scheme(self) -> str:
        """Address scheme of the transport that reaches this emulator."""
        return self.server.scheme

    @property
    def signal_map(self) -> dict[str, dict[str, Any]]:
        """The signal map in the form rig profiles use, for this protocol."""
        return self.server.signal_map(self.device)

    @property
    def safe_state(self) -> dict[str, float]:
        return dict(self.device.safe_state)

    @property
    def transport_options(self) -> dict[str, Any]:
        """Options the transport needs to reach this emulator (a CAN node's DBC file)."""
        options = getattr(self.server, "transport_options", None)
        return dict(options(self.device)) if options else {}

    @property
    def faults(self) -> tuple[str, ...]:
        return fault_kinds(self.server)

    def check(self, **params: Any) -> None:
        """Build the device with ``params`` (no server, nothing started); raises on bad ones."""
        self.device.check_params(**params)

    def build(self, host: str = "127.0.0.1", **params: Any) -> Emulator:
        """A device with ``params`` and its server on ``host`` (port chosen by the system)."""
        device = self.device(**params)
        return Emulator(device, self.server(device, host=host))
