"""The fleet file (YAML): many units of registered twin models, simulated together over a horizon.

Validated at load, with the scenario file's standards: an unknown key, a bad
value, an unknown model, parameter, state or input is a ``ConfigError`` naming
the file, the line and the key (and what is known)::

    fleet: pump-fleet
    seed: 7
    horizon: 365 d              # durations carry their unit
    dt: 1 h                     # the step; horizon must be a whole number of steps
    shards: auto                # or a number; auto: one per CPU (per GPU with a GPU) Ray reports
    array: auto                 # numpy | cupy | auto (CuPy where Ray reports a GPU)
    checkpoint_every: 30 d      # simulated time per shard call (default: horizon / 20)
    bins: 100                   # failures are counted in this many bins over the horizon
    groups:
      - name: pumps
        model: pump_bearing
        units: 100000
        params: {k: 1.2e-8}     # the model's parameters (nominal); others keep their defaults
        vary:                   # per-unit draws of the model's initial states, seeded
          k: {lognormal: 0.3}   # median at the nominal state, relative 1 sigma
          wear: {uniform: [0, 0.1]}   # absolute, in the state's unit
        profile:                # the model's inputs (defaults where not given)
          speed: 1480           # a number in the input's unit, or a quantity: '1480 rpm'
          load: {cycle: [100, 60], every: 12 h}   # each value held 'every', repeating

``vary`` also takes ``{normal: sigma}`` (absolute, state unit). It draws
only the model's states (its initial state per unit), never its parameters.
A draw that could leave the state's physical range (the model's
``state_limits``: a wear rate is never negative) is refused at load rather
than clipped, so no unit is silently given an impossible (or an immortal)
start: ``normal`` only on unbounded states, ``lognormal`` on states bounded
at 0 on the side away from the nominal, ``uniform`` within the range. Every
number must be finite (no ``.inf`` or ``.nan``). Draws do not depend on how
the fleet is split into shards: each (group, state) has its own seeded
stream per block of ``DRAW_BLOCK`` units (see ``draw``).
``compile_fleet`` turns a validated file into the plain ``FleetPlan`` the
shards run (inputs converted to the model's units, every check done).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, Union

import numpy
import yaml
from pydantic import BeforeValidator, ConfigDict, Discriminator, Field, StrictInt, Tag, model_validator

from twinloop import units
from twinloop.config import Strict, compose, raise_in, read_text, validate_node
from twinloop.errors import ConfigError, TwinError
from twinloop.twins.registry import models

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")

#: Units per random stream: a (group, state) pair draws block ``b`` (units ``b*DRAW_BLOCK`` ...) from its own
#: seeded generator, so a shard draws exactly its units' values whatever the split.
DRAW_BLOCK = 65_536
#: Most steps a fleet may take (failure steps are stored as int32).
MAX_STEPS = 1_000_000_000
#: Most shards a fleet may ask for (the file's ``shards``, ``twinloop simulate --shards``).
MAX_SHARDS = 4096

#: Seconds, written with a unit: ``1 h``, ``365 d``, ``5 min``.
Duration = Annotated[float, BeforeValidator(units.seconds),
                     Field(json_schema_extra={"type": "string", "examples": ["1 h", "365 d"]})]
#: A number in the input's unit, or a quantity with its own unit (``1480 rpm``, ``40 degC``).
Value = Union[float, str]


class _Finite(Strict):
    """Config model whose floats must be finite: ``.inf`` and ``.nan`` are refused like any bad value."""

    model_config = ConfigDict(allow_inf_nan=False)


class Lognormal(_Finite):
    """Median at the nominal state, relative 1 sigma (``exp(sigma * z)``)."""

    lognormal: float = Field(gt=0.0, le=5.0)


class Normal(_Finite):
    """Nominal state plus an absolute 1 sigma, in the state's unit."""

    normal: float = Field(ge=0.0)


class Uniform(_Finite):
    """Uniform between two absolute values, in the state's unit (the nominal is ignored)."""

    uniform: tuple[float, float]

    @model_validator(mode="after")
    def _ordered(self) -> "Uniform":
        low, high = self.uniform
        if not (math.isfinite(low) and math.isfinite(high)) or low > high:
            raise ValueError(f"uniform needs [low, high] with low <= high, got [{low}, {high}]")
        return self


VARY_KINDS = {"lognormal": Lognormal, "normal": Normal, "uniform": Uniform}


