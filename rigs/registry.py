"""Registries of rigs: transports by address scheme, emulators by device type."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from twinloop.rigs.transport import Transport
from twinloop.errors import TransportUnavailableError
from twinloop.registry import Registry

if TYPE_CHECKING:
    from twinloop.rigs.emulators.base import EmulatorKind

transports: Registry[type[Transport]] = Registry(
    "transport", "twinloop.transports",
    {"modbus+tcp": "twinloop.rigs.modbus:ModbusTcpTransport",
     "modbus+rtu": "twinloop.rigs.modbus:ModbusRtuTransport",
     "scpi+socket": "twinloop.rigs.scpi:ScpiTransport",
     "scpi+serial": "twinloop.rigs.scpi:ScpiSerialTransport",
     "opc.tcp": "twinloop.rigs.opcua:OpcUaTransport",
     "can": "twinloop.rigs.can:CanTransport"},
    error=TransportUnavailableError,
)

#: Emulated devices (protocol-free physics) by device type.
emulators: Registry[type] = Registry(
    "device emulator", "twinloop.emulators",
    {"power_module": "twinloop.rigs.emulators.power_module:PowerModuleDevice",
     "pump": "twinloop.rigs.emulators.pump:PumpDevice",
     # One per twin model without a hand-written emulator: the model's physics with hidden truth.
     "battery_circuit": "twinloop.rigs.emulators.model_device:BatteryCircuitDevice",
     "li_ion_capacity_fade": "twinloop.rigs.emulators.model_device:LiIonCellDevice",
     "electrolytic_capacitor": "twinloop.rigs.emulators.model_device:ElectrolyticCapacitorDevice",
     "paris_crack_growth": "twinloop.rigs.emulators.model_device:CrackGrowthDevice",
     "solder_joint_fatigue": "twinloop.rigs.emulators.model_device:SolderJointDevice",
     "electromigration": "twinloop.rigs.emulators.model_device:ElectromigrationDevice"},
    error=TransportUnavailableError,
)

#: Protocol servers that put an emulated device on 127.0.0.1, by protocol name.
protocols: Registry[type] = Registry(
    "emulator protocol", "twinloop.protocols",
    {"modbus": "twinloop.rigs.emulators.modbus_server:ModbusDeviceServer",
     "modbus-rtu": "twinloop.rigs.emulators.modbus_server:ModbusRtuDeviceServer",
     "scpi": "twinloop.rigs.emulators.scpi_server:ScpiSocketServer",
     "scpi-pty": "twinloop.rigs.emulators.scpi_server:ScpiPtyServer",
     "opcua": "twinloop.rigs.emulators.opcua_server:OpcUaDeviceServer",
     "can": "twinloop.rigs.emulators.can_node:CanDeviceNode",
     "can-socketcand": "twinloop.rigs.emulators.can_node:CanSocketcandNode"},
    error=TransportUnavailableError,
)


def emulator_kind(device_type: str, protocol: str = "modbus") -> "EmulatorKind":
    """The device type ``device_type`` served over ``protocol``."""
    from twinloop.rigs.emulators.base import EmulatorKind

    return EmulatorKind(emulators.get(device_type), protocols.get(protocol))


def transport_class(device: str, address: str) -> type[Transport]:
    """The transport class for ``address``'s URL scheme."""
    scheme = address.split("://", 1)[0] if "://" in address else ""
    if not scheme:
        raise TransportUnavailableError(f"device '{device}': address {address!r} has no scheme "
                                        "(expected e.g. modbus+tcp://127.0.0.1:5020/unit/1)")
    if scheme.startswith("can+"):  # any python-can interface: can+socketcan, can+virtual, can+pcan, ...
        scheme = "can"
    return transports.get(scheme)


def open_transport(device: str, address: str, signals: Mapping[str, Mapping[str, Any]],
                   timeout: float = 1.0, options: Mapping[str, Any] | None = None) -> Transport:
    """Build the transport whose scheme starts ``address`` (not yet opened)."""
    return transport_class(device, address)(device, address, signals, timeout=timeout, options=options)
