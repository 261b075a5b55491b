"""Registries of rigs: transports by address scheme, emulators by device type."""

from __future__ import annotations

from typing import Any, Mapping

from twinloop.rigs.transport import Transport
from twinloop.errors import TransportUnavailableError
from twinloop.registry import Registry

transports: Registry[type[Transport]] = Registry(
    "transport", "twinloop.transports",
    {"modbus+tcp": "twinloop.rigs.modbus:ModbusTcpTransport"},
    error=TransportUnavailableError,
)

emulators: Registry[type] = Registry(
    "device emulator", "twinloop.emulators",
    {"power_module": "twinloop.rigs.emulators.power_module:PowerModuleEmulator"},
    error=TransportUnavailableError,
)


def transport_class(device: str, address: str) -> type[Transport]:
    """The transport class for ``address``'s URL scheme."""
    scheme = address.split("://", 1)[0] if "://" in address else ""
    if not scheme:
        raise TransportUnavailableError(f"device '{device}': address {address!r} has no scheme "
                                        "(expected e.g. modbus+tcp://127.0.0.1:5020/unit/1)")
    return transports.get(scheme)


def open_transport(device: str, address: str, signals: Mapping[str, Mapping[str, Any]],
                   timeout: float = 1.0) -> Transport:
    """Build the transport whose scheme starts ``address`` (not yet opened)."""
    return transport_class(device, address)(device, address, signals, timeout=timeout)
