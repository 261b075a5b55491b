"""Serve a rig profile's emulators on 127.0.0.1 on their own, stepping their physics in real time.

``twinloop emulate rigs/profiles/emulated.yaml`` lets a bench engineer point
other tools (a Modbus poller, UaExpert, a terminal) at the same emulated
devices twinloop's scenarios run against.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from twinloop.errors import ConfigError
from twinloop.rigs.emulators.base import Emulator
from twinloop.rigs.profile import RigSource
from twinloop.rigs.registry import emulator_kind

STEP_S = 0.1


@dataclass
class Served:
    """One running emulator and how to reach it."""

    device: str
    emulator: Emulator
    signals: dict[str, dict[str, Any]]
    options: dict[str, Any]


class EmulatorHost:
    """Every emulator of a rig profile, started together, stepped by one real-time thread."""

    def __init__(self, rig: RigSource) -> None:
        self.served: list[Served] = []
        for name, binding in rig.profile.devices.items():
            if binding.emulator is None:
                continue
            if binding.protocol == "can":
                raise ConfigError(f"device '{name}': an emulated CAN node lives on the in-process virtual bus "
                                  "and cannot be served to other processes", file=rig.path)
            kind = emulator_kind(binding.emulator, binding.protocol)
            self.served.append(Served(name, kind.build(**binding.params), kind.signal_map, kind.transport_options))
        if not self.served:
            raise ConfigError("the rig profile declares no emulators", file=rig.path)
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._step, name="emulator-physics", daemon=True)

    def start(self) -> "EmulatorHost":
        for s in self.served:
            s.emulator.start()
        self._thread.start()
        return self

    def _step(self) -> None:
        last = time.monotonic()
        while not self._halt.wait(STEP_S):
            now = time.monotonic()
            for s in self.served:
                s.emulator.step(now - last)
            last = now

    def stop(self) -> None:
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for s in self.served:
            s.emulator.close()

    def describe(self) -> list[dict[str, Any]]:
        """Device, address and signal map of each emulator (what a rig profile would say)."""
        return [{"device": s.device, "address": s.emulator.address, "signals": s.signals,
                 **({"options": s.options} if s.options else {})} for s in self.served]
