"""An emulated centrifugal pump: the twin model's bearing-wear physics with a hidden wear rate."""

from __future__ import annotations

import math
from typing import Any

from twinloop.errors import TwinError
from twinloop.rigs.device import DeviceSignal, EmulatedDevice
from twinloop.rigs.emulators.modbus_server import ModbusEmulator
from twinloop.twins.models.pump_bearing import PumpBearingWear


class PumpDevice(EmulatedDevice):
    """A pump on a variable-speed drive; ``speed`` and ``load`` are writable setpoints.

    Its hidden truth (the bearing's own wear rate ``k``, its initial wear, sensor
    noise) is what the twin must discover from samples alone. Setpoints beyond
    the drive's range are clamped to it, as a drive does. Physics advances only
    when ``step`` is called, so a simulated clock can run it faster than real time.

    ``k`` is the bearing's true wear rate (1/s); left out, it is drawn from the
    seeded RNG within about 20 % of the model's nominal ``k``. ``alarm`` reads 1
    while vibration is at or above ``alarm_level`` (4.5 mm/s, inside ISO 10816-1
    class II zone C). Other keywords are the twin model's parameters.

    Bearing temperature is a first-order lag towards
    ``ambient + temp_rise * (speed / nominal_speed) * (1 + wear)``: friction heat
    grows with speed and with the wear.
    """

    device_type = "pump"
    signals = {
        "speed": DeviceSignal("rpm", writable=True, low=0.0, high=3600.0),
        "load": DeviceSignal("%", writable=True, low=0.0, high=150.0),
        "vibration": DeviceSignal("mm/s", low=0.0, high=100.0),
        "bearing_temperature": DeviceSignal("degC", low=-50.0, high=250.0),
        "alarm": DeviceSignal("1", low=0.0, high=1.0),
    }
    safe_state = {"speed": 0.0}
    #: The register map of the pump controller's Modbus interface (rig profile form).
    modbus_map: dict[str, dict[str, Any]] = {
        "speed": {"register": 0, "type": "uint16", "unit": "rpm", "writable": True},
        "load": {"register": 1, "type": "uint16", "scale": 0.1, "unit": "%", "writable": True},
        "vibration": {"register": 2, "type": "uint16", "scale": 0.01, "unit": "mm/s"},
        "bearing_temperature": {"register": 3, "type": "int16", "scale": 0.01, "unit": "degC"},
        "alarm": {"register": 4, "type": "uint16", "unit": "1"},
    }

    def __init__(self, *, k: float | None = None, initial_wear: float = 0.0, sensor_noise: float = 0.05,
                 alarm_level: float = 4.5, ambient: float = 25.0, temp_rise: float = 30.0,
                 temp_tau: float = 1800.0, seed: int = 0, **model_params: float) -> None:
        try:
            model = PumpBearingWear(**model_params)
        except TwinError as err:
            raise ValueError(str(err)) from None
        if not (isinstance(seed, (int, float)) and float(seed).is_integer() and seed >= 0):
            raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
        if k is not None and not (math.isfinite(k) and k > 0):
            raise ValueError(f"k (the bearing's true wear rate) must be a finite number > 0 1/s, got {k}")
        if not 0.0 <= initial_wear < model.wear_limit:
            raise ValueError(f"initial_wear must be in [0, {model.wear_limit:g}) (0 new, "
                             f"{model.wear_limit:g} at the vibration limit), got {initial_wear}")
        if not (math.isfinite(sensor_noise) and sensor_noise >= 0):
            raise ValueError(f"sensor_noise must be a finite number >= 0 mm/s, got {sensor_noise}")
        if not 0.0 < alarm_level < self.signals["vibration"].high:
            raise ValueError(f"alarm_level must be in (0, {self.signals['vibration'].high:g}) mm/s, "
                             f"got {alarm_level}")
        if not -50.0 <= ambient <= 100.0:
            raise ValueError(f"ambient must be in [-50, 100] degC, got {ambient}")
        if not 0.0 <= temp_rise <= 150.0:
            raise ValueError(f"temp_rise must be in [0, 150] K, got {temp_rise}")
        if not temp_tau > 0:
            raise ValueError(f"temp_tau must be > 0 s, got {temp_tau}")
        super().__init__({"speed": 0.0, "load": 0.0, "vibration": 0.0, "bearing_temperature": ambient,
                          "alarm": 0.0}, int(seed))
        self.model = model
        if k is None:  # this bearing's own rate: near the nominal, as bearings of one batch scatter
            k = model.params["k"] * float(self.rng.lognormal(0.0, 0.2))
        self.state = model.initial_state(1, wear=initial_wear, k=k)
        self.sensor_noise, self.alarm_level = sensor_noise, alarm_level
        self.ambient, self.temp_rise, self.temp_tau = ambient, temp_rise, temp_tau

    def write(self, name: str, value: float) -> None:
        """Set a setpoint, clamped to the drive's range (read-only names raise ValueError)."""
        sig = self.signals[name]
        super().write(name, min(max(float(value), sig.low), sig.high))

    def inputs(self) -> dict[str, float]:
        """The model inputs under the present setpoints."""
        return {"speed": self.values["speed"], "load": self.values["load"]}

    def step(self, dt: float) -> None:
        with self.lock:
            u = self.inputs()
            self.state = self.model.next_state(self.state, u, dt)
            vibration = float(self.model.output(self.state, u)["vibration"][0])
            if vibration > 0 and self.sensor_noise:
                vibration = max(vibration + float(self.rng.normal(0.0, self.sensor_noise)), 0.0)
            t_ss = self.ambient + self.temp_rise * u["speed"] / self.model.params["nominal_speed"] * (1 + self.wear)
            t = self.values["bearing_temperature"]
            self.values["bearing_temperature"] = t_ss + (t - t_ss) * math.exp(-dt / self.temp_tau)
            self.values["vibration"] = vibration
            self.values["alarm"] = 1.0 if vibration >= self.alarm_level else 0.0

    @property
    def wear(self) -> float:
        """The hidden true wear, for tests that check the twin's estimate."""
        return float(self.state["wear"][0])

    @property
    def k(self) -> float:
        """The hidden true wear rate coefficient (1/s)."""
        return float(self.state["k"][0])


class PumpEmulator(ModbusEmulator):
    """The pump served over Modbus TCP on 127.0.0.1 (the form tests and fixtures use)."""

    device_class = PumpDevice

    @property
    def wear(self) -> float:
        """The hidden true wear."""
        return self.device.wear
