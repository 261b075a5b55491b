"""An emulated power module: twins' thermal-degradation physics behind Modbus registers."""

from __future__ import annotations

import threading
from typing import Any

import numpy

from twinloop.rigs.emulators.modbus_server import ModbusDeviceServer
from twinloop.rigs.modbus import ModbusSignal
from twinloop.twins.models.power_module import PowerModuleThermal

REGISTERS: dict[str, ModbusSignal] = {
    "temperature": ModbusSignal(register=0, type="int16", scale=0.01, unit="degC"),
    "ambient": ModbusSignal(register=1, type="int16", scale=0.01, unit="degC"),
    "power": ModbusSignal(register=2, type="uint16", scale=0.1, unit="W", writable=True),
    "fan": ModbusSignal(register=3, type="uint16", unit="1", writable=True),
}


class PowerModuleEmulator:
    """A module on a fan-cooled heatsink; ``power`` and ``fan`` are writable.

    Its hidden truth (initial damage, sensor noise) is what the twin must
    discover from samples alone. Physics advances only when ``step`` is called,
    so a simulated clock can run it faster than real time.
    """

    device_type = "power_module"
    #: Address scheme of the transport that reaches this emulator.
    scheme = "modbus+tcp"
    #: The register map, in the form rig profiles use.
    signal_map: dict[str, dict[str, Any]] = {name: spec.model_dump(by_alias=True)
                                             for name, spec in REGISTERS.items()}
    #: Applied on every way out of a run unless the rig profile declares another.
    safe_state: dict[str, float] = {"power": 0.0, "fan": 1.0}

    def __init__(self, *, initial_damage: float = 0.05, ambient: float = 25.0,
                 sensor_noise: float = 0.05, seed: int = 0, host: str = "127.0.0.1",
                 port: int = 0, unit: int = 1, **model_params: float) -> None:
        self.model = PowerModuleThermal(**model_params)
        self.state = self.model.initial_state(1, temperature=ambient, damage=initial_damage)
        self.sensor_noise = sensor_noise
        self.rng = numpy.random.default_rng(seed)
        self.lock = threading.Lock()
        self.values: dict[str, float] = {"temperature": ambient, "ambient": ambient,
                                         "power": 0.0, "fan": 1.0}
        self.server = ModbusDeviceServer(REGISTERS, self.values, self.lock, host=host,
                                         port=port, unit=unit)

    @property
    def address(self) -> str:
        """Transport URL of the running emulator."""
        return self.server.address

    def start(self) -> "PowerModuleEmulator":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def power_off(self) -> None:
        """The supply is cut: no more load (the heatsink and fan physics carry on)."""
        with self.lock:
            self.values["power"] = 0.0

    def step(self, dt: float) -> None:
        """Advance the physics by ``dt`` seconds under the inputs now in the registers."""
        with self.lock:
            u = {"power": self.values["power"], "ambient": self.values["ambient"],
                 "fan": 1.0 if self.values["fan"] >= 0.5 else 0.0}
            self.state = self.model.next_state(self.state, u, dt)
            noise = self.rng.normal(0.0, self.sensor_noise) if self.sensor_noise else 0.0
            self.values["temperature"] = float(self.state["temperature"][0]) + noise

    @property
    def damage(self) -> float:
        """The hidden true damage, for tests that check the twin's estimate."""
        return float(self.state["damage"][0])

    def __enter__(self) -> "PowerModuleEmulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
