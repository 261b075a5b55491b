"""An OPC UA server (asyncua) on 127.0.0.1 exposing an emulated device's values as variables.

Variables live under ``Objects/<namespace>:<device type>`` with an
``EngineeringUnits`` property each, so a client can check units. The device
and the server exchange values on every physics step: client writes go to the
device's setpoints first, then the device's new values are published.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from twinloop.errors import TransportInitError
from twinloop.rigs.device import EmulatedDevice

logging.getLogger("asyncua").setLevel(logging.ERROR)
NAMESPACE = "urn:twinloop:emulator"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class OpcUaDeviceServer:
    """One asyncua server per emulated device; ``stop`` and ``start`` again keep its address."""

    scheme = "opc.tcp"
    can_hang = False

    def __init__(self, device: EmulatedDevice, host: str = "127.0.0.1", port: int = 0) -> None:
        self.device, self.host = device, host
        self.port = port or _free_port(host)
        self._server: Any = None
        self.variables: dict[str, Any] = {}
        self._written: dict[str, float] = {}

    @classmethod
    def signal_map(cls, device: type[EmulatedDevice]) -> dict[str, dict[str, Any]]:
        """Browse paths ``2:<device type>/2:<signal>`` with the device's units."""
        return {name: {"path": f"2:{device.device_type}/2:{name}", "unit": sig.unit, "writable": sig.writable}
                for name, sig in device.signals.items()}

    @classmethod
    def transport_options(cls, device: type[EmulatedDevice]) -> dict[str, Any]:
        """The device's methods, as browse paths the transport resolves."""
        return {"methods": {m: f"2:{device.device_type}/2:{m}" for m in device.methods}} if device.methods else {}

    @property
    def address(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/twinloop/"

    @property
    def wedged(self) -> bool:
        return False

    def start(self) -> None:
        """Build the address space and serve it (about a second: asyncua's server start-up)."""
        from asyncua import ua
        from asyncua.sync import Server

        server = Server()
        server.set_endpoint(self.address)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = server.register_namespace(NAMESPACE)
        if idx != 2:
            raise TransportInitError(f"OPC UA emulator: namespace index {idx}, expected 2")
        obj = server.nodes.objects.add_object(idx, self.device.device_type)
        with self.device.lock:
            values = {name: self.device.read(name) for name in self.device.signals}
        for name, sig in self.device.signals.items():
            var = obj.add_variable(idx, name, float(values[name]), ua.VariantType.Double)
            var.add_property(0, "EngineeringUnits", ua.EUInformation(
                NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
                DisplayName=ua.LocalizedText(sig.unit), Description=ua.LocalizedText(sig.unit)))
            if sig.writable:
                var.set_writable()
            self.variables[name] = var
        for method, arguments in self.device.methods.items():
            method_node = obj.add_method(idx, method, self._method(method, ua), [ua.VariantType.Double] * len(arguments), [])
            args = method_node.get_child("0:InputArguments")
            described = args.read_value()
            for argument, name in zip(described, arguments):
                argument.Name = name
            args.write_value(described)
        self._written = {n: values[n] for n, s in self.device.signals.items() if s.writable}
        try:
            server.start()
        except Exception as err:
            server.stop()
            raise TransportInitError(f"OPC UA emulator could not listen on {self.address}: {err}") from err
        self._server = server

    def _method(self, name: str, ua: Any) -> Any:
        """The callback of method ``name``: the device's method; a refused argument is BadOutOfRange."""
        def call(parent: Any, *args: Any) -> Any:
            try:
                result = getattr(self.device, name)(*(float(a.Value) for a in args))
            except (ValueError, TypeError):
                return ua.StatusCode(ua.StatusCodes.BadOutOfRange)
            with self.device.lock:  # publish the new setpoints now, so the next pull keeps them
                for signal in self._written:
                    value = float(self.device.values[signal])
                    self.variables[signal].write_value(value)
                    self._written[signal] = value
            return [] if result is None else [ua.Variant(float(result), ua.VariantType.Double)]
        return call

    def stop(self) -> None:
        """Stop serving (clients lose their sessions); safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()  # also ends the server's own event-loop thread

    def pull(self) -> None:
        """Take client writes into the device's setpoints."""
        if self._server is None:
            return
        for name, last in self._written.items():
            value = float(self.variables[name].read_value())
            if value != last:
                self.device.write(name, value)
                self._written[name] = value

    def push(self) -> None:
        """Publish the device's values."""
        if self._server is None:
            return
        for name in self.device.signals:
            value = self.device.read(name)
            self.variables[name].write_value(float(value))
            if name in self._written:
                self._written[name] = float(value)

    def sync(self) -> None:
        """Writes in, values out (what a physics step does around the device)."""
        self.pull()
        self.push()

    def wedge(self) -> None:
        raise ValueError("the OPC UA emulator cannot hang (use power off, or a transport timeout)")

    def unwedge(self) -> None:
        """Nothing to undo."""
