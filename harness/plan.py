"""Plan a run: load, resolve every name, signal and unit, before anything starts.

A configuration error found here exits 2 and records nothing: no emulator is
started, no device is touched, no twin or ledger record is made.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

from twinloop.config import raise_at
from twinloop.errors import ConfigError, TwinloopError
from twinloop.harness.scenario import (FaultStep, ScenarioSource, SetStep, TwinSpec, load_scenario)
from twinloop.rigs.profile import DeviceBinding, RigSource, emulated_rig, load_rig
from twinloop.rigs.registry import emulators, transport_class
from twinloop.rigs.rig import DeviceSetup
from twinloop.rigs.transport import SignalSpec
from twinloop.twins.registry import models


@dataclass(frozen=True)
class DevicePlan:
    """One device, fully resolved: how to reach it, what to sample, its twin."""

    setup: DeviceSetup
    read: list[str]
    twin: TwinSpec | None = None
    twin_outputs: frozenset[str] = frozenset()

    @property
    def signals(self) -> dict[str, SignalSpec]:
        """The device's signal map on this rig."""
        return self.setup.signals


@dataclass(frozen=True)
class Plan:
    """A scenario and rig checked against each other; what the runner executes."""

    source: ScenarioSource
    rig: RigSource
    devices: dict[str, DevicePlan]

    @property
    def clock_kind(self) -> str:
        """``simulated`` or ``real``, as the rig profile decides."""
        return self.rig.profile.clock_kind


class _Where:
    """Raises ConfigErrors located in the scenario or the rig profile."""

    def __init__(self, source: ScenarioSource, rig: RigSource) -> None:
        self.source, self.rig = source, rig

    def scenario(self, loc: tuple[Any, ...], message: str) -> NoReturn:
        raise_at(Path(self.source.path), self.source.text, loc, message)

    def rig_device(self, device: str, loc: tuple[Any, ...], message: str) -> NoReturn:
        """An error in the rig's entry for ``device`` (the scenario's, for the built-in rig)."""
        if self.rig.text is None:
            self.scenario(("devices", device, "type"), message)
        raise_at(Path(self.rig.path), self.rig.text, ("devices", device, *loc), message)


def _emulator(where: _Where, name: str, binding: DeviceBinding) -> type:
    try:
        cls = emulators.get(binding.emulator)
    except TwinloopError as err:
        where.rig_device(name, ("emulator",), str(err))
    try:
        inspect.signature(cls).bind(**binding.params)
        cls(**binding.params)  # builds the physics and server objects; starts nothing
    except (TypeError, ValueError, TwinloopError) as err:
        where.rig_device(name, ("params",), f"emulator '{binding.emulator}': {err}")
    return cls


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
    safe_state = dict(binding.safe_state) or dict(getattr(emulator, "safe_state", {}))
    for signal in safe_state:
        spec = signals.get(signal)
        if spec is None or not spec.writable:
            what = "no such signal" if spec is None else "the signal is read-only"
            where.rig_device(name, ("safe_state", signal), f"safe state of '{name}.{signal}': {what}")
    read = [n for n in signals if wanted is None or f"{name}.{n}" in wanted]
    setup = DeviceSetup(name=name, transport=transport, signals=signals, timeout=binding.timeout,
                        safe_state=safe_state, address=binding.address, emulator=emulator,
                        emulator_params=dict(binding.params))
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
    return replace(d, twin_outputs=frozenset(model.outputs))


def _references(where: _Where, devices: dict[str, DevicePlan]) -> None:
    """Every referenced signal exists on the rig, with the unit the scenario wrote."""
    sc, rig = where.source.scenario, where.rig.profile.rig
    refs: list[tuple[tuple[Any, ...], str, str | None, bool]] = [
        (("sample", "signals", i), s, None, False) for i, s in enumerate(sc.sample.signals or [])]
    for i, step in enumerate(sc.steps):
        if isinstance(step, (SetStep, FaultStep)):
            kind = "set" if isinstance(step, SetStep) else "fault"
            w = getattr(step, kind)
            refs.append((("steps", i, kind, "signal"), w.signal, w.unit, True))
    for i, e in enumerate(sc.expect):
        refs.append((("expect", i, "signal"), e.signal, e.unit, False))
    for loc, ref, unit, write in refs:
        dev, _, name = ref.partition(".")
        spec = devices[dev].signals.get(name)
        if spec is None:
            where.scenario(loc, f"device '{dev}' has no signal '{name}' on rig '{rig}'; it has: "
                           f"{', '.join(sorted(devices[dev].signals))}")
        if unit is not None and unit != spec.unit:
            where.scenario(loc, f"unit '{unit}' does not match {ref}'s unit '{spec.unit}' on rig '{rig}'")
        if write and not spec.writable:
            where.scenario(loc, f"{ref} is read-only on rig '{rig}'")
        if not write and loc[0] == "expect" and name not in devices[dev].read:
            where.scenario(loc, f"{ref} is judged but not sampled; add it to sample.signals")


def plan(scenario: str | Path | ScenarioSource, rig: str | Path | RigSource | None = None) -> Plan:
    """Load a scenario and a rig profile (default: the built-in emulated rig) and check both."""
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
    _references(where, devices)
    return Plan(source, rig, {name: _twin(where, name, d) for name, d in devices.items()})
