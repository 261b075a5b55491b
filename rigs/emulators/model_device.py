"""Emulated devices for any registered twin model: inputs as setpoints, outputs as sensors, hidden truth per unit.

``ModelDevice`` turns a ``DegradationModel`` into an ``EmulatedDevice``, so
every model can be run on an emulated rig (and served over Modbus, OPC UA or
SCPI, which serve any device generically) against a twin that does not know
the unit's own parameters. One subclass per model names it and gives the
physical ranges of its signals and how its per-unit quantities scatter.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import numpy

from twinloop.errors import TwinError
from twinloop.rigs.device import DeviceSignal, EmulatedDevice
from twinloop.twins.model import Arrays, DegradationModel
from twinloop.twins.registry import models

#: Range of a signal whose physical range is not declared (the ``DeviceSignal`` default).
WIDE = (-1e6, 1e6)


class ModelDevice(EmulatedDevice):
    """A unit that degrades by a registered model's physics; the twin must discover its hidden truth.

    Signals: the model's inputs are writable setpoints (starting at the input's
    default), its outputs read-only sensors. Setpoints beyond their range are
    clamped to it, as PumpDevice's drive does; a non-finite setpoint raises
    ValueError. Sensor readings saturate at their range.

    Hidden truth: the unit's own per-unit quantities (the ``spread`` keys, which
    are states in the model's ``prior`` that no step changes, e.g. ``k``,
    ``life_factor``, ``c``) are drawn once at construction with the seeded RNG
    (``seed``): lognormal around the model's nominal value with the class's
    relative sigma (of ln), clipped into the model's prior band, so no unit
    sits at the twin's nominal. A keyword of the same name sets it instead.

    Keywords: ``seed`` (whole number >= 0), ``sensor_noise`` (1 sigma, output
    units: None gives the model's ``output_noise``; a number sets it for a
    one-output model, 0 turns noise off for any; a mapping sets it per output),
    any model state (the initial value, default the model's ``initial_state``,
    a new unit; states in the prior must lie in its band, so the twin can find
    them), and any other model parameter. Anything else raises ValueError
    naming the key (plan-time ``check_params`` relies on it).

    ``step(dt)`` advances the true state with the model's ``next_state``
    without process noise (the model's ``process_noise`` is a random walk an
    estimator assumes, not physics: it would make per-unit constants drift) and
    publishes each output plus Gaussian sensor noise. Every model's step is
    exact for held inputs or sub-steps itself (battery_circuit's Euler steps
    of at most ``max_step``), so any ``dt`` is stable. Past the failure
    threshold the physics carries on; ``failed``, ``truth`` and ``health``
    report the true condition for tests and benchmarks.
    """

    #: The registered twin model this device emulates (subclasses set it).
    model_name: ClassVar[str]
    model_class: ClassVar[type[DegradationModel]]
    #: Physical (low, high) of each input and output, in the model's units; others get ``WIDE``.
    ranges: ClassVar[dict[str, tuple[float, float]]] = {}
    #: Per-unit quantities drawn per unit: state name -> sigma of ln around the nominal.
    spread: ClassVar[dict[str, float]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("model_name")
        if name is None:
            return
        model = models.get(name)
        clash = set(model.inputs) & set(model.outputs)
        if clash:
            raise TypeError(f"{cls.__name__}: {sorted(clash)} are both inputs and outputs of '{name}'")
        cls.model_class = model
        cls.device_type = cls.__dict__.get("device_type", name)
        signals = {}
        for key, sig in model.inputs.items():
            low, high = cls.ranges.get(key, WIDE)
            signals[key] = DeviceSignal(sig.unit, writable=True, low=low, high=high)
        for key, sig in model.outputs.items():
            low, high = cls.ranges.get(key, WIDE)
            signals[key] = DeviceSignal(sig.unit, low=low, high=high)
        cls.signals = signals
        unknown = set(cls.spread) - set(model.states)
        if unknown:
            raise TypeError(f"{cls.__name__}: spread names {sorted(unknown)}, not states of '{name}'")

    def __init__(self, *, seed: int = 0, sensor_noise: float | Mapping[str, float] | None = None,
                 **params: float) -> None:
        cls = type(self)
        if not (isinstance(seed, (int, float)) and float(seed).is_integer() and seed >= 0):
            raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
        states = {k: params.pop(k) for k in list(params) if k in cls.model_class.states}
        try:
            self.model = cls.model_class(**params)
        except TwinError as err:
            raise ValueError(str(err)) from None
        model = self.model
        self.sensor_noise = self._noise(sensor_noise)
        prior: Mapping[str, tuple[float, float]] = model.prior  # the instance's (scaled) band
        for key, value in states.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"{key} must be a finite number ({model.states[key]}), got {value!r}")
            if key in prior and not prior[key][0] <= value <= prior[key][1]:
                low, high = prior[key]
                raise ValueError(f"{key}={value:g} {model.states[key]} is outside [{low:g}, {high:g}], "
                                 f"the band the '{model.name}' twin searches")
        inputs = {k: min(max(float(s.default), self.signals[k].low), self.signals[k].high)
                  for k, s in model.inputs.items()}
        super().__init__({**inputs, **{k: 0.0 for k in model.outputs}}, int(seed))
        #: The unit's own per-unit values, drawn here (ground truth the twin never sees).
        self.hidden = {k: float(v) for k, v in self.draw_hidden().items() if k not in states}
        self.state: Arrays = model.initial_state(1, **{**self.hidden, **states})
        self._publish(self.setpoints())

    def _noise(self, sensor_noise: float | Mapping[str, float] | None) -> dict[str, float]:
        """Sensor noise per output from the ``sensor_noise`` keyword (see the class docstring)."""
        outputs = self.model.outputs
        noise = {k: float(self.model.output_noise.get(k, 0.0)) for k in outputs}
        if sensor_noise is None:
            return noise
        if isinstance(sensor_noise, Mapping):
            given = dict(sensor_noise)
            unknown = set(given) - set(outputs)
            if unknown:
                raise ValueError(f"sensor_noise names {sorted(unknown)}, not outputs of '{self.model.name}' "
                                 f"({', '.join(outputs)})")
        elif len(outputs) == 1 or sensor_noise == 0:
            given = {k: sensor_noise for k in outputs}
        else:
            raise ValueError(f"sensor_noise for '{self.model.name}' needs one value per output "
                             f"({', '.join(outputs)}) as a mapping, or 0 for none; got {sensor_noise!r}")
        for key, value in given.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"sensor_noise of {key} must be a finite number >= 0 "
                                 f"{outputs[key].unit}, got {value!r}")
            noise[key] = float(value)
        return noise

    def draw_hidden(self) -> dict[str, float]:
        """This unit's per-unit quantities: lognormal around the nominal (``spread``), clipped into the prior band."""
        nominal = self.model.initial_state(1)
        prior = self.model.prior
        out = {}
        for key, sigma in self.spread.items():
            value = float(nominal[key][0]) * float(self.rng.lognormal(0.0, sigma))
            low, high = prior.get(key, (-math.inf, math.inf))
            out[key] = min(max(value, low), high)
        return out

    def write(self, name: str, value: float) -> None:
        """Set a setpoint, clamped to its range (read-only names and non-finite values raise ValueError)."""
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"'{name}' cannot be set to {value}")
        sig = self.signals[name]
        super().write(name, min(max(value, sig.low), sig.high))

    def setpoints(self) -> dict[str, float]:
        """The model inputs under the present setpoints."""
        return {k: self.values[k] for k in self.model.inputs}

    def _publish(self, u: Mapping[str, float]) -> None:
        """Set each sensor to the model's output plus its noise, saturated at the sensor's range."""
        out = self.model.output(self.state, u)
        for key in self.model.outputs:
            value = float(numpy.asarray(out[key]).reshape(-1)[0])
            sigma = self.sensor_noise[key]
            if sigma:
                value += float(self.rng.normal(0.0, sigma))
            sig = self.signals[key]
            self.values[key] = min(max(value, sig.low), sig.high)

    def step(self, dt: float) -> None:
        if not (math.isfinite(dt) and dt >= 0):
            raise ValueError(f"dt must be a finite number >= 0 s, got {dt}")
        with self.lock:
            u = self.setpoints()
            self.state = self.model.next_state(self.state, u, float(dt))
            self._publish(u)

    @property
    def truth(self) -> dict[str, float]:
        """The true state of the unit (every model state), for tests that check the twin's estimate."""
        with self.lock:
            return {k: float(numpy.asarray(v).reshape(-1)[0]) for k, v in self.state.items()}

    @property
    def health(self) -> float:
        """The true health in [0, 1] (1 new, 0 at the failure threshold)."""
        with self.lock:
            return float(numpy.asarray(self.model.health(self.state)).reshape(-1)[0])

    @property
    def failed(self) -> bool:
        """True once the unit has reached the model's failure threshold."""
        with self.lock:
            return bool(numpy.asarray(self.model.threshold_met(self.state)).reshape(-1)[0])


