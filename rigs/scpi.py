"""Line-based instruments (SCPI-style ``MEAS:TEMP?``) over pyserial: serial ports and raw SCPI sockets.

Addresses: ``scpi+serial:///dev/ttyUSB0?baudrate=9600`` (any serial device, or a
pty) and ``scpi+socket://HOST:5025`` (an LXI instrument's raw SCPI port). Both go
through ``serial.serial_for_url``. pyserial returns ``b''`` on a timeout instead
of raising, so every reply is checked for its terminator here.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping
from urllib.parse import parse_qsl, urlsplit

import serial
from pydantic import Field

from twinloop.config import Strict
from twinloop.errors import ConfigError, TransportInitError, TransportOperationError, TransportTimeoutError
from twinloop.rigs.transport import SignalSpec, Transport


class ScpiSignal(SignalSpec):
    """A signal read by a ``query`` (e.g. ``MEAS:TEMP?``) and, if writable, set by a ``set`` template."""

    query: str = Field(min_length=1)
    set: str | None = Field(None, description="command with {value}, e.g. 'SOUR:POW {value}'")


class ScpiOptions(Strict):
    """Line framing of the instrument."""

    read_terminator: str = "\n"
    write_terminator: str = "\n"
    encoding: str = "ascii"


def serial_url(address: str) -> tuple[str, dict[str, Any]]:
    """The pyserial URL and keyword arguments for a ``scpi+serial`` or ``scpi+socket`` address."""
    url = urlsplit(address)
    if url.scheme == "scpi+socket":
        try:
            port = url.port
        except ValueError:
            port = None
        if not url.hostname or port is None:
            raise ConfigError(f"SCPI socket address {address!r} must look like scpi+socket://HOST:PORT")
        return f"socket://{url.hostname}:{port}", {}
    if url.scheme == "scpi+serial":
        if not url.path:
            raise ConfigError(f"serial address {address!r} must look like scpi+serial:///dev/ttyUSB0?baudrate=9600")
        kwargs: dict[str, Any] = {}
        for key, value in parse_qsl(url.query):
            if key not in ("baudrate", "bytesize", "parity", "stopbits"):
                raise ConfigError(f"serial address {address!r}: unknown setting '{key}' "
                                  "(baudrate, bytesize, parity, stopbits)")
            kwargs[key] = value if key == "parity" else (float(value) if key == "stopbits" else int(value))
        return url.path, kwargs
    raise ConfigError(f"not a SCPI address: {address!r}")


class ScpiTransport(Transport):
    """One query per signal and one command per write, each a line; replies are numbers."""

    scheme: ClassVar[str] = "scpi+socket"
    signal_spec = ScpiSignal
    options_model = ScpiOptions

    @classmethod
    def check(cls, device: str, address: str | None, signals: Mapping[str, SignalSpec], options: Strict) -> None:
        if address is not None:
            serial_url(address)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.url, self.serial_kwargs = serial_url(self.address)
        self.port: serial.SerialBase | None = None

    def _open(self) -> None:
        try:
            self.port = serial.serial_for_url(self.url, timeout=self.timeout, write_timeout=self.timeout,
                                              **self.serial_kwargs)
        except (serial.SerialException, OSError, ValueError) as err:
            raise TransportInitError(f"{self._where()}: cannot open {self.url}: {err}") from err

    def _close(self) -> None:
        if self.port is not None:
            self.port.close()
            self.port = None

    def _line(self, text: str) -> None:
        o = self.options
        try:
            self.port.write((text + o.write_terminator).encode(o.encoding))
        except serial.SerialTimeoutException as err:
            raise TransportTimeoutError(f"{self._where()}: could not send {text!r} within {self.timeout} s") from err
        except (serial.SerialException, OSError) as err:
            raise TransportOperationError(f"{self._where()}: connection lost sending {text!r}: {err}") from err

    def _ask(self, query: str) -> str:
        o = self.options
        self.port.reset_input_buffer()  # a late answer to an earlier, timed-out query is not this one's
        self._line(query)
        try:
            reply = self.port.read_until(o.read_terminator.encode(o.encoding))
        except (serial.SerialException, OSError) as err:
            raise TransportOperationError(f"{self._where()}: connection lost waiting for {query!r}: {err}") from err
        if not reply.endswith(o.read_terminator.encode(o.encoding)):
            got = f"; got {reply!r} so far" if reply else ""
            raise TransportTimeoutError(f"{self._where()}: no answer to {query!r} within {self.timeout} s{got}")
        return reply.decode(o.encoding, errors="replace").strip()

    def _read(self, specs: Mapping[str, ScpiSignal]) -> dict[str, float]:
        out = {}
        for name, spec in specs.items():
            reply = self._ask(spec.query)
            try:
                out[name] = float(reply)
            except ValueError:
                raise TransportOperationError(f"{self._where()}: {spec.query!r} answered {reply!r}, "
                                              "not a number") from None
        return out

    def _write(self, name: str, spec: ScpiSignal, raw: float) -> None:
        if spec.set is None:
            raise TransportOperationError(f"{self._where()}: '{name}' has no 'set' command in the rig profile")
        self._line(spec.set.format(value=f"{raw:.9g}"))


class ScpiSerialTransport(ScpiTransport):
    """The same over a serial device or pty."""

    scheme: ClassVar[str] = "scpi+serial"
