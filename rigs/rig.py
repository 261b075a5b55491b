"""Open every device of a rig profile: start its emulators, connect its transports."""

from __future__ import annotations

from typing import Any

from twinloop.rigs.profile import RigProfile
from twinloop.rigs.registry import emulators, open_transport
from twinloop.rigs.transport import Transport
from twinloop.errors import ConfigError, TwinloopError


class Rig:
    """A live rig: ``transports`` by device name; emulators advance with ``advance``."""

    def __init__(self, profile: RigProfile) -> None:
        self.profile = profile
        self.transports: dict[str, Transport] = {}
        self.emulators: dict[str, Any] = {}

    def open(self) -> "Rig":
        """Start emulators and open every transport; on failure closes what opened."""
        try:
            for name, binding in self.profile.devices.items():
                address, signals = binding.address, binding.signals
                if binding.emulator:
                    try:
                        emulator = emulators.get(binding.emulator)(**binding.params)
                    except TypeError as err:  # unknown or mistyped params in the profile
                        raise ConfigError(f"rig '{self.profile.rig}', device '{name}': "
                                          f"emulator '{binding.emulator}': {err}") from err
                    self.emulators[name] = emulator.start()
                    address, signals = emulator.address, signals or emulator.signal_map
                transport = open_transport(name, address, signals, timeout=binding.timeout)
                transport.open()
                self.transports[name] = transport
        except TwinloopError:
            self.close()
            raise
        return self

    def advance(self, dt: float) -> None:
        """Step every emulator's physics by ``dt`` seconds (simulated clock)."""
        for emulator in self.emulators.values():
            emulator.step(dt)

    def close(self) -> None:
        """Close transports and stop emulators; always safe to call."""
        for transport in self.transports.values():
            transport.close()
        for emulator in self.emulators.values():
            emulator.stop()
        self.transports.clear()
        self.emulators.clear()

    def __enter__(self) -> "Rig":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