class ElectrolyticCapacitorDevice(ModelDevice):
    """An aluminium electrolytic capacitor on an ageing bench: ambient and ripple set, ESR and C read.

    Hidden: ``life_factor``, lognormal (sigma of ln 0.2) around 1, clipped to
    the prior [0.5, 2]. Default start: new (``loss`` 0).
    """

    model_name = "electrolytic_capacitor"
    ranges = {"ambient": (-55.0, 150.0), "ripple": (0.0, 100.0),
              "esr": (0.0, 1e4), "capacitance": (0.0, 1e7)}
    spread = {"life_factor": 0.2}
    safe_state = {"ripple": 0.0}


class CrackGrowthDevice(ModelDevice):
    """A cracked specimen on a fatigue rig: stress range and frequency set, a crack gauge read.

    Hidden: ``c``, the specimen's own Paris coefficient, lognormal (sigma of
    ln 0.5: specimens scatter by a factor ~2-3) around the nominal ``c``,
    clipped to the prior [0.3, 3] x nominal. ``c=`` sets the unit's true value
    (the twin's nominal stays the model default). Default start: ``a0``.
    """

    model_name = "paris_crack_growth"
    ranges = {"stress_range": (0.0, 2000.0), "frequency": (0.0, 1000.0), "crack_length": (0.0, 1e4)}
    spread = {"c": 0.5}
    safe_state = {"stress_range": 0.0}


