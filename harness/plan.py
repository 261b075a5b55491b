"""Plan a run: load, resolve every name, signal and unit, before anything starts.

A configuration error found here exits 2 and records nothing: no emulator is
started, no device is touched, no twin or ledger record is made.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

from twinloop import units
from twinloop.config import raise_at
from twinloop.errors import ConfigError, TwinloopError
from twinloop.harness.judge import Measure, resolve
from twinloop.harness.scenario import (CallStep, FaultStep, MarkStep, PowerStep, PromptStep, RampStep,
                                       ReconnectStep, SampleStep, ScenarioSource, SetStep, TwinSpec,
                                       UntilStep, WaitStep, load_scenario)
from twinloop.rigs.profile import DeviceBinding, RigSource, emulated_rig, load_rig
from twinloop.rigs.emulators.base import EmulatorKind, needs_relay
from twinloop.rigs.registry import emulator_kind, transport_class
from twinloop.rigs.rig import DeviceSetup
from twinloop.rigs.transport import SignalSpec
from twinloop.twins.policy import Decision, Keep, Policy, WriteLimit
from twinloop.twins.registry import models


@dataclass(frozen=True)
class DevicePlan:
    """One device, fully resolved: how to reach it, what to sample, its twin."""

    setup: DeviceSetup
    read: list[str]
    twin: TwinSpec | None = None
    twin_outputs: frozenset[str] = frozenset()
    policy: Policy = Policy()  # what a twin/intelligent twin may do, in the rig's units
    initial: tuple[str, ...] = ()  # signals sampled from the start (``read`` adds later sample steps')

    @property
    def signals(self) -> dict[str, SignalSpec]:
        """The device's signal map on this rig."""
        return self.setup.signals


