"""The transport base: shared open/read/write/close steps; protocols fill in the rest.

Like python-can's ``BusABC``: the public methods own error mapping, validation
and the event log once; each protocol implements only the ``_`` methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping, Sequence
from urllib.parse import SplitResult, urlsplit

from pydantic import ValidationError

from twinloop.config import Strict
from twinloop.errors import (ConfigError, TransportError, TransportInitError,
                             TransportOperationError)


class SignalSpec(Strict):
    """Where one named signal lives on a device and how raw values scale to units."""

    unit: str
    scale: float = 1.0
    offset: float = 0.0
    writable: bool = False

    def to_units(self, raw: float | None) -> float | None:
        """Raw device value -> engineering units (None, "no value yet", stays None)."""
        return None if raw is None else raw * self.scale + self.offset

    def to_raw(self, value: float) -> float:
        """Engineering units -> raw device value."""
        return (value - self.offset) / self.scale


class NoOptions(Strict):
    """A transport without options of its own."""


class Transport(ABC):
    """A connection to one device, addressed by URL, exposing named signals.

    ``options`` (a rig profile's free-form ``options:`` for the device) are
    validated by the transport's own ``options_model``: a DBC file, a bitrate,
    line terminators, security settings.
    """

    scheme: ClassVar[str]
    signal_spec: ClassVar[type[SignalSpec]] = SignalSpec
    options_model: ClassVar[type[Strict]] = NoOptions
    #: Options that name files: a rig profile's relative paths are taken from the profile's folder.
    path_options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check(cls, device: str, address: str | None, signals: Mapping[str, SignalSpec], options: Strict) -> None:
        """Checks that need address, options and signal map together (files they name); no device I/O.

        ``address`` is None for an emulator (its address exists only once it runs).
        """

    def __init__(self, device: str, address: str, signals: Mapping[str, Mapping[str, Any]],
                 timeout: float = 1.0, options: Mapping[str, Any] | None = None) -> None:
        self.device, self.address, self.timeout = device, address, timeout
        self.url: SplitResult = urlsplit(address)
        self.signals = self.parse_signals(device, signals)
        self.options = self.parse_options(device, options or {})
        self.is_open = False

    @classmethod
    def parse_options(cls, device: str, options: Mapping[str, Any]) -> Strict:
        """Validate a profile's ``options`` with this transport's model (no I/O)."""
        try:
            return cls.options_model.model_validate(dict(options))
        except ValidationError as err:
            first = err.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            message = (f"unknown option '{first['loc'][-1]}'" if first["type"] == "extra_forbidden"
                       else first["msg"])
            raise ConfigError(f"device '{device}': {message}", key=f"options.{key}") from None

    @classmethod
    def parse_signals(cls, device: str, signals: Mapping[str, Any]) -> dict[str, SignalSpec]:
        """Validate a profile's signal map with this transport's spec model (no I/O)."""
        parsed: dict[str, SignalSpec] = {}
        for name, spec in signals.items():
            try:
                parsed[name] = cls.signal_spec.model_validate(spec)
            except ValidationError as err:
                first = err.errors()[0]
                key = ".".join(str(p) for p in (name, *first["loc"]))
                raise ConfigError(f"device '{device}': {first['msg']}", key=f"signals.{key}") from None
        return parsed

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.device!r}, {self.address!r})"

    def _where(self) -> str:
        return f"device '{self.device}' at {self.address}"

    def open(self) -> None:
        """Connect; raises ``TransportInitError`` naming device and address."""
        try:
            self._open()
        except TransportError:
            raise
        except Exception as err:
            raise TransportInitError(f"{self._where()}: cannot open: {err}") from err
        self.is_open = True

    def close(self) -> None:
        """Disconnect; safe to call twice and after a failed open."""
        if self.is_open:
            self.is_open = False
            self._close()

    def read(self, names: list[str] | None = None) -> dict[str, float | None]:
        """Read signals (all if ``names`` is None) in engineering units; None: no value yet (pushed signals)."""
        names = list(self.signals) if names is None else names
        specs = {n: self._spec(n) for n in names}
        self._reopen()
        try:
            raw = self._read(specs)
        except TransportError:
            raise
        except Exception as err:
            raise TransportOperationError(f"{self._where()}: read {names} failed: {err}") from err
        return {n: specs[n].to_units(raw[n]) for n in names}

    def write(self, name: str, value: float) -> None:
        """Write one signal in engineering units; refuses read-only signals."""
        spec = self._spec(name)
        if not spec.writable:
            raise TransportOperationError(f"{self._where()}: signal '{name}' is read-only")
        self._reopen()
        try:
            self._write(name, spec, spec.to_raw(value))
        except TransportError:
            raise
        except Exception as err:
            raise TransportOperationError(f"{self._where()}: write {name}={value} failed: {err}") from err

    @classmethod
    def method_names(cls, options: Strict) -> tuple[str, ...]:
        """Device methods a profile's ``options.methods`` declares (checked at plan); none by default."""
        return tuple(getattr(options, "methods", None) or ())

    def call(self, method: str, args: Sequence[Any] = ()) -> Any:
        """Call device method ``method`` (declared in the profile's ``options.methods``) with ``args``.

        Returns what the device returns (None, a value, or a list of values).
        """
        if method not in self.method_names(self.options):
            known = ", ".join(self.method_names(self.options)) or "none"
            raise TransportOperationError(f"{self._where()}: no method '{method}'; declared: {known}")
        self._reopen()
        try:
            return self._call(method, list(args))
        except TransportError:
            raise
        except Exception as err:
            raise TransportOperationError(f"{self._where()}: call {method}{tuple(args)} failed: {err}") from err

    def _call(self, method: str, args: list[Any]) -> Any:
        """Protocols with methods (OPC UA) override this."""
        raise TransportOperationError(f"{self._where()}: {type(self).__name__} has no methods to call")

    def _reopen(self) -> None:
        """A connection closed after a failure (or never opened) is opened again before the next call."""
        if not self.is_open:
            self.open()

    def _spec(self, name: str) -> SignalSpec:
        try:
            return self.signals[name]
        except KeyError:
            raise TransportOperationError(
                f"{self._where()}: no signal '{name}'; known: {', '.join(sorted(self.signals))}") from None

    def __enter__(self) -> "Transport":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _close(self) -> None: ...

    @abstractmethod
    def _read(self, specs: Mapping[str, SignalSpec]) -> dict[str, float]: ...

    @abstractmethod
    def _write(self, name: str, spec: SignalSpec, raw: float) -> None: ...

