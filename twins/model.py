"""The degradation-model contract: declared structure plus three array methods.

A model steps many units at once: every state is an array with one element per
unit, so one call advances a whole fleet (or a particle cloud) on NumPy or CuPy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy

from twinloop.errors import TwinError

Arrays = dict[str, Any]


@dataclass(frozen=True)
class Parameter:
    """A model parameter with its unit and the range it is physically valid in."""

    default: float
    unit: str
    low: float = -numpy.inf
    high: float = numpy.inf
    doc: str = ""


@dataclass(frozen=True)
class Signal:
    """A model input or output with its unit (matched to rig signals by name)."""

    unit: str
    default: float = 0.0


class DegradationModel(ABC):
    """Base class: subclasses declare structure and implement the array methods."""

    name: ClassVar[str]
    states: ClassVar[dict[str, str]]          # state name -> unit
    inputs: ClassVar[dict[str, Signal]]
    outputs: ClassVar[dict[str, Signal]]
    parameters: ClassVar[dict[str, Parameter]]
    #: Measurement noise (1 sigma, output units) the estimator assumes.
    output_noise: ClassVar[dict[str, float]] = {}
    #: Random-walk noise (1 sigma per sqrt(second), state units) for estimators.
    process_noise: ClassVar[dict[str, float]] = {}
    #: Uniform prior (low, high) of states no sensor reads, for estimators.
    prior: ClassVar[dict[str, tuple[float, float]]] = {}
    #: Physical range (low, high, inclusive) of states that have one (a wear rate is never negative);
    #: a state not listed is unbounded. Fleet files may not draw initial states outside it.
    state_limits: ClassVar[dict[str, tuple[float, float]]] = {}
    #: How far ahead remaining-useful-life prediction looks, in seconds.
    rul_horizon_s: ClassVar[float] = 3.15e8

    def __init__(self, **params: float) -> None:
        unknown = set(params) - set(self.parameters)
        if unknown:
            raise TwinError(f"{self.name}: unknown parameter(s) {sorted(unknown)}; "
                            f"known: {sorted(self.parameters)}")
        self.params: dict[str, float] = {}
        for key, spec in self.parameters.items():
            value = float(params.get(key, spec.default))
            if not spec.low <= value <= spec.high:
                raise TwinError(f"{self.name}: parameter {key}={value} {spec.unit} is outside "
                                f"[{spec.low}, {spec.high}]")
            self.params[key] = value

    @abstractmethod
    def initial_state(self, n: int, xp: Any = None, **overrides: Any) -> Arrays:
        """States of ``n`` fresh units; ``overrides`` set chosen states (scalar or array)."""
        ...

    @abstractmethod
    def next_state(self, x: Arrays, u: Mapping[str, Any], dt: float) -> Arrays:
        """Advance every unit by ``dt`` seconds under inputs ``u``."""
        ...

    @abstractmethod
    def output(self, x: Arrays, u: Mapping[str, Any]) -> Arrays:
        """What a sensor would read for every unit."""
        ...

    @abstractmethod
    def threshold_met(self, x: Arrays) -> Any:
        """Boolean array: which units have reached their failure criterion."""
        ...

    @abstractmethod
    def health(self, x: Arrays) -> Any:
        """Health in [0, 1] per unit: 1 new, 0 at the failure threshold."""
        ...

    def default_inputs(self) -> dict[str, float]:
        """Inputs at their declared defaults, for units with no live data."""
        return {k: s.default for k, s in self.inputs.items()}
