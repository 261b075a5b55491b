"""Clocks that drive a run: real time for benches, simulated time for emulated rigs."""

from __future__ import annotations

import time
from typing import Callable


class SimulatedClock:
    """Time advances only when told to; listeners (emulators) step with it."""

    kind = "simulated"

    def __init__(self) -> None:
        self.now = 0.0
        self.listeners: list[Callable[[float], None]] = []

    def advance(self, dt: float) -> None:
        """Move time forward by ``dt`` seconds, stepping every listener."""
        for listener in self.listeners:
            listener(dt)
        self.now += dt


class RealClock:
    """Wall-clock time; ``advance`` sleeps until the next tick without drifting."""

    kind = "real"

    def __init__(self) -> None:
        self._start = time.monotonic()
        self.now = 0.0
        self.listeners: list[Callable[[float], None]] = []

    def advance(self, dt: float) -> None:
        """Sleep until ``dt`` seconds after the previous tick."""
        self.now += dt
        delay = self._start + self.now - time.monotonic()
        if delay > 0:
            time.sleep(delay)
