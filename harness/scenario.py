"""The scenario language (YAML), validated at load into immutable objects.

Quantities are written with their units (``125 degC``, ``398 K``, ``250 ms``)
and checked by pint here; they are converted to each signal's unit on the rig
when the run is planned. ``twinloop schema`` prints this module's JSON Schema
for editors.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, Union

import yaml
from pydantic import (AfterValidator, BeforeValidator, Discriminator, Field, StrictBool, StrictFloat, StrictInt, Tag,
                      model_validator)

from twinloop import units
from twinloop.config import Strict, raise_in, to_ns, validate_node
from twinloop.harness import expand

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def _duration(value: Any) -> float:
    return units.seconds(value)


def _quantity(value: Any) -> Any:
    if isinstance(value, str):
        units.quantity(value, default_unit="1")  # parse now, so a typo is found at load
    return value


#: Seconds, written with a unit: ``30 s``, ``250 ms``, ``5 min``, ``2 h``.
Duration = Annotated[float, BeforeValidator(_duration),
                     Field(json_schema_extra={"type": "string", "examples": ["30 s", "250 ms", "5 min"]})]
#: A number in the signal's unit, or a quantity with its own unit (``125 degC``, ``398 K``).
Value = Annotated[Union[float, str], AfterValidator(_quantity),
                  Field(json_schema_extra={"examples": [30, "125 degC", "0.5 bar"]})]


def _anchor(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return units.seconds(value)  # raises: a bare number needs a unit
    if isinstance(value, str):
        try:
            return units.seconds(value)
        except ValueError:
            if not _NAME.match(value):
                raise ValueError(f"expected a time such as '5 min' or the name of a mark step, "
                                 f"got {value!r}") from None
    return value


#: A moment of the run: a time from the start (``5 min``) or the name of a ``mark`` step.
Anchor = Annotated[Union[float, str], BeforeValidator(_anchor)]


class Dut(Strict):
    """The device under test: what the ledger keys verified runs by."""

    id: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=64)


class WriteLimitSpec(Strict):
    """A setpoint the twin may write, and the range it must stay in (a bare number is in the signal's unit)."""

    min: Value
    max: Value


class KeepSpec(Strict):
    """``twin`` level: hold the twin's prediction of ``output`` (a model output or state) ``horizon`` ahead
    below or above a limit by narrowing the range of ``write``; judged on the ``quantile`` of its cloud."""

    output: str
    below: Value | None = None
    above: Value | None = None
    write: str
    horizon: Duration = 600.0
    quantile: float = Field(0.95, gt=0.5, lt=1.0)

    @model_validator(mode="after")
    def _one_side(self) -> "KeepSpec":
        if (self.below is None) == (self.above is None):
            raise ValueError("give one of 'below' or 'above'")
        return self


class RulTriggerSpec(Strict):
    """The RUL percentile (``p05``, ``p50``, ``p95``) falling below ``below``."""

    rul: Literal["p05", "p50", "p95"] = "p05"
    below: Duration


class DecisionSpec(Strict):
    """``intelligent`` level: once ``when`` holds, lower setpoints (``derate``) and/or ask for ``maintenance``."""

    when: RulTriggerSpec
    derate: dict[str, Value] = Field(default_factory=dict)
    maintenance: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _acts(self) -> "DecisionSpec":
        if not self.derate and self.maintenance is None:
            raise ValueError("a decision needs 'derate' and/or 'maintenance'")
        return self


class AnomalySpec(Strict):
    """Residual test on the twin's normalised innovations at a per-sample false-alarm rate."""

    false_alarm_rate: float = Field(1e-3, gt=0.0, le=0.05)
    method: Literal["cusum", "chi2", "both"] = "both"
    window: int = Field(20, ge=1, le=10_000)
    shift: float = Field(1.0, gt=0.0, le=3.0)
    warmup: int = Field(60, ge=0)


class TwinSpec(Strict):
    """The device's twin: model, maturity level, parameters, estimator.

    ``model`` twins get only the inputs (no sensor data); ``shadow`` twins
    assimilate live samples; ``twin`` twins may also write setpoints back
    (``writes``, within the declared ranges) to ``keep`` a prediction within
    a limit; ``intelligent`` twins also ``decide`` on their remaining useful
    life (derate, maintenance request). ``rul_every`` is how often (run time)
    the twin predicts remaining useful life into its history; ``decide_every``
    how often it decides (default: every sample). ``array`` runs the filter
    on NumPy, CuPy, or ``auto`` (CuPy where the twin's node has a GPU).
    """

    model: str
    level: Literal["model", "shadow", "twin", "intelligent"] = "shadow"
    params: dict[str, float] = Field(default_factory=dict)
    filter: Literal["particle", "enkf"] = "particle"
    array: Literal["numpy", "cupy", "auto"] = "numpy"
    particles: int = Field(1000, ge=10, le=1_000_000)
    rul_every: Duration | None = None
    anomaly: AnomalySpec | None = None
    writes: dict[str, WriteLimitSpec] = Field(default_factory=dict)
    keep: list[KeepSpec] = Field(default_factory=list)
    decide: list[DecisionSpec] = Field(default_factory=list)
    decide_every: Duration | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _level_fits(self) -> "TwinSpec":
        acts = self.level in ("twin", "intelligent")
        if not acts and (self.writes or self.keep or self.decide):
            raise ValueError(f"'writes', 'keep' and 'decide' need level 'twin' or 'intelligent' "
                             f"(this twin is '{self.level}')")
        if self.level == "twin" and self.decide:
            raise ValueError("'decide' needs level 'intelligent' (a 'twin' only keeps predictions in limits)")
        if self.level == "twin" and not self.keep:
            raise ValueError("a 'twin' level twin needs 'keep' (what it holds in limits); "
                             "without it use level 'shadow'")
        if self.level == "intelligent" and not self.decide:
            raise ValueError("an 'intelligent' twin needs 'decide' (when to derate or ask for maintenance)")
        for i, k in enumerate(self.keep):
            if k.write not in self.writes:
                raise ValueError(f"keep[{i}] moves '{k.write}', which is not in 'writes' "
                                 f"(declare its range there)")
        for i, d in enumerate(self.decide):
            for name in d.derate:
                if name not in self.writes:
                    raise ValueError(f"decide[{i}] derates '{name}', which is not in 'writes' "
                                     f"(declare its range there)")
        return self


class DeviceSpec(Strict):
    """A device the scenario talks to, by type (the rig says where it is)."""

    type: str
    twin: TwinSpec | None = None


class Write(Strict):
    """Write ``value`` to ``signal`` (``device.signal``); a bare number is in ``unit`` or the signal's unit."""

    signal: str
    value: Value
    unit: str | None = None
    note: str = ""


class Fault(Strict):
    """A fault: a value forced onto a signal, or a ``kind`` the rig injects.

    Emulated devices offer ``wedge`` (the device stops answering, connection
    kept), ``stuck`` (a sensor keeps reporting ``value``, default its present
    reading), ``noise`` (extra sensor noise of standard deviation ``value``)
    and link faults on the real protocol bytes: ``latency`` and ``jitter``
    (``value`` a duration), ``drop`` and ``corrupt`` (``value`` the fraction of
    replies hit, default all), ``cut`` (the next reply stops half way and the
    device goes silent) and, on CAN, ``bus_off``.
    """

    signal: str | None = None
    value: Value | None = None
    unit: str | None = None
    device: str | None = None
    kind: str | None = None
    duration: Duration | None = None
    note: str = ""

    @model_validator(mode="after")
    def _one_of(self) -> "Fault":
        if self.kind is None and (self.signal is None or self.value is None):
            raise ValueError("give 'signal' and 'value' (force a value), or a 'kind' the rig injects "
                             "with its 'device' or 'signal'")
        if self.kind is not None and self.device is None and self.signal is None:
            raise ValueError(f"fault '{self.kind}' needs the 'device' or 'signal' it applies to")
        if self.device is not None and self.signal is not None:
            raise ValueError("give 'device' or 'signal', not both (a signal names its device)")
        return self


class Ramp(Strict):
    """Move ``signal`` from ``from`` (default: its value now) to ``to``, ``over`` a time or at a ``rate``."""

    signal: str
    start: Value | None = Field(None, alias="from")
    to: Value
    over: Duration | None = None
    rate: str | None = None
    unit: str | None = None
    note: str = ""

    @model_validator(mode="after")
    def _over_or_rate(self) -> "Ramp":
        if (self.over is None) == (self.rate is None):
            raise ValueError("give exactly one of 'over' (a duration) or 'rate' (e.g. '2 W/s')")
        if self.rate is not None:
            if units.quantity(self.rate, default_unit="1").dimensionality.get("[time]", 0) >= 0:
                raise ValueError(f"'rate' must be a change per time, such as '2 W/s', got {self.rate!r}")
        return self


class Condition(Strict):
    """``signal`` (``device.signal``) or a twin estimate (``twin: device``, ``estimate: health``) above/below a value."""

    signal: str | None = None
    twin: str | None = None
    estimate: str | None = None
    above: Value | None = None
    below: Value | None = None

    @model_validator(mode="after")
    def _what(self) -> "Condition":
        if (self.signal is None) == (self.twin is None):
            raise ValueError("give either 'signal' or 'twin' (with 'estimate')")
        if self.twin is not None and self.estimate is None:
            raise ValueError("a twin condition needs 'estimate' (e.g. health, rul_p50_s)")
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of 'above' or 'below'")
        return self


class Until(Condition):
    """Wait until a condition holds, at most ``timeout``; on timeout the run fails or errors."""

    timeout: Duration
    on_timeout: Literal["fail", "error"] = "error"


class SampleChange(Strict):
    """Change the sample period and/or the sampled signals from here on."""

    every: Annotated[Duration, Field(gt=0)] | None = None
    signals: list[str] | None = None


class Power(Strict):
    """Switch a device's power: the rig cuts or restores it (an emulator stops answering)."""

    device: str
    state: Annotated[Literal["on", "off"],
                     BeforeValidator(lambda v: {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v)]
    note: str = ""


class Reconnect(Strict):
    """Close and reopen a device's connection."""

    device: str


class Call(Strict):
    """Call a device method (an OPC UA method the rig profile declares) with ``args``; its result is logged."""

    device: str
    method: str = Field(min_length=1)
    args: list[Union[StrictBool, StrictFloat, StrictInt, str]] = Field(default_factory=list)
    note: str = ""


class Prompt(Strict):
    """An instruction to the operator at a real-time rig; the run waits for Enter."""

    message: str = Field(min_length=1)


class SetStep(Strict):
    set: Write


class FaultStep(Strict):
    fault: Fault


class WaitStep(Strict):
    wait: Duration


class RampStep(Strict):
    ramp: Ramp


class UntilStep(Strict):
    until: Until


class SampleStep(Strict):
    sample: SampleChange


class PowerStep(Strict):
    power: Power


class ReconnectStep(Strict):
    reconnect: Reconnect


class PromptStep(Strict):
    prompt: Prompt


class CallStep(Strict):
    call: Call


class MarkStep(Strict):
    mark: Annotated[str, Field(pattern=_NAME.pattern)]


STEP_KINDS = {"set": SetStep, "fault": FaultStep, "wait": WaitStep, "ramp": RampStep,
              "until": UntilStep, "sample": SampleStep, "power": PowerStep,
              "reconnect": ReconnectStep, "prompt": PromptStep, "mark": MarkStep, "call": CallStep}


def _kind_of(value: Any, kinds: tuple[str, ...]) -> str | None:
    if isinstance(value, dict):
        found = [k for k in kinds if k in value]
        return found[0] if len(found) == 1 else (next(iter(value)) if len(value) == 1 else None)
    return next((k for k in kinds if hasattr(value, k) and getattr(value, k) is not None), None)


Step = Annotated[
    Union[tuple(Annotated[cls, Tag(kind)] for kind, cls in STEP_KINDS.items())],  # type: ignore[misc]
    Discriminator(lambda v: _kind_of(v, tuple(STEP_KINDS))),
]


class Sampling(Strict):
    """How often to sample, and which signals (default: every signal of every device)."""

    every: Annotated[Duration, Field(gt=0)] = 1.0
    signals: list[str] | None = None


class Limits(Strict):
    """Bounds that stop a typo from scheduling a run that never ends; raise them to opt in."""

    max_samples: int = Field(1_000_000, gt=0)
    max_duration: Annotated[Duration, Field(gt=0)] = 7 * 86400.0


class Window(Strict):
    """Judge only between ``from`` and ``to`` (times or mark names; default the whole run)."""

    start: Anchor | None = Field(None, alias="from")
    end: Anchor | None = Field(None, alias="to")


class _Expect(Strict):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    window: Window | None = None


class Bounds(_Expect):
    """``signal`` within ``min``/``max`` (and its marginal band) at every sample in the window."""

    signal: str
    unit: str | None = None
    max: Value | None = None
    min: Value | None = None
    marginal_max: Value | None = None
    marginal_min: Value | None = None

    @model_validator(mode="after")
    def _a_bound(self) -> "Bounds":
        if self.max is None and self.min is None:
            raise ValueError(f"expectation '{self.name}' needs 'max' or 'min'")
        return self


class ToleranceSpec(Strict):
    """The twin's prediction of ``signal`` is within ``within`` of the measurement, or within ``sigmas``
    of its own uncertainty (the spread of its prediction and its assumed sensor noise together)."""

    signal: str
    within: Value | None = None
    sigmas: Annotated[float, Field(gt=0)] | None = None
    unit: str | None = None

    @model_validator(mode="after")
    def _one(self) -> "ToleranceSpec":
        if (self.within is None) == (self.sigmas is None):
            raise ValueError("give exactly one of 'within' (e.g. 1 degC) or 'sigmas' (e.g. 3)")
        return self


class Tolerance(_Expect):
    tolerance: ToleranceSpec


class Crossing(Strict):
    """``signal`` going ``above`` or ``below`` a value (a bare number is in ``unit`` or the signal's)."""

    signal: str
    above: Value | None = None
    below: Value | None = None
    unit: str | None = None

    @model_validator(mode="after")
    def _one(self) -> "Crossing":
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of 'above' or 'below'")
        return self


class DeadlineSpec(Crossing):
    """After mark ``after``, ``signal`` crosses ``above``/``below`` within ``within`` (omit it for order only)."""

    after: Annotated[str, Field(pattern=_NAME.pattern)]
    within: Duration | None = None


class Deadline(_Expect):
    deadline: DeadlineSpec


class Failure(Crossing):
    """The failure threshold on a measured signal."""


class LeadTimeSpec(Strict):
    """The twin warned (its RUL fell below ``rul_below``) at least ``at_least`` before the failure."""

    twin: str
    rul_below: Duration
    failure: Failure
    at_least: Duration
    quantile: Literal["p05", "p50", "p95"] = "p50"


class LeadTime(_Expect):
    lead_time: LeadTimeSpec


class SettleSpec(Strict):
    """After ``after``, ``signal`` enters ``to`` ± ``band`` within ``within`` and stays there."""

    signal: str
    to: Value
    band: Value
    within: Duration
    after: Anchor = 0.0
    unit: str | None = None


class Settle(_Expect):
    settle: SettleSpec


EXPECT_KINDS = {"tolerance": Tolerance, "deadline": Deadline, "lead_time": LeadTime,
                "settle": Settle, "bounds": Bounds}


def _expect_kind(value: Any) -> str:
    if isinstance(value, dict):
        return next((k for k in EXPECT_KINDS if k in value), "bounds")
    return next((k for k in EXPECT_KINDS if k != "bounds" and hasattr(value, k)), "bounds")


Expectation = Annotated[
    Union[tuple(Annotated[cls, Tag(kind)] for kind, cls in EXPECT_KINDS.items())],  # type: ignore[misc]
    Discriminator(_expect_kind),
]


class Scenario(Strict):
    """A whole scenario file."""

    scenario: Annotated[str, Field(min_length=1, max_length=128)]
    description: str = ""
    include: list[str] = Field(default_factory=list, description="YAML fragments merged into this file")
    parameters: dict[str, Union[float, str]] = Field(default_factory=dict,
                                                     description="defaults for ${name} in any value")
    matrix: dict[str, list[Union[float, str]]] = Field(default_factory=dict,
                                                       description="one run per combination")
    hardware: bool = Field(False, description="needs a physical rig: CI checks it against the ledger")
    dut: Dut
    devices: dict[str, DeviceSpec] = Field(min_length=1)
    sample: Sampling = Sampling()
    on_error: Literal["stop", "continue"] = "stop"
    retries: int = Field(0, ge=0, le=10)
    steps: list[Step] = Field(min_length=1)
    expect: list[Expectation] = Field(min_length=1)
    limits: Limits = Limits()

    def duration(self) -> float:
        """Total scheduled time in seconds (``until`` steps counted at their timeout)."""
        return sum(_step_time(s) for s in self.steps)

    def segments(self) -> list[tuple[int, int]]:
        """(duration ns, sample period ns) for each stretch between sample-rate changes."""
        out, period = [], to_ns(self.sample.every)
        for s in self.steps:
            if isinstance(s, SampleStep) and s.sample.every is not None:
                period = to_ns(s.sample.every)
            elif (t := _step_time(s)) > 0:
                out.append((to_ns(t), period))
        return out

    def sample_count(self) -> int:
        """Samples the run takes at most: one at t = 0 and one per whole period, in integer ns."""
        return 1 + sum(ns // period for ns, period in self.segments())

    def marks(self) -> list[str]:
        """Names of the mark steps, in order."""
        return [s.mark for s in self.steps if isinstance(s, MarkStep)]


def _step_time(step: Any) -> float:
    if isinstance(step, WaitStep):
        return step.wait
    if isinstance(step, RampStep):
        return step.ramp.over or 0.0  # a rate's duration is known only with the start value
    if isinstance(step, UntilStep):
        return step.until.timeout
    return 0.0


@dataclass(frozen=True)
class ScenarioSource:
    """One runnable scenario (one matrix point): its expanded text, that text's SHA-256, the model.

    ``text`` is what is recorded and hashed (see ``expand``); ``node`` is the
    merged YAML tree, so errors found later (in the plan) still name the file
    and line they came from.
    """

    path: str
    text: str
    sha256: str
    scenario: Scenario
    node: Any = None
    point: dict[str, Any] | None = None
    point_id: str = ""

    def error(self, loc: tuple[Any, ...], message: str) -> NoReturn:
        """Raise a ConfigError at ``loc`` of the scenario (its file and line)."""
        raise_in(self.node, self.path, loc, message)

    @property
    def id(self) -> str:
        """``name`` or ``name[point]``: how the CLI and pytest name this run."""
        return f"{self.scenario.scenario}[{self.point_id}]" if self.point_id else self.scenario.scenario


def _check_refs(sc: Scenario) -> list[tuple[tuple[Any, ...], str]]:
    """Cross-references pydantic cannot see: signals name declared devices, marks exist, bounds hold."""
    problems: list[tuple[tuple[Any, ...], str]] = []

    def ref(loc: tuple[Any, ...], signal: str | None) -> None:
        if signal is None:
            return
        device, dot, name = signal.partition(".")
        if not dot or not name:
            problems.append((loc, f"'{signal}' is not 'device.signal'"))
        elif device not in sc.devices:
            problems.append((loc, f"unknown device '{device}'; declared: {', '.join(sc.devices)}"))

    def dev(loc: tuple[Any, ...], device: str | None) -> None:
        if device is not None and device not in sc.devices:
            problems.append((loc, f"unknown device '{device}'; declared: {', '.join(sc.devices)}"))

    marks = sc.marks()
    for i, name in enumerate(marks):
        if marks.index(name) != i:
            problems.append((("steps",), f"mark '{name}' is used twice"))

    def anchor(loc: tuple[Any, ...], value: Any) -> None:
        if isinstance(value, str) and value not in marks:
            problems.append((loc, f"no mark step named '{value}'; marks: {', '.join(marks) or 'none'}"))

    for i, step in enumerate(sc.steps):
        loc = ("steps", i)
        if isinstance(step, SetStep):
            ref((*loc, "set", "signal"), step.set.signal)
        elif isinstance(step, FaultStep):
            ref((*loc, "fault", "signal"), step.fault.signal)
            dev((*loc, "fault", "device"), step.fault.device)
        elif isinstance(step, RampStep):
            ref((*loc, "ramp", "signal"), step.ramp.signal)
        elif isinstance(step, UntilStep):
            ref((*loc, "until", "signal"), step.until.signal)
            dev((*loc, "until", "twin"), step.until.twin)
        elif isinstance(step, SampleStep):
            for j, s in enumerate(step.sample.signals or []):
                ref((*loc, "sample", "signals", j), s)
        elif isinstance(step, (PowerStep, ReconnectStep, CallStep)):
            kind = {PowerStep: "power", ReconnectStep: "reconnect", CallStep: "call"}[type(step)]
            dev((*loc, kind, "device"), getattr(step, kind).device)
    for i, signal in enumerate(sc.sample.signals or []):
        ref(("sample", "signals", i), signal)
    for i, e in enumerate(sc.expect):
        loc = ("expect", i)
        if e.window is not None:
            anchor((*loc, "window", "from"), e.window.start)
            anchor((*loc, "window", "to"), e.window.end)
        if isinstance(e, Bounds):
            ref((*loc, "signal"), e.signal)
        elif isinstance(e, Tolerance):
            ref((*loc, "tolerance", "signal"), e.tolerance.signal)
            device = e.tolerance.signal.partition(".")[0]
            if device in sc.devices and sc.devices[device].twin is None:
                problems.append(((*loc, "tolerance", "signal"), f"device '{device}' has no twin to compare with"))
        elif isinstance(e, Deadline):
            ref((*loc, "deadline", "signal"), e.deadline.signal)
            anchor((*loc, "deadline", "after"), e.deadline.after)
        elif isinstance(e, LeadTime):
            dev((*loc, "lead_time", "twin"), e.lead_time.twin)
            ref((*loc, "lead_time", "failure", "signal"), e.lead_time.failure.signal)
            if e.lead_time.twin in sc.devices and sc.devices[e.lead_time.twin].twin is None:
                problems.append(((*loc, "lead_time", "twin"), f"device '{e.lead_time.twin}' has no twin"))
        elif isinstance(e, Settle):
            ref((*loc, "settle", "signal"), e.settle.signal)
            anchor((*loc, "settle", "after"), e.settle.after)
    longest = max(range(len(sc.steps)), key=lambda i: _step_time(sc.steps[i]))
    if (count := sc.sample_count()) > sc.limits.max_samples:
        problems.append((("sample", "every"), f"this scenario would take {count:,} samples "
                         f"({sc.duration():g} s every {sc.sample.every:g} s); the limit is "
                         f"{sc.limits.max_samples:,}; raise limits.max_samples to allow it"))
    if sc.duration() > sc.limits.max_duration:
        problems.append((("steps", longest), f"this scenario lasts {sc.duration():g} s; the limit is "
                         f"{sc.limits.max_duration:g} s; raise limits.max_duration to allow it"))
    names = [e.name for e in sc.expect]
    for i, name in enumerate(names):
        if names.index(name) != i:
            problems.append((("expect", i, "name"), f"duplicate expectation name '{name}'"))
    return problems


def _source(path: str, docs: list[expand.Document], merged: yaml.MappingNode,
            point: dict[str, Any] | None, matrix_keys: list[str]) -> ScenarioSource:
    node = expand.substitute(merged, point, path)
    scenario = validate_node(node, Scenario, path)
    text = expand.expanded_text(docs, point)
    source = ScenarioSource(path, text, hashlib.sha256(text.encode()).hexdigest(), scenario, node, point,
                            expand.point_id(point, matrix_keys))
    for loc, message in _check_refs(scenario):
        source.error(loc, message)
    return source


def _matrix_keys(merged: yaml.MappingNode) -> list[str]:
    found = next((v for k, v in merged.value if k.value == "matrix"), None)
    return [k.value for k, _ in found.value] if isinstance(found, yaml.MappingNode) else []


def load_points(path: str | Path) -> list[ScenarioSource]:
    """Every run a scenario file stands for: one per matrix point (one without a matrix)."""
    docs = expand.read_documents(path)
    merged = expand.merged_node(docs)
    keys = _matrix_keys(merged)
    return [_source(str(path), docs, merged, point, keys) for point in expand.points(merged, str(path))]


def load_scenario(path: str | Path, point: dict[str, Any] | None = None) -> ScenarioSource:
    """One run of a scenario file: the only one, or the matrix point ``point`` (else the first)."""
    return select_point(load_points(path), point)


def select_point(sources: list[ScenarioSource], point: dict[str, Any] | None) -> ScenarioSource:
    """The loaded point whose parameters match ``point`` (values compared as text); the first if None."""
    if point is None:
        return sources[0]
    for s in sources:
        if s.point is not None and all(str(s.point.get(k)) == str(v) for k, v in point.items()):
            return s
    raise_in(sources[0].node, sources[0].path, ("matrix",), f"no matrix point matches {point}; points: "
             f"{', '.join(s.point_id for s in sources)}")


def parse_scenario(path: str | Path, text: str) -> ScenarioSource:
    """A scenario from its recorded (expanded) text alone, as ``verify`` re-reads it."""
    docs, point = expand.split_expanded(str(path), text)
    merged = expand.merged_node(docs)
    return _source(str(path), docs, merged, point, _matrix_keys(merged))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a scenario file, for editors (yaml-language-server)."""
    schema = Scenario.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "twinloop scenario"
    return schema
