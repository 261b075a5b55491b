"""Run a scenario on a rig with twins beside it, producing a run record (plain data)."""

from __future__ import annotations

import platform
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable

import ray

from twinloop.harness.clock import RealClock, SimulatedClock
from twinloop.harness.judge import Verdict, judge, overall
from twinloop.harness.scenario import FaultStep, ScenarioSource, SetStep, WaitStep, Write
from twinloop.ledger.bundle import FORMAT
from twinloop.rigs.profile import RigProfile
from twinloop.rigs.rig import Rig
from twinloop.config import raise_at
from twinloop.errors import ConfigError, TwinError, TwinloopError
from twinloop.twins.actor import TwinActor
from twinloop.twins.registry import models

Progress = Callable[[float, float], None]
PACKAGES = ("twinloop", "numpy", "pymodbus", "ray", "web3", "vyper", "pydantic")


@dataclass
class RunResult:
    """What a run produced: the record to commit, and its judged outcome."""

    run_id: str
    record: dict[str, Any]
    verdicts: list[Verdict]
    outcome: str
    error: str | None = None
    twins: dict[str, dict[str, Any]] = field(default_factory=dict)


def software_versions() -> dict[str, str]:
    """Versions of Python and the packages a run's result depends on."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class _Run:
    """The state of one run in progress; ``execute`` below is the entry point."""

    def __init__(self, source: ScenarioSource, rig: Rig, clock: SimulatedClock | RealClock,
                 progress: Progress | None) -> None:
        self.sc, self.rig, self.clock, self.progress = source.scenario, rig, clock, progress
        self.samples: dict[str, list[float | None]] = {"t": []}
        self.events: list[dict[str, Any]] = []
        self.twins: dict[str, Any] = {}
        self.twin_outputs: dict[str, set[str]] = {}
        wanted = self.sc.sample.signals
        self.read_plan = {dev: [n for n in tr.signals if wanted is None or f"{dev}.{n}" in wanted]
                          for dev, tr in rig.transports.items()}
        for dev, names in self.read_plan.items():
            for n in names:
                self.samples[f"{dev}.{n}"] = []

    def check_units(self, source: ScenarioSource) -> None:
        """Every referenced signal exists on the rig and units agree, before any step."""
        refs: list[tuple[tuple[Any, ...], str, str | None]] = []
        for i, step in enumerate(self.sc.steps):
            if isinstance(step, (SetStep, FaultStep)):
                kind = "set" if isinstance(step, SetStep) else "fault"
                w: Write = getattr(step, kind)
                refs.append((("steps", i, kind, "signal"), w.signal, w.unit))
        for i, e in enumerate(self.sc.expect):
            refs.append((("expect", i, "signal"), e.signal, e.unit))
        for loc, ref, unit in refs:
            dev, _, name = ref.partition(".")
            spec = self.rig.transports[dev].signals.get(name)
            if spec is None:
                known = ", ".join(sorted(self.rig.transports[dev].signals))
                raise_at(source.path, source.text, loc, f"device '{dev}' has no signal '{name}' on "
                         f"rig '{self.rig.profile.rig}'; it has: {known}")
            if unit is not None and unit != spec.unit:
                raise_at(source.path, source.text, loc, f"unit '{unit}' does not match {ref}'s unit "
                         f"'{spec.unit}' on rig '{self.rig.profile.rig}'")

    def start_twins(self) -> None:
        for dev, spec in self.sc.devices.items():
            if spec.twin is not None:
                self.twin_outputs[dev] = set(models.get(spec.twin.model).outputs)
                self.twins[dev] = TwinActor.remote(dev, spec.twin.model, spec.twin.params,
                                                   spec.twin.level, spec.twin.particles)
        # Surface a bad model name or parameter now, as a twin error.
        for dev, actor in self.twins.items():
            try:
                ray.get(actor.history.remote())
            except ray.exceptions.RayActorError as err:
                raise TwinError(f"twin of device '{dev}' did not start: {err}") from err

    def sample(self) -> None:
        """Read every device, then append one whole row (columns never go ragged)."""
        t = self.clock.now
        rows = {dev: self.rig.transports[dev].read(names) for dev, names in self.read_plan.items()}
        self.samples["t"].append(t)
        for dev, values in rows.items():
            for n, value in values.items():
                self.samples[f"{dev}.{n}"].append(value)
            if dev in self.twins:
                model_only = self.sc.devices[dev].twin.level == "model"
                self.twins[dev].assimilate.remote(t, {k: v for k, v in values.items()
                                                      if not (model_only and k in self.twin_outputs[dev])})

    def write(self, kind: str, w: Write) -> None:
        dev, _, name = w.signal.partition(".")
        if kind == "fault" and dev in self.twins:
            before = ray.get(self.twins[dev].estimate.remote())
            self.events.append({"t": self.clock.now, "kind": "twin_estimate", "device": dev,
                                "note": f"before fault: {w.note}".strip(": "), "estimate": before})
        self.rig.transports[dev].write(name, w.value)
        self.events.append({"t": self.clock.now, "kind": kind, "device": dev, "signal": name,
                            "value": w.value, "note": w.note})

    def wait(self, seconds: float, total: float) -> None:
        period = self.sc.sample.every
        end = self.clock.now + seconds
        while self.clock.now + period <= end + 1e-9:
            self.clock.advance(period)
            self.sample()
            if self.progress:
                self.progress(self.clock.now, total)
        if end - self.clock.now > 1e-9:
            self.clock.advance(end - self.clock.now)

    def steps(self) -> None:
        total = self.sc.duration()
        self.sample()
        for step in self.sc.steps:
            if isinstance(step, WaitStep):
                self.wait(step.wait, total)
            elif isinstance(step, SetStep):
                self.write("set", step.set)
            elif isinstance(step, FaultStep):
                self.write("fault", step.fault)

    def twin_results(self) -> dict[str, dict[str, Any]]:
        out = {}
        for dev, actor in self.twins.items():
            spec = self.sc.devices[dev].twin
            out[dev] = {"model": spec.model, "level": spec.level,
                        "final": ray.get(actor.estimate.remote()),
                        "history": ray.get(actor.history.remote())}
        return out


def execute(source: ScenarioSource, profile: RigProfile, rig_sha256: str,
            progress: Progress | None = None) -> RunResult:
    """Run ``source`` on the rig ``profile`` and judge it; never raises for rig failures.

    A transport or twin failure mid-run ends the run with outcome ``error`` and
    keeps every sample taken so far. Configuration errors raise before any step.
    """
    sc = source.scenario
    missing = [d for d in sc.devices if d not in profile.devices]
    if missing:
        raise ConfigError(f"rig '{profile.rig}' has no device(s) {missing} that scenario "
                          f"'{sc.scenario}' uses", file=source.path)
    clock = SimulatedClock() if profile.clock_kind == "simulated" else RealClock()
    run_id, started, error = str(uuid.uuid4()), _now(), None
    run: _Run | None = None
    twins: dict[str, dict[str, Any]] = {}
    rig = Rig(profile)
    try:
        rig.open()
        clock.listeners.append(rig.advance)
        run = _Run(source, rig, clock, progress)
        run.check_units(source)
        run.start_twins()
        run.steps()
    except ConfigError:
        raise
    except TwinloopError as err:
        error = str(err)
    except ray.exceptions.RayError as err:
        error = f"twin failed: {err}"
    finally:
        rig.close()
    if run is not None:
        if error:
            run.events.append({"t": clock.now, "kind": "error", "message": error})
        try:
            twins = run.twin_results()
        except ray.exceptions.RayError as err:
            error = error or f"twin results could not be read: {err}"
    samples = run.samples if run else {"t": []}
    verdicts = [judge(e, samples) for e in sc.expect]
    outcome = overall(verdicts, error)
    record = {
        "format": FORMAT, "run_id": run_id,
        "scenario": {"name": sc.scenario, "path": source.path, "sha256": source.sha256,
                     "text": source.text},
        "rig": {"name": profile.rig, "sha256": rig_sha256, "clock": clock.kind},
        "dut": sc.dut.model_dump(),
        "software": software_versions(),
        "started_at": started, "finished_at": _now(),
        "samples": samples, "events": run.events if run else [],
        "twins": twins,
        "verdicts": [v.to_dict() for v in verdicts],
        "outcome": outcome, "error": error,
    }
    return RunResult(run_id, record, verdicts, outcome, error, twins)
