"""An OPC UA server (asyncua) on 127.0.0.1 exposing an emulated device's values as variables.

Variables live under ``Objects/<namespace>:<device type>`` with an
``EngineeringUnits`` property each, so a client can check units. The device
and the server exchange values on every physics step: client writes go to the
device's setpoints first, then the device's new values are published.

With ``security_policy: Basic256Sha256`` in its ``server:`` options the server
offers only that policy and trusts only the client certificates in its
``trusted`` folders (asyncua's own server would take any client certificate).
Without its own ``certificate`` it makes a self-signed one at first start.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from twinloop.config import Strict
from twinloop.errors import ConfigError, TransportInitError
from twinloop.rigs.device import EmulatedDevice

logging.getLogger("asyncua").setLevel(logging.ERROR)
NAMESPACE = "urn:twinloop:emulator"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


CERTIFICATE_FILES = (".pem", ".der")  # what asyncua's TrustStore loads from a folder


class OpcUaServerOptions(Strict):
    """The emulator's security: one policy, its own certificate, the client certificates it trusts."""

    security_policy: Literal["None", "Basic256Sha256"] = "None"
    security_mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    certificate: str | None = Field(None, description="the server's certificate; self-signed at start if absent")
    private_key: str | None = Field(None, description="its private key (unencrypted PEM or DER)")
    trusted: list[str] = Field(default_factory=list,
                               description="folders of trusted client certificates (PEM or DER files)")

    @model_validator(mode="after")
    def _consistent(self) -> "OpcUaServerOptions":
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("give both 'certificate' and 'private_key', or neither (a self-signed one is made)")
        if self.security_policy == "None":
            if self.trusted or self.certificate:
                raise ValueError("'trusted' and 'certificate' need a security_policy other than None")
            return self
        from twinloop.rigs import certificates as certs

        if self.certificate:
            try:
                certs.application_uri(certs.read_certificate(self.certificate, "server certificate"),
                                      self.certificate)
                certs.read_private_key(self.private_key, what="server private key")
            except ConfigError as err:
                raise ValueError(str(err)) from None
        if not self.trusted:
            raise ValueError(f"security_policy {self.security_policy} needs 'trusted': the folders of the "
                             "client certificates this server accepts")
        for folder in self.trusted:
            path = Path(folder)
            if not path.is_dir():
                raise ValueError(f"trusted folder {folder} " + ("is a file: list the folder holding it"
                                                                if path.exists() else "does not exist"))
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in CERTIFICATE_FILES)
            if not files:
                raise ValueError(f"trusted folder {folder} holds no certificate (*.pem or *.der)")
            for file in files:
                try:
                    certs.read_certificate(file, "trusted certificate")
                except ConfigError as err:
                    raise ValueError(f"{err} (every *.pem and *.der file in a trusted folder must be one)") from None
        return self


class OpcUaDeviceServer:
    """One asyncua server per emulated device; ``stop`` and ``start`` again keep its address."""

    scheme = "opc.tcp"
    can_hang = False
    options_model: ClassVar[type[Strict]] = OpcUaServerOptions
    path_options: ClassVar[tuple[str, ...]] = ("certificate", "private_key", "trusted")

    def __init__(self, device: EmulatedDevice, host: str = "127.0.0.1", port: int = 0,
                 options: OpcUaServerOptions | None = None) -> None:
        self.device, self.host = device, host
        self.options = options or OpcUaServerOptions()
        self._credentials: tuple[bytes, bytes, str] | None = None  # DER certificate, DER key, application URI
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
        try:
            self._secure(server, ua)
        except BaseException:
            server.stop()
            raise
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

    def _secure(self, server: Any, ua: Any) -> None:
        """Offer the one policy the options name; with security, trust only the listed client certificates."""
        o = self.options
        if o.security_policy == "None":
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            return
        from asyncua.crypto.truststore import TrustStore
        from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions as Check

        certificate, key, uri = self._credentials = self._credentials or self._load_or_make_credentials()
        server.set_security_policy([getattr(ua.SecurityPolicyType, f"{o.security_policy}_{o.security_mode}")])
        server.load_certificate(certificate, format="der")
        server.load_private_key(key, format="der")
        server.set_application_uri(uri)
        store = TrustStore([Path(folder) for folder in o.trusted], [])
        server.tloop.post(store.load())
        server.aio_obj.set_certificate_validator(
            CertificateValidator(Check.TIME_RANGE | Check.URI | Check.TRUSTED | Check.PEER_CLIENT, store))

    def _load_or_make_credentials(self) -> tuple[bytes, bytes, str]:
        """The server's certificate and key from the options, or a self-signed pair made once per server."""
        from twinloop.rigs import certificates as certs

        o = self.options
        if o.certificate:
            certificate = certs.read_certificate(o.certificate, "server certificate")
            key = certs.read_private_key(o.private_key, what="server private key")
            return certs.der(certificate), certs.der_key(key), certs.application_uri(certificate, o.certificate)
        uri = f"{NAMESPACE}:{self.device.device_type}"
        certificate, key = certs.new_certificate(f"twinloop {self.device.device_type} emulator", uri, "server",
                                                 hosts=("localhost", self.host))
        return certs.der(certificate), certs.der_key(key), uri

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