class SolderJointDevice(ModelDevice):
    """A solder joint in a thermal-cycling chamber: swing, rate and peak set, its R_th rise read.

    Hidden: ``life_factor``, lognormal (sigma of ln 0.25, a Weibull slope of
    ~5) around 1, clipped to the prior [0.5, 2]. Default start: new (``damage`` 0).
    """

    model_name = "solder_joint_fatigue"
    ranges = {"temperature_swing": (0.0, 300.0), "cycle_rate": (0.0, 1e4), "max_temperature": (-65.0, 300.0),
              "rth_rise": (-100.0, 1e5)}
    spread = {"life_factor": 0.25}
    safe_state = {"cycle_rate": 0.0}


class ElectromigrationDevice(ModelDevice):
    """A metal test line under current stress: current density and temperature set, resistance read.

    Hidden: ``life_factor``, lognormal (sigma of ln 0.3, in the 0.2-0.5 of EM
    lives) around 1, clipped to the prior [0.4, 2.5]. Default start: new (``damage`` 0).
    """

    model_name = "electromigration"
    ranges = {"current_density": (-100.0, 100.0), "temperature": (-55.0, 400.0), "resistance": (0.0, 1e10)}
    spread = {"life_factor": 0.3}
    safe_state = {"current_density": 0.0}


class LiIonCellDevice(ModelDevice):
    """A Li-ion cell on an ageing cycler: temperature, current and mean SOC set, capacity read.

    Hidden: ``k``, the cell's own fade-rate factor, lognormal (sigma of ln
    0.15) around 1, clipped to the prior [0.5, 2]. Default start: new (no loss).
    """

    model_name = "li_ion_capacity_fade"
    ranges = {"temperature": (-40.0, 80.0), "current": (-1000.0, 1000.0), "soc": (0.0, 1.0),
              "capacity": (0.0, 1e5)}
    spread = {"k": 0.15}
    safe_state = {"current": 0.0}


class BatteryCircuitDevice(ModelDevice):
    """A Li-ion cell on a discharge load: current set, cell temperature (K) and voltage read.

    The model's prior holds no per-unit parameter (only charge and cell
    temperature), so the hidden truth is the charge the cell arrives with, as
    after an unknown shelf time: state of charge uniform in [0.80, 0.98]
    (``qb=`` sets the charge, C). Default start otherwise: at rest at ambient.
    The model sub-steps long steps itself (Euler steps of at most
    ``max_step``, 1 s), so any ``dt`` is stable; a step costs one Euler step
    per second of it.
    """

    model_name = "battery_circuit"
    ranges = {"i": (-50.0, 50.0), "t": (0.0, 500.0), "v": (-10.0, 10.0)}
    safe_state = {"i": 0.0}
    #: Range of the state of charge a cell arrives with (uniform).
    soc_range: ClassVar[tuple[float, float]] = (0.80, 0.98)

    def draw_hidden(self) -> dict[str, float]:
        p = self.model.params
        soc = float(self.rng.uniform(*self.soc_range))
        return {"qb": p["qMax"] - p["CMax"] * (1.0 - soc)}
