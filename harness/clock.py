"""Clocks that drive a run: real time for benches, simulated time for emulated rigs.

Time is integer nanoseconds from the first step, so schedules never drift:
the k-th sample of a 0.1 s period is due at exactly ``k * 100_000_000`` ns.
Both clocks step their listeners (emulators' physics) by the time that
passed, so an emulated device behaves the same beside real ones.
"""

from __future__ import annotations

import time
from typing import Callable

Listener = Callable[[float], None]
NS = 1_000_000_000


class SimulatedClock:
    """Time moves only when told to, as fast as the listeners can step."""

    kind = "simulated"

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self._now_ns = 0

    def start(self) -> None:
        """Time zero is the first step."""
        self._now_ns = 0

    def elapsed_ns(self) -> int:
        """Time since start; on this clock always the scheduled time."""
        return self._now_ns

    def sleep_until(self, t_ns: int) -> int:
        """Jump to ``t_ns``, stepping every listener; never late, so returns 0."""
        if t_ns > self._now_ns:
            dt = (t_ns - self._now_ns) / NS
            for listener in self.listeners:
                listener(dt)
            self._now_ns = t_ns
        return 0

    def hold(self, ns: int) -> None:
        """Nothing to take out: simulated time does not pass while the harness waits."""


class RealClock:
    """Wall-clock (monotonic) time from ``start``; ``sleep_until`` reports lateness.

    ``monotonic_ns`` and ``sleep`` can be replaced to test scheduling without
    waiting.
    """

    kind = "real"

    def __init__(self, monotonic_ns: Callable[[], int] = time.monotonic_ns,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.listeners: list[Listener] = []
        self._monotonic_ns, self._sleep = monotonic_ns, sleep
        self._zero: int | None = None
        self._stepped_ns = 0

    def start(self) -> None:
        """Take time zero now: called at the first step, after set-up, so no tick bursts."""
        self._zero = self._monotonic_ns()
        self._stepped_ns = 0

    def elapsed_ns(self) -> int:
        """Nanoseconds since ``start``."""
        if self._zero is None:
            raise RuntimeError("RealClock.start() was not called")
        return self._monotonic_ns() - self._zero

    def hold(self, ns: int) -> None:
        """Take ``ns`` of wall time out of the run's time (an operator prompt): no tick burst after it."""
        if self._zero is not None:
            self._zero += ns

    def sleep_until(self, t_ns: int) -> int:
        """Sleep until ``t_ns`` after start, step listeners by the real time passed; return lateness."""
        while (remaining := t_ns - self.elapsed_ns()) > 0:
            self._sleep(remaining / NS)
        now = self.elapsed_ns()
        if now > self._stepped_ns:
            dt = (now - self._stepped_ns) / NS
            for listener in self.listeners:
                listener(dt)
            self._stepped_ns = now
        return max(0, self.elapsed_ns() - t_ns)  # stepping the listeners can make us late too


Clock = SimulatedClock | RealClock