def _kind_of(value: Any) -> str | None:
    if isinstance(value, dict):
        return next(iter(value)) if len(value) == 1 else None
    return next((k for k in VARY_KINDS if hasattr(value, k)), None)


Vary = Annotated[Union[tuple(Annotated[cls, Tag(kind)] for kind, cls in VARY_KINDS.items())],  # type: ignore[misc]
                 Discriminator(_kind_of)]


class Cycle(_Finite):
    """Values held ``every`` (a whole number of steps) in turn, repeating from the start."""

    cycle: list[Value] = Field(min_length=1, max_length=100_000)
    every: Duration = Field(gt=0.0)


def _profile_kind(value: Any) -> str:
    return "cycle" if isinstance(value, (dict, Cycle)) else "constant"


Profile = Annotated[Union[Annotated[Cycle, Tag("cycle")], Annotated[Value, Tag("constant")]],
                    Discriminator(_profile_kind)]


class GroupSpec(_Finite):
    """Units of one model with the same nominal parameters and input profile."""

    name: Annotated[str, Field(pattern=_NAME.pattern, max_length=64)]
    model: str
    units: StrictInt = Field(ge=1, le=1_000_000_000)
    params: dict[str, float] = Field(default_factory=dict)
    vary: dict[str, Vary] = Field(default_factory=dict)
    profile: dict[str, Profile] = Field(default_factory=dict)


class FleetSpec(_Finite):
    """A whole fleet file."""

    fleet: Annotated[str, Field(pattern=_NAME.pattern, max_length=128)]
    description: str = ""
    seed: StrictInt = Field(0, ge=0, le=2**63 - 1)
    horizon: Duration = Field(gt=0.0)
    dt: Duration = Field(gt=0.0)
    shards: Union[Literal["auto"], Annotated[StrictInt, Field(ge=1, le=MAX_SHARDS)]] = "auto"
    array: Literal["numpy", "cupy", "auto"] = "auto"
    checkpoint_every: Duration | None = Field(None, gt=0.0)
    bins: StrictInt = Field(100, ge=1, le=100_000)
    groups: list[GroupSpec] = Field(min_length=1, max_length=1000)


@dataclass(frozen=True)
class VaryPlan:
    """One state's per-unit draw: ``kind`` (lognormal, normal, uniform) and its numbers."""

    state: str
    kind: str
    args: tuple[float, ...]


@dataclass(frozen=True)
class InputPlan:
    """One input over the run: ``values[(step // hold) % len(values)]`` in the model's unit."""

    name: str
    values: tuple[float, ...]
    hold: int  # steps each value is held (1 for a constant)


