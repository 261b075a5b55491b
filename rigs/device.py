"""Protocol-free emulated devices: physics, hidden truth and sensor faults, served by any protocol server.

A device holds named values in engineering units and advances them with
``step(dt)``; a protocol server (Modbus, SCPI, ...) only maps requests onto
``read`` and ``write``. So one device is served over any protocol without a
class per pair, and an emulated run behaves like a degrading device whose
ground truth the twin must discover.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy


@dataclass(frozen=True)
class DeviceSignal:
    """One value a device exposes: its unit, whether it can be written, and its physical range."""

    unit: str
    writable: bool = False
    low: float = -1e6
    high: float = 1e6


class EmulatedDevice(ABC):
    """Named values behind a lock; ``step`` advances the physics; sensors can be faulted.

    Sensor faults: ``stuck`` (a signal keeps reporting one value) and ``noise``
    (extra Gaussian noise with the given standard deviation), so scenarios can
    test a twin against a broken sensor while the physics carries on.
    """

    device_type: ClassVar[str]
    signals: ClassVar[dict[str, DeviceSignal]]
    #: Applied on every way out of a run unless the rig profile declares another.
    safe_state: ClassVar[dict[str, float]] = {}
    #: Methods a client may call (name -> argument names); each is a method of the device taking floats.
    methods: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, values: dict[str, float], seed: int = 0) -> None:
        unknown = set(values) ^ set(self.signals)
        if unknown:
            raise ValueError(f"{type(self).__name__}: values and signals differ in {sorted(unknown)}")
        self.lock = threading.RLock()
        self.values = dict(values)
        self.rng = numpy.random.default_rng(seed)
        self.stuck: dict[str, float] = {}
        self.extra_noise: dict[str, float] = {}

    def read(self, name: str) -> float:
        """The value a sensor reports now (stuck or noisy if faulted)."""
        with self.lock:
            value = self.stuck.get(name, self.values[name])
            sigma = self.extra_noise.get(name)
            return value + float(self.rng.normal(0.0, sigma)) if sigma else value

    def write(self, name: str, value: float) -> None:
        """Set a writable value (a setpoint); read-only names raise ValueError."""
        if not self.signals[name].writable:
            raise ValueError(f"'{name}' is read-only")
        with self.lock:
            self.values[name] = float(value)

    def fault(self, kind: str, signal: str | None = None, value: float | None = None) -> None:
        """Inject a sensor fault: ``stuck`` at ``value`` (default: the present value) or ``noise`` of ``value``."""
        if signal not in self.signals:
            raise ValueError(f"fault '{kind}' needs a signal of this device: {', '.join(self.signals)}")
        with self.lock:
            if kind == "stuck":
                self.stuck[signal] = self.values[signal] if value is None else float(value)
            elif kind == "noise":
                self.extra_noise[signal] = 1.0 if value is None else float(value)
            else:
                raise ValueError(f"unknown sensor fault '{kind}'")

    def clear(self, signal: str | None = None) -> None:
        """End sensor faults on ``signal`` (all signals if None)."""
        with self.lock:
            for faults in (self.stuck, self.extra_noise):
                for name in [n for n in faults if signal is None or n == signal]:
                    del faults[name]

    def power_off(self) -> None:
        """The supply is cut: writable setpoints fall to their safe values (override for more)."""
        with self.lock:
            for name, value in self.safe_state.items():
                self.values[name] = value

    @abstractmethod
    def step(self, dt: float) -> None:
        """Advance the physics by ``dt`` seconds under the present setpoints."""

    @classmethod
    def check_params(cls, **params: Any) -> None:
        """Build one (starting nothing) so bad parameters fail at plan with the device's own message."""
        cls(**params)
