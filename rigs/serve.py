"""Serve a rig profile's emulators on 127.0.0.1 on their own, stepping their physics in real time.

``twinloop emulate rigs/profiles/emulated.yaml`` lets a bench engineer point
other tools (a Modbus poller, UaExpert, a terminal, a socketcand client) at
the same emulated devices twinloop's scenarios run against. A CAN node is
served through a socketcand server on 127.0.0.1 (``can+socketcand://...``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinloop.config import raise_at
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
            # the in-process virtual bus cannot reach other processes: a CAN node is served through socketcand
            protocol = "can-socketcand" if binding.protocol == "can" else binding.protocol
            kind = emulator_kind(binding.emulator, protocol)
            try:
                options = kind.server_options(binding.server, Path(rig.path).parent if rig.text else None)
            except ConfigError as err:
                message = f"device '{name}': {str(err).split(': ', 1)[-1]}"
                loc = ("devices", name, *(err.key or "server").split("."))
                if rig.text is None:
                    raise ConfigError(message, file=rig.path) from None
                raise_at(Path(rig.path), rig.text, loc, message)
            emulator = kind.build(server_options=options, **binding.params)
            self.served.append(Served(name, emulator, kind.signal_map, kind.transport_options))
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