@dataclass(frozen=True)
class GroupPlan:
    """A group as its shards run it: the model, nominal parameters, draws and inputs, all in model units."""

    name: str
    model: str
    params: dict[str, float]
    units: int
    vary: tuple[VaryPlan, ...]
    inputs: tuple[InputPlan, ...]

    def build(self) -> Any:
        """A fresh instance of the group's model."""
        return models.get(self.model)(**self.params)

    def inputs_at(self, step: int) -> dict[str, float]:
        """The inputs during step ``step`` (0-based: from ``step * dt`` to ``(step + 1) * dt``)."""
        return {i.name: i.values[(step // i.hold) % len(i.values)] for i in self.inputs}


@dataclass(frozen=True)
class FleetPlan:
    """A checked fleet, in plain numbers: what ``twins.fleet.simulate`` and its shards run."""

    fleet: str
    seed: int
    dt: float
    steps: int
    steps_per_call: int
    bins: int
    shards: int | None  # None: auto
    array: str
    groups: tuple[GroupPlan, ...]

    @property
    def horizon(self) -> float:
        return self.steps * self.dt

    @property
    def units(self) -> int:
        return sum(g.units for g in self.groups)

    def fingerprint(self) -> str:
        """SHA-256 of everything that decides the simulation (not shards or array: they do not change it)."""
        data = asdict(self)
        data.pop("shards"), data.pop("array")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class FleetSource:
    """A loaded fleet file: its path, text and SHA-256, the validated spec, its node tree and the plan."""

    path: str
    text: str
    sha256: str
    spec: FleetSpec
    plan: FleetPlan
    node: Any = None


def _whole_steps(value: float, dt: float) -> int | None:
    """``value / dt`` if it is a whole number (to 1e-9 relative), else None."""
    n = round(value / dt)
    return n if n >= 1 and abs(n * dt - value) <= 1e-9 * max(value, dt) else None


def compile_fleet(spec: FleetSpec, node: yaml.Node | None = None, name: str = "<fleet>") -> FleetPlan:
    """Check what pydantic cannot (models, parameters, states, inputs, step multiples) and build the plan.

    ``node`` (the file's YAML tree) lets errors name the line; without it they name the key only.
    """
    def fail(loc: tuple[Any, ...], message: str) -> NoReturn:
        if node is None:
            key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
            raise ConfigError(message, file=name, key=key or None)
        raise_in(node, name, loc, message)

    steps = _whole_steps(spec.horizon, spec.dt)
    if steps is None:
        fail(("horizon",), f"horizon ({spec.horizon:g} s) must be a whole number of steps of dt ({spec.dt:g} s)")
    if steps > MAX_STEPS:
        fail(("horizon",), f"{steps:,} steps of dt; the most a fleet may take is {MAX_STEPS:,}")
    if spec.checkpoint_every is None:
        per_call = max(1, math.ceil(steps / 20))
    else:
        per_call = _whole_steps(spec.checkpoint_every, spec.dt)
        if per_call is None:
            fail(("checkpoint_every",), f"checkpoint_every ({spec.checkpoint_every:g} s) must be a whole "
                                        f"number of steps of dt ({spec.dt:g} s)")
        per_call = min(per_call, steps)
    names: dict[str, int] = {}
    groups = []
    for gi, g in enumerate(spec.groups):
        if g.name in names:
            fail(("groups", gi, "name"), f"group name '{g.name}' is used twice (first at groups[{names[g.name]}])")
        names[g.name] = gi
        groups.append(_compile_group(g, gi, spec.dt, fail))
    return FleetPlan(spec.fleet, spec.seed, spec.dt, steps, per_call, spec.bins,
                     None if spec.shards == "auto" else spec.shards, spec.array, tuple(groups))


def _compile_group(g: GroupSpec, gi: int, dt: float, fail: Any) -> GroupPlan:
    loc = ("groups", gi)
    try:
        cls = models.get(g.model)
    except TwinError as err:
        fail((*loc, "model"), str(err))
    for key, value in g.params.items():
        if key not in cls.parameters:
            fail((*loc, "params", key), f"{g.model} has no parameter '{key}'; known: {', '.join(sorted(cls.parameters))}")
        p = cls.parameters[key]
        if not p.low <= value <= p.high:
            fail((*loc, "params", key), f"{key}={value:g} {p.unit} is outside [{p.low:g}, {p.high:g}]")
    try:
        model = cls(**g.params)
    except TwinError as err:
        fail((*loc, "params"), str(err))
    nominal = model.initial_state(1, numpy)
    vary = []
    for state, v in g.vary.items():
        if state not in model.states:
            fail((*loc, "vary", state), f"'{state}' is not a state of {g.model}; states: "
                                        f"{', '.join(sorted(model.states))}")
        if isinstance(v, Lognormal):
            if float(nominal[state][0]) == 0.0:
                fail((*loc, "vary", state, "lognormal"), f"lognormal scales the nominal, and {g.model}'s "
                     f"'{state}' starts at 0; use uniform or normal")
            vp = VaryPlan(state, "lognormal", (v.lognormal,))
        elif isinstance(v, Normal):
            vp = VaryPlan(state, "normal", (v.normal,))
        else:
            vp = VaryPlan(state, "uniform", tuple(v.uniform))
        _within_limits(model, vp, float(nominal[state][0]), (*loc, "vary", state, vp.kind), fail)
        vary.append(vp)
    vary.sort(key=lambda p: p.state)  # the file's order must not matter
    inputs = []
    for key in g.profile:
        if key not in model.inputs:
            fail((*loc, "profile", key), f"'{key}' is not an input of {g.model}; inputs: "
                                         f"{', '.join(sorted(model.inputs))}")
    for key, signal in model.inputs.items():
        value = g.profile.get(key, signal.default)
        where = (*loc, "profile", key)
        if isinstance(value, Cycle):
            hold = _whole_steps(value.every, dt)
            if hold is None:
                fail((*where, "every"), f"every ({value.every:g} s) must be a whole number of steps of "
                                        f"dt ({dt:g} s)")
            values = [_convert(v, signal.unit, (*where, "cycle", i), fail) for i, v in enumerate(value.cycle)]
        else:
            hold, values = 1, [_convert(value, signal.unit, where, fail)]
        inputs.append(InputPlan(key, tuple(values), hold))
    return GroupPlan(g.name, g.model, dict(model.params), g.units, tuple(vary), tuple(inputs))


def _within_limits(model: Any, v: VaryPlan, nominal: float, loc: tuple[Any, ...], fail: Any) -> None:
    """Refuse a draw whose values could leave the state's physical range (``model.state_limits``)."""
    low, high = model.state_limits.get(v.state, (-math.inf, math.inf))
    if v.kind == "uniform":
        reach = v.args
    elif v.kind == "normal":
        reach = (nominal, nominal) if v.args[0] == 0 else (-math.inf, math.inf)
    else:  # lognormal: the nominal times a positive factor
        reach = (0.0, math.inf) if nominal > 0 else (-math.inf, 0.0)
    if low <= reach[0] and reach[1] <= high:
        return
    unit = model.states[v.state]
    shown = f"[{low:g}, {high:g}]" + ("" if unit == "1" else f" {unit}")
    if v.kind == "uniform":
        hint = f"keep uniform within {shown}"
    elif v.kind == "normal":
        hint = ("use lognormal (a relative spread, median at the nominal, never crossing 0) or uniform "
                "within the range" if nominal != 0.0 and 0.0 in (low, high) else "use uniform within the range")
    else:
        hint = "use uniform within the range"
    fail(loc, f"{v.kind} draws can put {model.name}'s '{v.state}' outside its physical range {shown} "
              f"(draws are refused, not clipped); {hint}")


def _convert(value: Any, unit: str, loc: tuple[Any, ...], fail: Any) -> float:
    try:
        return units.convert(value, unit, default_unit=unit)
    except ValueError as err:
        fail(loc, str(err))


def draw(group: GroupPlan, seed: int, start: int, stop: int, nominal: dict[str, Any]) -> dict[str, numpy.ndarray]:
    """Per-unit initial states of units ``start:stop`` of ``group`` (NumPy), the same however the fleet is split.

    Each varied state of each group draws block ``b`` (``DRAW_BLOCK`` units) from
    ``Generator(PCG64(SeedSequence(seed, spawn_key=(crc32(group), crc32(state), b))))``;
    ``nominal`` holds the model's initial state for these units.
    """
    out = {}
    n = stop - start
    for v in group.vary:
        parts = []
        for b in range(start // DRAW_BLOCK, (stop - 1) // DRAW_BLOCK + 1) if n > 0 else ():
            seq = numpy.random.SeedSequence(seed, spawn_key=(zlib.crc32(group.name.encode()),
                                                             zlib.crc32(v.state.encode()), b))
            rng = numpy.random.Generator(numpy.random.PCG64(seq))
            lo, hi = max(start, b * DRAW_BLOCK) - b * DRAW_BLOCK, min(stop, (b + 1) * DRAW_BLOCK) - b * DRAW_BLOCK
            if v.kind == "uniform":
                parts.append(rng.random(hi)[lo:])
            else:
                parts.append(rng.standard_normal(hi)[lo:])
        z = numpy.concatenate(parts) if parts else numpy.zeros(0)
        base = numpy.asarray(nominal[v.state], dtype=float)
        if v.kind == "lognormal":
            out[v.state] = base * numpy.exp(v.args[0] * z)
        elif v.kind == "normal":
            out[v.state] = base + v.args[0] * z
        else:
            low, high = v.args
            out[v.state] = low + (high - low) * z
    return out


def _source(path: str, text: str) -> FleetSource:
    node = compose(text, path)
    spec = validate_node(node, FleetSpec, path)
    plan = compile_fleet(spec, node, path)
    return FleetSource(path, text, hashlib.sha256(text.encode()).hexdigest(), spec, plan, node)


def load_fleet(path: str | Path) -> FleetSource:
    """Read, validate and compile a fleet file; every error names file, line and key."""
    return _source(str(path), read_text(Path(path)))


def parse_fleet(text: str, path: str = "<fleet>") -> FleetSource:
    """A fleet from its text (``path`` names it in errors)."""
    return _source(str(path), text)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a fleet file, for editors (yaml-language-server)."""
    schema = FleetSpec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "twinloop fleet"
    return schema
