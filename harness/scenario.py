"""The scenario language (YAML), validated at load into immutable objects."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, field_validator

from twinloop.config import Strict, load_model, parse_duration, raise_at, read_text, to_ns

Duration = Annotated[float, Field(ge=0)]


def _duration(value: Any) -> float:
    return parse_duration(value)


class Dut(Strict):
    """The device under test: what the ledger keys verified runs by."""

    id: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=64)


class TwinSpec(Strict):
    """The device's twin: model, maturity level, parameters, estimator size.

    ``model`` twins get only the inputs (no sensor data); ``shadow`` twins
    assimilate live samples. Levels that command the device come later.
    """

    model: str
    level: Literal["model", "shadow"] = "shadow"
    params: dict[str, float] = Field(default_factory=dict)
    particles: int = Field(1000, ge=10, le=1_000_000)


class DeviceSpec(Strict):
    """A device the scenario talks to, by type (the rig says where it is)."""

    type: str
    twin: TwinSpec | None = None


class Write(Strict):
    """Write ``value`` (in ``unit``) to ``signal`` (``device.signal``)."""

    signal: str
    value: float
    unit: str | None = None
    note: str = ""


class SetStep(Strict):
    set: Write


class FaultStep(Strict):
    fault: Write


class WaitStep(Strict):
    wait: Duration

    _d = field_validator("wait", mode="before")(_duration)


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        return next(iter(value))
    if isinstance(value, Strict):
        return next(iter(type(value).model_fields))
    return None


Step = Annotated[
    Union[Annotated[SetStep, Tag("set")], Annotated[FaultStep, Tag("fault")],
          Annotated[WaitStep, Tag("wait")]],
    Discriminator(_step_kind),
]


class Sampling(Strict):
    """How often to sample, and which signals (default: every signal of every device)."""

    every: Annotated[float, Field(gt=0)] = 1.0
    signals: list[str] | None = None

    _d = field_validator("every", mode="before")(_duration)


class Limits(Strict):
    """Bounds that stop a typo from scheduling a run that never ends; raise them to opt in."""

    max_samples: int = Field(1_000_000, gt=0)
    max_duration: Annotated[float, Field(gt=0)] = 7 * 86400.0

    _d = field_validator("max_duration", mode="before")(_duration)


class Expectation(Strict):
    """A declared measurement over a sampled signal: limits and unit known before the run."""

    name: str
    signal: str
    unit: str
    max: float | None = None
    min: float | None = None
    marginal_max: float | None = None
    marginal_min: float | None = None


class Scenario(Strict):
    """A whole scenario file."""

    scenario: str
    description: str = ""
    dut: Dut
    devices: dict[str, DeviceSpec] = Field(min_length=1)
    sample: Sampling = Sampling()
    steps: list[Step] = Field(min_length=1)
    expect: list[Expectation] = Field(min_length=1)
    limits: Limits = Limits()

    def duration(self) -> float:
        """Total scheduled time in seconds."""
        return sum(s.wait for s in self.steps if isinstance(s, WaitStep))

    def sample_count(self) -> int:
        """Samples the run takes: one at t = 0 and one per whole period, counted in integer ns."""
        total_ns = sum(to_ns(s.wait) for s in self.steps if isinstance(s, WaitStep))
        return total_ns // to_ns(self.sample.every) + 1


@dataclass(frozen=True)
class ScenarioSource:
    """A loaded scenario with the exact text it came from and that text's SHA-256."""

    path: str
    text: str
    sha256: str
    scenario: Scenario


def _check_refs(sc: Scenario) -> list[tuple[tuple[Any, ...], str]]:
    """Cross-references pydantic cannot see: every signal names a declared device."""
    problems: list[tuple[tuple[Any, ...], str]] = []

    def ref(loc: tuple[Any, ...], signal: str) -> None:
        device, dot, name = signal.partition(".")
        if not dot or not name:
            problems.append((loc, f"'{signal}' is not 'device.signal'"))
        elif device not in sc.devices:
            problems.append((loc, f"unknown device '{device}'; declared: {', '.join(sc.devices)}"))

    for i, step in enumerate(sc.steps):
        if isinstance(step, (SetStep, FaultStep)):
            kind = "set" if isinstance(step, SetStep) else "fault"
            ref(("steps", i, kind, "signal"), getattr(step, kind).signal)
    for i, signal in enumerate(sc.sample.signals or []):
        ref(("sample", "signals", i), signal)
    for i, exp in enumerate(sc.expect):
        ref(("expect", i, "signal"), exp.signal)
        if exp.max is None and exp.min is None:
            problems.append((("expect", i), f"expectation '{exp.name}' needs 'max' or 'min'"))
    longest = max(range(len(sc.steps)), key=lambda i: getattr(sc.steps[i], "wait", -1.0))
    wait_loc = ("steps", longest, "wait")
    if (count := sc.sample_count()) > sc.limits.max_samples:
        problems.append((("sample", "every"), f"this scenario would take {count:,} samples "
                         f"({sc.duration():g} s every {sc.sample.every:g} s); the limit is "
                         f"{sc.limits.max_samples:,}; raise limits.max_samples to allow it"))
    if sc.duration() > sc.limits.max_duration:
        problems.append((wait_loc, f"this scenario lasts {sc.duration():g} s; the limit is "
                         f"{sc.limits.max_duration:g} s; raise limits.max_duration to allow it"))
    names = [e.name for e in sc.expect]
    for i, name in enumerate(names):
        if names.index(name) != i:
            problems.append((("expect", i, "name"), f"duplicate expectation name '{name}'"))
    return problems


def parse_scenario(path: str | Path, text: str) -> ScenarioSource:
    """Validate scenario ``text`` (from ``path``); errors name file, line and key."""
    scenario = load_model(Path(path), Scenario, text=text)
    for loc, message in _check_refs(scenario):
        raise_at(Path(path), text, loc, message)
    return ScenarioSource(str(path), text, hashlib.sha256(text.encode()).hexdigest(), scenario)


def load_scenario(path: str | Path) -> ScenarioSource:
    """Read and validate a scenario file."""
    return parse_scenario(path, read_text(Path(path)))
