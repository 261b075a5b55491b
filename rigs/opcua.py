"""OPC UA transport over asyncua: ``opc.tcp://HOST:PORT/PATH``.

Signals are nodes, by node id (``ns=2;s=Module.Temperature``) or browse path
from Objects (``2:module/2:temperature``). At open the engineering unit each
node declares (its ``EngineeringUnits`` property) is compared with the rig
profile's unit, so a bench wired to the wrong variable fails before the run.
Signals listed in ``options.subscribe`` are pushed by the server (monitored
items) into a last-value cache instead of being polled; until the first
notification their value is "none yet" (recorded as missing). Methods in
``options.methods`` (name -> node id or browse path) are resolved at open and
called by a scenario's ``call`` step; a refusal names the server's status code.
With ``security_policy: Basic256Sha256`` the session is signed (and by
default encrypted) with the client certificate and key in the options; the
client's application URI is taken from its certificate, as servers check.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, ClassVar, Literal, Mapping

from pydantic import Field, model_validator

from twinloop import units
from twinloop.config import Strict, parse_duration
from twinloop.errors import ConfigError, TransportInitError, TransportOperationError, TransportTimeoutError
from twinloop.rigs.transport import SignalSpec, Transport

# asyncua logs every reconnect and policy choice; failures reach the run as TransportErrors.
logging.getLogger("asyncua").setLevel(logging.ERROR)


class OpcUaSignal(SignalSpec):
    """A variable node: ``node`` id or browse ``path`` (``2:module/2:temperature``)."""

    node: str | None = None
    path: str | None = None

    @model_validator(mode="after")
    def _one(self) -> "OpcUaSignal":
        if (self.node is None) == (self.path is None):
            raise ValueError("give exactly one of 'node' (e.g. ns=2;i=7) or 'path' (e.g. 2:module/2:temp)")
        return self


class OpcUaOptions(Strict):
    """Subscriptions and security of the session."""

    subscribe: list[str] = Field(default_factory=list, description="signals pushed by the server")
    methods: dict[str, str] = Field(default_factory=dict,
                                    description="callable methods: name -> node id or browse path from Objects")
    publishing_interval: float = 0.1
    security_policy: Literal["None", "Basic256Sha256"] = "None"
    security_mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    certificate: str | None = Field(None, description="this client's certificate, PEM or DER")
    private_key: str | None = Field(None, description="its private key, PEM or DER")
    private_key_password_env: str | None = Field(
        None, description="environment variable holding the key's password (never the password itself)")
    server_certificate: str | None = Field(
        None, description="the server's certificate; without it, taken from the server's endpoint list")
    check_units: bool = True

    _d = model_validator(mode="before")(lambda v: {**v, "publishing_interval": parse_duration(
        v["publishing_interval"])} if isinstance(v, dict) and "publishing_interval" in v else v)

    @model_validator(mode="after")
    def _certs(self) -> "OpcUaOptions":
        if self.security_policy != "None" and not (self.certificate and self.private_key):
            raise ValueError(f"security_policy {self.security_policy} needs 'certificate' and 'private_key'")
        return self


class OpcUaTransport(Transport):
    """Batched reads of polled nodes, a cache for subscribed ones, typed writes."""

    scheme: ClassVar[str] = "opc.tcp"
    signal_spec = OpcUaSignal
    options_model = OpcUaOptions
    path_options: ClassVar[tuple[str, ...]] = ("certificate", "private_key", "server_certificate")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        unknown = [s for s in self.options.subscribe if s not in self.signals]
        if unknown:
            raise ConfigError(f"device '{self.device}': subscribe names unknown signal '{unknown[0]}'",
                              key="options.subscribe")
        self.client: Any = None
        self.nodes: dict[str, Any] = {}
        self.types: dict[str, Any] = {}
        self.cache: dict[str, float | None] = {}
        self._lock = threading.Lock()
        self._subscription: Any = None
        self.methods: dict[str, tuple[Any, Any]] = {}  # name -> (object node, method node)

    def _open(self) -> None:
        from asyncua.sync import Client

        address = self.address
        client = Client(address, timeout=self.timeout)
        o = self.options
        try:
            if o.security_policy != "None":
                self._secure(client)
            client.connect()
        except Exception as err:
            if getattr(client, "close_tloop", False):
                client.tloop.stop()  # the client's own event-loop thread
            if isinstance(err, ConfigError):
                raise TransportInitError(f"{self._where()}: {err}") from None
            raise TransportInitError(f"{self._where()}: cannot connect: {_why(err, o)}") from err
        self.client = client
        try:
            self._resolve()
            if o.subscribe:
                self._subscribe()
        except BaseException:
            self._close()
            raise

    def _secure(self, client: Any) -> None:
        """Sign (and encrypt) the session with this client's certificate; its URI becomes the client's."""
        from asyncua import ua
        from asyncua.crypto import security_policies
        from asyncua.crypto.uacrypto import CertProperties

        from twinloop.rigs import certificates as certs

        o = self.options
        password = None
        if o.private_key_password_env:
            if o.private_key_password_env not in os.environ:
                raise ConfigError(f"options.private_key_password_env: environment variable "
                                  f"{o.private_key_password_env} is not set")
            password = os.environ[o.private_key_password_env].encode()
        certificate = certs.read_certificate(o.certificate)
        key = certs.read_private_key(o.private_key, password)
        client.application_uri = certs.application_uri(certificate, o.certificate)
        server = (CertProperties(certs.der(certs.read_certificate(o.server_certificate, "server certificate")),
                                 extension="der") if o.server_certificate else None)
        client.set_security(getattr(security_policies, f"SecurityPolicy{o.security_policy}"),
                            CertProperties(certs.der(certificate), extension="der"),
                            CertProperties(certs.der_key(key), extension="der"),
                            server_certificate=server, mode=getattr(ua.MessageSecurityMode, o.security_mode))

    def _resolve(self) -> None:
        from asyncua import ua

        for name, spec in self.signals.items():
            try:
                node = (self.client.get_node(spec.node) if spec.node
                        else self.client.nodes.objects.get_child(spec.path.split("/")))
                self.types[name] = node.read_data_type_as_variant_type()
            except Exception as err:
                where = spec.node or spec.path
                raise TransportInitError(f"{self._where()}: signal '{name}': node {where} not found or not a "
                                         f"variable ({type(err).__name__}: {err})") from err
            self.nodes[name] = node
            if self.options.check_units:
                self._check_unit(name, node, spec, ua)
        for name, where in self.options.methods.items():
            try:
                node = (self.client.get_node(where) if where.startswith(("ns=", "i=", "s=", "g=", "b="))
                        else self.client.nodes.objects.get_child(where.split("/")))
                if node.read_node_class() != ua.NodeClass.Method:
                    raise ValueError("not a method node")
                self.methods[name] = (node.get_parent(), node)
            except Exception as err:
                raise TransportInitError(f"{self._where()}: method '{name}': node {where} not found or not a "
                                         f"method ({type(err).__name__}: {err})") from err

    def _check_unit(self, name: str, node: Any, spec: OpcUaSignal, ua: Any) -> None:
        try:
            eu = node.get_child("0:EngineeringUnits").read_value()
        except Exception:
            return  # the server declares no unit for this node
        declared = eu.DisplayName.Text if eu is not None and eu.DisplayName else None
        if not declared:
            return
        try:
            same = units.convert(1.0, spec.unit, declared) == 1.0
        except ValueError:
            same = False
        if not same:
            raise TransportInitError(f"{self._where()}: signal '{name}': the server says its unit is "
                                     f"'{declared}', the rig profile says '{spec.unit}'")

    def _subscribe(self) -> None:
        transport = self

        class Handler:
            def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
                name = by_node.get(node.nodeid.to_string())
                if name is not None:
                    with transport._lock:
                        transport.cache[name] = float(value)

        by_node = {self.nodes[n].nodeid.to_string(): n for n in self.options.subscribe}
        self.cache = {n: None for n in self.options.subscribe}
        self._subscription = self.client.create_subscription(self.options.publishing_interval * 1000, Handler())
        self._subscription.subscribe_data_change([self.nodes[n] for n in self.options.subscribe])

    def _close(self) -> None:
        client, self.client = self.client, None
        self._subscription = None
        if client is not None:
            try:
                client.disconnect()
            except Exception:
                pass  # the server may already be gone; the session is dropped either way

    def _read(self, specs: Mapping[str, OpcUaSignal]) -> dict[str, float | None]:
        polled = [n for n in specs if n not in self.cache]
        out: dict[str, float | None] = {}
        if polled:
            try:
                values = self.client.read_values([self.nodes[n] for n in polled])
            except TimeoutError as err:
                raise TransportTimeoutError(f"{self._where()}: no answer to a read within {self.timeout} s") from err
            except Exception as err:
                self._close_after_error()
                raise TransportOperationError(f"{self._where()}: read failed: {type(err).__name__}: {err}") from err
            out.update({n: float(v) for n, v in zip(polled, values)})
        with self._lock:
            out.update({n: self.cache[n] for n in specs if n in self.cache})
        return out

    def _write(self, name: str, spec: OpcUaSignal, raw: float) -> None:
        from asyncua import ua

        vtype = self.types[name]
        value = int(round(raw)) if vtype.name.startswith(("Int", "UInt", "Byte", "SByte")) else raw
        if vtype == ua.VariantType.Boolean:
            value = bool(raw)
        try:
            self.nodes[name].write_value(ua.DataValue(ua.Variant(value, vtype)))
        except TimeoutError as err:
            raise TransportTimeoutError(f"{self._where()}: no answer to writing {name} within {self.timeout} s") from err
        except Exception as err:
            self._close_after_error()
            raise TransportOperationError(f"{self._where()}: write {name} refused: {type(err).__name__}: {err}") from err

    def _call(self, method: str, args: list[Any]) -> Any:
        from asyncua import ua

        parent, node = self.methods[method]
        try:
            return parent.call_method(node, *(ua.Variant(float(a), ua.VariantType.Double)
                                              if isinstance(a, (int, float)) and not isinstance(a, bool) else a
                                              for a in args))
        except TimeoutError as err:
            raise TransportTimeoutError(f"{self._where()}: no answer to {method} within {self.timeout} s") from err
        except ua.UaStatusCodeError as err:
            name = ua.StatusCode(err.code).name
            raise TransportOperationError(f"{self._where()}: {method}{tuple(args)} refused: {name}") from err
        except Exception as err:
            self._close_after_error()
            raise TransportOperationError(f"{self._where()}: {method} failed: {type(err).__name__}: {err}") from err

    def _close_after_error(self) -> None:
        """A broken session is dropped, so the next call opens a new one."""
        self.is_open = False
        self._close()


def _why(err: Exception, options: OpcUaOptions) -> str:
    """What a failed connect means for a bench engineer, from asyncua's error."""
    text = f"{type(err).__name__}: {err}"
    if "BadCertificateUntrusted" in text:
        return (f"the server does not trust this client's certificate {options.certificate} "
                "(BadCertificateUntrusted): add it to the server's trusted certificates")
    if "No matching endpoints" in text:
        return (f"the server offers no endpoint with security policy {options.security_policy}"
                + (f", mode {options.security_mode}" if options.security_policy != "None" else "")
                + f" ({err})")
    return text