@dataclass(frozen=True)
class Action:
    """One step, resolved: signal values in the signal's unit on the rig, times in seconds."""

    index: int
    kind: str
    device: str | None = None
    signal: str | None = None
    value: float | None = None
    start: float | None = None
    rate: float | None = None
    over: float | None = None
    estimate: str | None = None
    above: float | None = None
    below: float | None = None
    timeout: float | None = None
    on_timeout: str = "error"
    every: float | None = None
    signals: dict[str, list[str]] | None = None
    state: str | None = None
    fault_kind: str | None = None
    duration: float | None = None
    message: str = ""
    method: str | None = None
    args: tuple[Any, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Plan:
    """A scenario and rig checked against each other; what the runner executes."""

    source: ScenarioSource
    rig: RigSource
    devices: dict[str, DevicePlan]
    actions: tuple[Action, ...] = ()
    measures: tuple[Measure, ...] = ()
    units: dict[str, str] | None = None
    dut_version: str | None = None  # overrides the scenario's dut.version in the record

    @property
    def clock_kind(self) -> str:
        """``simulated`` or ``real``, as the rig profile decides."""
        return self.rig.profile.clock_kind


class _Where:
    """Raises ConfigErrors located in the scenario or the rig profile."""

    def __init__(self, source: ScenarioSource, rig: RigSource) -> None:
        self.source, self.rig = source, rig

    def scenario(self, loc: tuple[Any, ...], message: str) -> NoReturn:
        self.source.error(loc, message)

    def rig_device(self, device: str, loc: tuple[Any, ...], message: str) -> NoReturn:
        """An error in the rig's entry for ``device`` (the scenario's, for the built-in rig)."""
        if self.rig.text is None:
            self.scenario(("devices", device, "type"), message)
        raise_at(Path(self.rig.path), self.rig.text, ("devices", device, *loc), message)


def _emulator(where: _Where, name: str, binding: DeviceBinding) -> EmulatorKind:
    try:
        kind = emulator_kind(binding.emulator, binding.protocol)
    except TwinloopError as err:
        key = "protocol" if "protocol" in str(err) else "emulator"
        where.rig_device(name, (key,), str(err))
    try:
        inspect.signature(kind.device).bind(**binding.params)
        kind.check(**binding.params)  # builds the physics; starts nothing
    except (TypeError, ValueError, TwinloopError) as err:
        where.rig_device(name, ("params",), f"emulator '{binding.emulator}': {err}")
    return kind


def _server_options(where: _Where, name: str, kind: EmulatorKind, binding: DeviceBinding) -> Any:
    """The emulator's ``server:`` options, validated, with file paths taken from the rig profile's folder."""
    folder = Path(where.rig.path).parent if where.rig.text is not None else None
    try:
        return kind.server_options(binding.server, folder)
    except ConfigError as err:
        where.rig_device(name, tuple((err.key or "server").split(".")),
                         f"device '{name}': {str(err).split(': ', 1)[-1]}")


def _device(where: _Where, name: str, binding: DeviceBinding, wanted: set[str] | None,
            twin: TwinSpec | None) -> DevicePlan:
    """Resolve one device's transport, signal map and safe state (its twin is checked later)."""
    emulator = _emulator(where, name, binding) if binding.emulator else None
    try:
        transport = (transport_class(name, binding.address) if binding.address
                     else transport_class(name, f"{emulator.scheme}://"))
    except TwinloopError as err:
        where.rig_device(name, ("address",), str(err))
    raw_signals = binding.signals or (emulator.signal_map if emulator else {})
    try:
        signals = transport.parse_signals(name, raw_signals)
    except ConfigError as err:
        where.rig_device(name, tuple((err.key or "signals").split(".")), str(err).split(": ", 1)[-1])
    options = {**(emulator.transport_options if emulator else {}), **binding.options}
    if where.rig.text is not None:  # relative file options are relative to the rig profile's folder
        folder = Path(where.rig.path).parent
        options.update({k: str(folder / v) for k, v in binding.options.items()
                        if k in transport.path_options and isinstance(v, str) and not Path(v).is_absolute()})
    try:
        transport.check(name, binding.address, signals, transport.parse_options(name, options))
    except ConfigError as err:
        where.rig_device(name, tuple((err.key or "options").split(".")), str(err).split(": ", 1)[-1])
    for signal, spec in signals.items():
        try:
            units.unit(spec.unit)
        except ValueError as err:
            where.rig_device(name, ("signals", signal, "unit"), f"signal '{name}.{signal}': {err}")
    safe_state = dict(binding.safe_state) or (emulator.safe_state if emulator else {})
    for signal in safe_state:
        spec = signals.get(signal)
        if spec is None or not spec.writable:
            what = "no such signal" if spec is None else "the signal is read-only"
            where.rig_device(name, ("safe_state", signal), f"safe state of '{name}.{signal}': {what}")
    read = [n for n in signals if wanted is None or f"{name}.{n}" in wanted]
    server_options = _server_options(where, name, emulator, binding) if emulator else None
    setup = DeviceSetup(name=name, transport=transport, signals=signals, timeout=binding.timeout,
                        safe_state=safe_state, address=binding.address, emulator=emulator,
                        emulator_params=dict(binding.params), options=options, server_options=server_options)
    return DevicePlan(setup, read, twin)


def _twin(where: _Where, device: str, d: DevicePlan) -> DevicePlan:
    """Check the twin model exists, takes its parameters, and gets every signal it can."""
    twin, signals, read = d.twin, d.signals, d.read
    if twin is None:
        return d
    loc = ("devices", device, "twin")
    try:
        model = models.get(twin.model)
    except TwinloopError as err:
        where.scenario((*loc, "model"), str(err))
    try:
        model(**twin.params)
    except TwinloopError as err:
        where.scenario((*loc, "params"), str(err))
    for name in (*model.inputs, *model.outputs):
        if name in signals and name not in read:
            where.scenario(("sample", "signals"), f"the twin of '{device}' needs '{device}.{name}' "
                           f"(a model {'input' if name in model.inputs else 'output'}), which "
                           "sample.signals leaves out")
    return replace(d, twin_outputs=frozenset(model.outputs), policy=_policy(where, device, d, model))


def _policy(where: _Where, device: str, d: DevicePlan, model: type) -> Policy:
    """The twin's writes, keeps and decisions, checked against the rig and the model, in the rig's units."""
    twin, loc = d.twin, ("devices", device, "twin")
    writes = {}
    for name, lim in twin.writes.items():
        here = (*loc, "writes", name)
        _signal(where, {device: d}, here, f"{device}.{name}", write=True)
        if name not in model.inputs:
            where.scenario(here, f"the twin can only move what its model '{twin.model}' takes as an input "
                           f"({', '.join(model.inputs)}), not '{name}'")
        unit = d.signals[name].unit
        low = _value(where, (*here, "min"), lim.min, unit, None)
        high = _value(where, (*here, "max"), lim.max, unit, None)
        if not low < high:
            where.scenario(here, f"min ({low:g} {unit}) must be below max ({high:g} {unit})")
        writes[name] = WriteLimit(low, high)
    keeps = []
    for i, k in enumerate(twin.keep):
        here = (*loc, "keep", i)
        if k.output not in model.outputs and k.output not in model.states:
            where.scenario((*here, "output"), f"model '{twin.model}' has no output or state '{k.output}'; "
                           f"it has: {', '.join(dict.fromkeys([*model.outputs, *model.states]))}")
        unit = model.outputs[k.output].unit if k.output in model.outputs else model.states[k.output]
        side = "below" if k.below is not None else "above"
        limit = _value(where, (*here, side), getattr(k, side), unit, None)
        keeps.append(Keep(k.output, limit, side, k.write, k.horizon, k.quantile))
    decisions = []
    for i, dec in enumerate(twin.decide):
        derate = {}
        for name, value in dec.derate.items():
            here = (*loc, "decide", i, "derate", name)
            v = _value(where, here, value, d.signals[name].unit, None)
            lim = writes[name]
            if not lim.low <= v <= lim.high:
                where.scenario(here, f"{v:g} {d.signals[name].unit} is outside the range 'writes' allows "
                               f"[{lim.low:g}, {lim.high:g}]")
            derate[name] = v
        decisions.append(Decision(dec.when.rul, dec.when.below, derate, dec.maintenance))
    return Policy(writes, tuple(keeps), tuple(decisions), twin.decide_every)


def _signal(where: _Where, devices: dict[str, DevicePlan], loc: tuple[Any, ...], ref: str, *,
            write: bool = False, sampled: set[str] | None = None) -> tuple[str, str, str]:
    """(device, signal, unit) of a ``device.signal`` reference, checked against the rig."""
    rig = where.rig.profile.rig
    dev, _, name = ref.partition(".")
    spec = devices[dev].signals.get(name)
    if spec is None:
        where.scenario(loc, f"device '{dev}' has no signal '{name}' on rig '{rig}'; it has: "
                       f"{', '.join(sorted(devices[dev].signals))}")
    if write and not spec.writable:
        where.scenario(loc, f"{ref} is read-only on rig '{rig}'")
    if sampled is not None and ref not in sampled:
        where.scenario(loc, f"{ref} is judged but not sampled; add it to sample.signals")
    return dev, name, spec.unit


def _value(where: _Where, loc: tuple[Any, ...], value: Any, unit: str, given: str | None) -> float:
    """A scenario value in the signal's unit (a bare number is in ``given`` or the signal's unit)."""
    try:
        return units.convert(value, unit, given or unit)
    except ValueError as err:
        where.scenario(loc, str(err))


def _estimate_value(where: _Where, loc: tuple[Any, ...], estimate: str, value: Any) -> float:
    """A threshold on a twin estimate: ``*_s`` estimates are durations, the others plain numbers."""
    try:
        return units.seconds(value) if estimate.endswith("_s") else units.convert(value, "1", "1")
    except ValueError as err:
        where.scenario(loc, f"twin estimate '{estimate}': {err}")


#: Link faults whose ``value`` means something: a duration, or the fraction of replies hit.
LINK_VALUES = {"latency": "a duration such as 50 ms", "jitter": "a duration such as 20 ms",
               "drop": "the fraction of replies lost, such as 0.5 or 50 %",
               "corrupt": "the fraction of replies damaged, such as 0.5 or 50 %"}


def _link_value(where: _Where, loc: tuple[Any, ...], kind: str, value: Any) -> float | None:
    """A link fault's value: seconds for latency and jitter, a fraction in (0, 1] for drop and corrupt."""
    if value is None:
        if kind in ("latency", "jitter"):
            where.scenario(loc, f"fault '{kind}' needs a 'value': {LINK_VALUES[kind]}")
        return None
    try:
        if kind in ("latency", "jitter"):
            return units.seconds(value)
        fraction = units.convert(value, "1", "1")
    except ValueError as err:
        where.scenario(loc, f"fault '{kind}': {err}; give {LINK_VALUES[kind]}")
    if not 0 < fraction <= 1:
        where.scenario(loc, f"fault '{kind}': {value} is not {LINK_VALUES[kind]} (in (0, 1])")
    return fraction


def _relays(devices: dict[str, DevicePlan], actions: list[Action]) -> dict[str, DevicePlan]:
    """Put a fault relay in front of each emulator whose link faults the scenario injects."""
    out = dict(devices)
    for a in actions:
        emulator = devices[a.device].setup.emulator if a.device else None
        if a.kind == "fault" and a.fault_kind and emulator and needs_relay(emulator.server, a.fault_kind):
            out[a.device] = replace(out[a.device], setup=replace(out[a.device].setup, relay=True))
    return out


def _actions(where: _Where, devices: dict[str, DevicePlan], interactive: bool) -> list[Action]:
    """Every step resolved against the rig, in order."""
    sc = where.source.scenario
    sampled = {f"{d}.{n}" for d, p in devices.items() for n in p.read}
    real = where.rig.profile.clock_kind == "real"
    out: list[Action] = []
    for i, step in enumerate(sc.steps):
        loc = ("steps", i)
        if isinstance(step, SetStep):
            w = step.set
            dev, name, u = _signal(where, devices, (*loc, "set", "signal"), w.signal, write=True)
            out.append(Action(i, "set", dev, name, _value(where, (*loc, "set", "value"), w.value, u, w.unit),
                              note=w.note))
        elif isinstance(step, FaultStep):
            f = step.fault
            if f.kind is None:
                dev, name, u = _signal(where, devices, (*loc, "fault", "signal"), f.signal, write=True)
                out.append(Action(i, "fault", dev, name, _value(where, (*loc, "fault", "value"), f.value, u,
                                                                  f.unit), note=f.note))
            else:
                device, signal, value = f.device, None, None
                if f.signal is not None:
                    device, signal, u = _signal(where, devices, (*loc, "fault", "signal"), f.signal)
                    if f.value is not None and f.kind in ("stuck", "noise"):
                        value = (_value(where, (*loc, "fault", "value"), f.value, u, f.unit) if f.kind == "stuck"
                                 else units.convert_delta(f.value, u, f.unit or u))
                if f.kind in LINK_VALUES:
                    value = _link_value(where, (*loc, "fault", "value"), f.kind, f.value)
                emulator = devices[device].setup.emulator
                kinds = emulator.faults if emulator else ()
                if f.kind not in kinds:
                    where.scenario((*loc, "fault", "kind"), f"device '{device}' on rig "
                                   f"'{where.rig.profile.rig}' cannot inject fault '{f.kind}'; it can: "
                                   f"{', '.join(kinds) or 'none (only emulated devices inject faults here)'}")
                if f.kind in ("stuck", "noise") and signal is None:
                    where.scenario((*loc, "fault"), f"fault '{f.kind}' needs the 'signal' it applies to")
                out.append(Action(i, "fault", device, signal, value, fault_kind=f.kind, duration=f.duration,
                                  note=f.note))
        elif isinstance(step, WaitStep):
            out.append(Action(i, "wait", over=step.wait))
        elif isinstance(step, RampStep):
            r = step.ramp
            dev, name, u = _signal(where, devices, (*loc, "ramp", "signal"), r.signal, write=True)
            start = None if r.start is None else _value(where, (*loc, "ramp", "from"), r.start, u, r.unit)
            rate = None
            if r.rate is not None:
                try:
                    rate = abs(units.rate(r.rate, u))
                except ValueError as err:
                    where.scenario((*loc, "ramp", "rate"), str(err))
                if rate == 0:
                    where.scenario((*loc, "ramp", "rate"), "a ramp rate cannot be 0")
            out.append(Action(i, "ramp", dev, name, _value(where, (*loc, "ramp", "to"), r.to, u, r.unit),
                              start=start, rate=rate, over=r.over, note=r.note))
        elif isinstance(step, UntilStep):
            c = step.until
            if c.signal is not None:
                dev, name, u = _signal(where, devices, (*loc, "until", "signal"), c.signal, sampled=sampled)
                conv = lambda k, v: None if v is None else _value(where, (*loc, "until", k), v, u, None)
                out.append(Action(i, "until", dev, name, above=conv("above", c.above),
                                  below=conv("below", c.below), timeout=c.timeout, on_timeout=c.on_timeout))
            else:
                if devices[c.twin].twin is None:
                    where.scenario((*loc, "until", "twin"), f"device '{c.twin}' has no twin")
                conv = lambda k, v: None if v is None else _estimate_value(where, (*loc, "until", k),
                                                                           c.estimate, v)
                out.append(Action(i, "until", c.twin, estimate=c.estimate, above=conv("above", c.above),
                                  below=conv("below", c.below), timeout=c.timeout, on_timeout=c.on_timeout))
        elif isinstance(step, SampleStep):
            chosen = None
            if step.sample.signals is not None:
                chosen = {d: [] for d in devices}
                for j, ref in enumerate(step.sample.signals):
                    dev, name, _ = _signal(where, devices, (*loc, "sample", "signals", j), ref)
                    chosen[dev].append(name)
            out.append(Action(i, "sample", every=step.sample.every, signals=chosen))
        elif isinstance(step, (PowerStep, ReconnectStep)):
            kind = "power" if isinstance(step, PowerStep) else "reconnect"
            s_ = getattr(step, kind)
            if kind == "power" and devices[s_.device].setup.emulator is None:
                where.scenario((*loc, "power", "device"), f"device '{s_.device}' on rig "
                               f"'{where.rig.profile.rig}' has no power control (only emulated devices "
                               "can be switched here)")
            out.append(Action(i, kind, s_.device, state=getattr(s_, "state", None), note=getattr(s_, "note", "")))
        elif isinstance(step, PromptStep):
            if real and not interactive:
                where.scenario((*loc, "prompt"), "this scenario asks the operator to act, but no terminal "
                               "is attached (stdin is not a TTY, e.g. in CI); run it from a terminal at "
                               "the bench")
            out.append(Action(i, "prompt", message=step.prompt.message))
        elif isinstance(step, MarkStep):
            out.append(Action(i, "mark", note=step.mark))
        elif isinstance(step, CallStep):
            c, setup = step.call, devices[step.call.device].setup
            declared = setup.transport.method_names(setup.transport.parse_options(c.device, setup.options))
            if c.method not in declared:
                where.scenario((*loc, "call", "method"), f"device '{c.device}' on rig '{where.rig.profile.rig}' "
                               f"has no method '{c.method}'; it declares: {', '.join(declared) or 'none'}")
            out.append(Action(i, "call", c.device, method=c.method, args=tuple(c.args), note=c.note))
    return out


def _columns(devices: dict[str, DevicePlan], actions: list[Action]) -> dict[str, DevicePlan]:
    """Each device reads the union of every signal set the run samples, so columns stay whole."""
    out = {}
    for dev, d in devices.items():
        extra = [n for a in actions if a.kind == "sample" and a.signals for n in a.signals.get(dev, [])]
        read = list(dict.fromkeys([*d.read, *extra]))
        out[dev] = replace(d, read=read, initial=tuple(d.read))
    return out


def plan(scenario: str | Path | ScenarioSource, rig: str | Path | RigSource | None = None, *,
         interactive: bool = False) -> Plan:
    """Load a scenario and a rig profile (default: the built-in emulated rig) and check both.

    ``interactive`` says an operator can answer ``prompt`` steps (a terminal is
    attached); without one, a prompt on a real-time rig is refused here.
    """
    source = scenario if isinstance(scenario, ScenarioSource) else load_scenario(scenario)
    sc = source.scenario
    if rig is None:
        rig = emulated_rig({name: d.type for name, d in sc.devices.items()})
    elif not isinstance(rig, RigSource):
        rig = load_rig(rig)
    where = _Where(source, rig)
    missing = [d for d in sc.devices if d not in rig.profile.devices]
    if missing:
        where.scenario(("devices", missing[0]), f"rig '{rig.profile.rig}' ({rig.path}) has no device "
                       f"'{missing[0]}'; it has: {', '.join(rig.profile.devices) or 'none'}")
    wanted = set(sc.sample.signals) if sc.sample.signals is not None else None
    devices = {name: _device(where, name, rig.profile.devices[name], wanted, spec.twin)
               for name, spec in sc.devices.items()}
    for i, ref in enumerate(sc.sample.signals or []):
        _signal(where, devices, ("sample", "signals", i), ref)
    actions = _actions(where, devices, interactive)
    devices = _relays(_columns(devices, actions), actions)
    signal_units = {f"{d}.{n}": spec.unit for d, p in devices.items() for n, spec in p.signals.items()}
    sampled = {f"{d}.{n}" for d, p in devices.items() for n in p.read}
    for i, e in enumerate(sc.expect):
        for key, ref in _expect_signals(e):
            _signal(where, devices, ("expect", i, *key), ref, sampled=sampled)
    measures = resolve(source, signal_units)
    return Plan(source, rig, {name: _twin(where, name, d) for name, d in devices.items()},
                tuple(actions), tuple(measures), signal_units)


def _expect_signals(e: Any) -> list[tuple[tuple[str, ...], str]]:
    """The signals an expectation judges, with their key paths."""
    for kind in ("tolerance", "deadline", "settle"):
        if hasattr(e, kind):
            return [((kind, "signal"), getattr(e, kind).signal)]
    if hasattr(e, "lead_time"):
        return [(("lead_time", "failure", "signal"), e.lead_time.failure.signal)]
    return [(("signal",), e.signal)]
