"""An emulator: a protocol-free device composed with one protocol's server, on 127.0.0.1."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ValidationError

from twinloop.errors import ConfigError
from twinloop.rigs.device import EmulatedDevice
from twinloop.rigs.emulators.link import LINK_FAULTS, FaultyLink, LinkFaults


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
    """``wedge`` (the device stops answering, connection kept), the device's sensor faults ``stuck``
    and ``noise``, the link faults (``LINK_FAULTS``) and any the protocol adds (CAN's ``bus_off``)."""
    return ("wedge", "stuck", "noise", *LINK_FAULTS, *getattr(server, "extra_faults", ()))


def needs_relay(server: type, kind: str) -> bool:
    """True if fault ``kind`` on this server is applied by a ``FaultyLink`` relay in front of it.

    Servers on a pty or a CAN bus carry their own ``link``; TCP servers get a
    relay, and one that cannot hang by itself (OPC UA) is wedged by its relay.
    """
    if getattr(server, "has_link", False):
        return False
    return kind in LINK_FAULTS or (kind == "wedge" and not getattr(server, "can_hang", True))


class Emulator:
    """A device and the server that speaks for it; the rig steps the device and drives the server.

    With ``relay`` a ``FaultyLink`` on 127.0.0.1 stands in front of a TCP
    server and clients reach the server through it, so link faults hit real
    bytes. Servers on a pty or a CAN bus apply their own ``link`` faults.
    """

    def __init__(self, device: EmulatedDevice, server: ProtocolServer, relay: bool = False) -> None:
        self.device, self.server = device, server
        self.relay: FaultyLink | None = None
        own = getattr(server, "link", None)
        if isinstance(own, LinkFaults):
            self.link: LinkFaults | None = own
        elif relay:
            self.link = LinkFaults()
            self.relay = FaultyLink(lambda: _host_port(server.address), self.link)
        else:
            self.link = None

    @property
    def address(self) -> str:
        """Transport URL clients use: the server's, or its relay's when one stands in front."""
        if self.relay is None:
            return self.server.address
        url = urlsplit(self.server.address)
        return urlunsplit(url._replace(netloc=f"{self.relay.host}:{self.relay.port}"))

    @property
    def values(self) -> dict[str, float]:
        """The device's true values (engineering units)."""
        return self.device.values

    def start(self) -> "Emulator":
        self.server.start()
        if self.relay is not None:
            self.relay.start()
        return self

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.stop()
        self.server.stop()

    def close(self) -> None:
        """Stop for good, releasing what the server holds open between power cycles (a pty)."""
        self.stop()
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

    def server_options(self, options: dict[str, Any], folder: Path | None = None) -> BaseModel | None:
        """Validate a rig profile's ``server:`` options with the protocol server's model (None if empty).

        Relative paths among the server's ``path_options`` are taken from
        ``folder`` (the rig profile's). Raises ConfigError with the key at fault.
        """
        model = getattr(self.server, "options_model", None)
        if not options:
            return None
        options = dict(options)
        for key in getattr(self.server, "path_options", ()) if folder is not None else ():
            value = options.get(key)
            if isinstance(value, str) and not Path(value).is_absolute():
                options[key] = str(folder / value)
            elif isinstance(value, list):
                options[key] = [str(folder / v) if isinstance(v, str) and not Path(v).is_absolute() else v
                                for v in value]
        if model is None:
            raise ConfigError(f"the {self.scheme} emulator takes no server options", key="server")
        try:
            return model.model_validate(options)
        except ValidationError as err:
            first = err.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            message = (f"unknown server option '{first['loc'][-1]}'" if first["type"] == "extra_forbidden"
                       else first["msg"])
            raise ConfigError(message, key=f"server.{key}" if key else "server") from None

    def build(self, host: str = "127.0.0.1", *, relay: bool = False, server_options: BaseModel | None = None,
              **params: Any) -> Emulator:
        """A device with ``params`` and its server on ``host`` (port chosen by the system).

        ``relay``: put a ``FaultyLink`` in front (the scenario injects link
        faults); ``server_options``: validated by ``server_options``.
        """
        device = self.device(**params)
        extra = {"options": server_options} if server_options is not None else {}
        return Emulator(device, self.server(device, host=host, **extra), relay=relay)


def _host_port(address: str) -> tuple[str, int]:
    url = urlsplit(address)
    if url.hostname is None or url.port is None:
        raise ConfigError(f"link faults need a TCP address or a server with its own link; got {address!r}")
    return url.hostname, url.port
