"""An emulated power module: the twin model's thermal-degradation physics with hidden truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twinloop.rigs.device import DeviceSignal, EmulatedDevice
from twinloop.rigs.emulators.modbus_server import ModbusEmulator
from twinloop.twins.models.power_module import PowerModuleThermal


class PowerModuleDevice(EmulatedDevice):
    """A module on a fan-cooled heatsink; ``power`` and ``fan`` are writable.

    Its hidden truth (initial damage, sensor noise, its own solder creep rate)
    is what the twin must discover from samples alone. Physics advances only
    when ``step`` is called, so a simulated clock can run it faster than real time.

    Parameters in ``varied`` not given as keywords are drawn from the model's
    declared ``spread`` with the seeded RNG, so no two seeds share the twin's
    nominal values. ``r_ca`` is held at its keyword (nominal by default): the
    shipped end-of-life scenario judges failure by an absolute junction
    temperature, which the heatsink path would move; give ``r_ca`` to emulate
    another heatsink.
    """

    #: Model parameters drawn per unit (from the model's ``spread``) unless given.
    varied: tuple[str, ...] = ("k_ref",)

    device_type = "power_module"
    signals = {
        "temperature": DeviceSignal("degC", low=-50.0, high=300.0),
        "ambient": DeviceSignal("degC", low=-50.0, high=150.0),
        "power": DeviceSignal("W", writable=True, low=0.0, high=6000.0),
        "fan": DeviceSignal("1", writable=True, low=0.0, high=1.0),
    }
    safe_state = {"power": 0.0, "fan": 1.0}
    methods = {"set_operating_point": ("power", "fan")}
    #: The register map of the module's Modbus interface (rig profile form).
    modbus_map: dict[str, dict[str, Any]] = {
        "temperature": {"register": 0, "type": "int16", "scale": 0.01, "unit": "degC"},
        "ambient": {"register": 1, "type": "int16", "scale": 0.01, "unit": "degC"},
        "power": {"register": 2, "type": "uint16", "scale": 0.1, "unit": "W", "writable": True},
        "fan": {"register": 3, "type": "uint16", "unit": "1", "writable": True},
    }
    #: Its CAN interface: a DBC file and the DBC signal that reports (and commands) each value.
    can_map: dict[str, Any] = {
        "dbc": Path(__file__).with_name("power_module.dbc"),
        "signals": {
            "temperature": {"message": "PM_Status", "signal": "Temperature", "unit": "degC"},
            "ambient": {"message": "PM_Status", "signal": "Ambient", "unit": "degC"},
            "power": {"message": "PM_Status", "signal": "Power", "set_message": "PM_Command",
                      "set_signal": "PowerSetpoint", "unit": "W", "writable": True},
            "fan": {"message": "PM_Status", "signal": "Fan", "set_message": "PM_Command",
                    "set_signal": "FanCommand", "unit": "1", "writable": True},
        },
    }
    #: Its SCPI command set (rig profile form), as a bench instrument would document it.
    scpi_map: dict[str, dict[str, Any]] = {
        "temperature": {"query": "MEAS:TEMP?", "unit": "degC"},
        "ambient": {"query": "MEAS:TEMP:AMB?", "unit": "degC"},
        "power": {"query": "SOUR:POW?", "set": "SOUR:POW {value}", "unit": "W", "writable": True},
        "fan": {"query": "OUTP:FAN?", "set": "OUTP:FAN {value}", "unit": "1", "writable": True},
    }

    def __init__(self, *, initial_damage: float = 0.05, ambient: float = 25.0, sensor_noise: float = 0.05,
                 seed: int = 0, **model_params: float) -> None:
        if not 0.0 <= initial_damage < 5.0:
            raise ValueError(f"initial_damage must be in [0, 5), got {initial_damage}")
        if sensor_noise < 0:
            raise ValueError(f"sensor_noise cannot be negative, got {sensor_noise}")
        super().__init__({"temperature": ambient, "ambient": ambient, "power": 0.0, "fan": 1.0}, seed)
        self.model = PowerModuleThermal(**model_params)
        p, spread = self.model.params, self.model.spread
        #: The unit's own parameter values (ground truth the twin never sees).
        self.hidden = {k: p[k] if k in model_params or k not in self.varied
                       else p[k] * float(self.rng.lognormal(0.0, spread[k])) for k in spread}
        self.state = self.model.initial_state(1, temperature=ambient, damage=initial_damage, **self.hidden)
        self.sensor_noise = sensor_noise

    def step(self, dt: float) -> None:
        with self.lock:
            u = {"power": self.values["power"], "ambient": self.values["ambient"],
                 "fan": 1.0 if self.values["fan"] >= 0.5 else 0.0}
            self.state = self.model.next_state(self.state, u, dt)
            noise = self.rng.normal(0.0, self.sensor_noise) if self.sensor_noise else 0.0
            self.values["temperature"] = float(self.state["temperature"][0]) + noise

    def set_operating_point(self, power: float, fan: float) -> None:
        """Set load and fan together (one command, as a controller's method call does); out of range raises."""
        for name, value in (("power", power), ("fan", fan)):
            sig = self.signals[name]
            if not sig.low <= value <= sig.high:
                raise ValueError(f"{name} = {value:g} {sig.unit} is outside [{sig.low:g}, {sig.high:g}]")
        with self.lock:
            self.values["power"], self.values["fan"] = float(power), float(fan)

    def power_off(self) -> None:
        """The supply is cut: no more load (the heatsink and fan physics carry on)."""
        with self.lock:
            self.values["power"] = 0.0

    @property
    def damage(self) -> float:
        """The hidden true damage, for tests that check the twin's estimate."""
        return float(self.state["damage"][0])


class PowerModuleEmulator(ModbusEmulator):
    """The power module served over Modbus TCP on 127.0.0.1 (the form tests and fixtures use)."""

    device_class = PowerModuleDevice

    @property
    def damage(self) -> float:
        """The hidden true damage."""
        return self.device.damage
