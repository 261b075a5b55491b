"""Execute a plan: drive the steps on a clock, sample every device, feed the twins, judge, record.

The run never raises for what happens on the rig or in a twin: a transport
error, a lost twin, Ctrl-C or SIGTERM end it with outcome ``error`` and every
sample taken so far. Every way out goes through the rig's safe state.
"""

from __future__ import annotations

import platform
import signal
import threading
import traceback
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable, Iterator

from twinloop.config import to_ns
from twinloop.errors import TwinError, TwinloopError
from twinloop.harness.clock import NS, Clock, RealClock, SimulatedClock
from twinloop.harness.judge import JUDGE_VERSION, judge_all, overall
from twinloop.harness.plan import Plan
from twinloop.harness.record import (DutInfo, Event, RigInfo, RunRecord, Samples, ScenarioInfo,
                                     TwinResult)
from twinloop.harness.scenario import FaultStep, SetStep, WaitStep, Write
from twinloop.rigs.rig import Rig
from twinloop.twins.group import TwinGroup, TwinSetup

Progress = Callable[[float, float], None]
PACKAGES = ("twinloop", "numpy", "pymodbus", "ray", "web3", "vyper", "pydantic", "rfc8785")


class Interrupted(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so the same clean-up runs."""


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


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within this block SIGTERM raises ``Interrupted`` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Run:
    """One run in progress; ``execute`` below is the entry point."""

    def __init__(self, plan: Plan, clock: Clock, progress: Progress | None) -> None:
        self.plan, self.sc, self.clock, self.progress = plan, plan.source.scenario, clock, progress
        self.run_id = str(uuid.uuid4())
        self.rig = Rig({name: d.setup for name, d in plan.devices.items()})
        self.samples = Samples(columns={f"{dev}.{n}": [] for dev, d in plan.devices.items() for n in d.read})
        self.events: list[Event] = []
        setups = {dev: TwinSetup(d.twin.model, dict(d.twin.params), d.twin.level, d.twin.particles)
                  for dev, d in plan.devices.items() if d.twin is not None}
        self.twins = TwinGroup(self.run_id, setups) if setups else None
        self.t_ns = 0
        self.period_ns = to_ns(self.sc.sample.every)
        self.next_ns = 0
        self.total_s = self.sc.duration()

    @property
    def t(self) -> float:
        return self.t_ns / NS

    def execute(self) -> RunRecord:
        started, error = _now(), None
        try:
            with sigterm_interrupts():
                try:
                    self.rig.open()
                    self.clock.listeners.append(self.rig.advance)
                    if self.twins:
                        self.twins.start()
                    self.clock.start()
                    self.steps()
                    self.check_twins(drain=True)
                except TwinloopError as err:
                    error = str(err)
                    self.events.append(Event(t=self.t, kind="error", message=error))
                except KeyboardInterrupt as err:
                    error = f"interrupted by {'SIGTERM' if isinstance(err, Interrupted) else 'SIGINT (Ctrl-C)'}"
                    self.events.append(Event(t=self.t, kind="interrupted", message=error))
                except Exception as err:  # a harness bug: still an error outcome, never a lost run
                    error = f"internal error: {type(err).__name__}: {err}"
                    self.events.append(Event(t=self.t, kind="error", message=error,
                                             data={"traceback": traceback.format_exc()}))
                finally:
                    safe_state_error = self.safe_state()
                    error = error or safe_state_error
                    self.rig.close()
        finally:
            twins, twin_error = self.twin_results()
        error = error or twin_error
        verdicts = judge_all(self.sc.expect, self.samples)
        src, rig = self.plan.source, self.plan.rig
        return RunRecord(
            judge_version=JUDGE_VERSION, run_id=self.run_id,
            scenario=ScenarioInfo(name=self.sc.scenario, path=src.path, sha256=src.sha256, text=src.text),
            rig=RigInfo(name=rig.profile.rig, sha256=rig.sha256, clock=self.clock.kind),
            dut=DutInfo(id=self.sc.dut.id, version=self.sc.dut.version),
            software=software_versions(), started_at=started, finished_at=_now(),
            samples=self.samples, events=self.events, twins=twins, verdicts=verdicts,
            outcome=overall(verdicts, error), error=error)

    def steps(self) -> None:
        self.wait(0)  # the sample at t = 0
        for step in self.sc.steps:
            if isinstance(step, WaitStep):
                self.wait(to_ns(step.wait))
            elif isinstance(step, SetStep):
                self.write("set", step.set)
            elif isinstance(step, FaultStep):
                self.write("fault", step.fault)

    def wait(self, duration_ns: int) -> None:
        """Sample at every tick up to ``t + duration``; ticks missed while late are recorded, not burst."""
        end = self.t_ns + duration_ns
        while self.next_ns <= end:
            late = self.clock.sleep_until(self.next_ns)
            due = min(self.next_ns + late, end)
            missed = (due - self.next_ns) // self.period_ns
            if missed:
                self.events.append(Event(
                    t=self.next_ns / NS, kind="overrun",
                    message=f"{late / NS:.3f} s late; {missed} sample period(s) skipped",
                    data={"late_s": late / NS, "missed": missed}))
                self.next_ns += missed * self.period_ns
            self.t_ns = self.next_ns
            self.sample()
            self.next_ns += self.period_ns
            if self.progress:
                self.progress(self.t, self.total_s)
        self.clock.sleep_until(end)
        self.t_ns = end

    def sample(self) -> None:
        """Read every device, append one whole row, and send each device's values to its twin."""
        t_read = self.clock.elapsed_ns() / NS
        rows = {dev: self.rig.transports[dev].read(d.read) for dev, d in self.plan.devices.items() if d.read}
        self.samples.append(self.t, t_read, {f"{dev}.{k}": v for dev, values in rows.items()
                                             for k, v in values.items()})
        if self.twins:
            for dev, values in rows.items():
                d = self.plan.devices[dev]
                if d.twin is not None:
                    hidden = d.twin_outputs if d.twin.level == "model" else frozenset()
                    self.twins.assimilate(dev, self.t, {k: v for k, v in values.items() if k not in hidden})
            self.check_twins()

    def check_twins(self, drain: bool = False) -> None:
        """Record twin failures and restarts as events; a lost twin ends the run as an error."""
        if not self.twins:
            return
        problems = self.twins.drain() if drain else self.twins.problems()
        for p in problems:
            self.events.append(Event(t=p.t, kind=p.kind, device=p.device, message=p.message))
        if problems:
            raise TwinError(problems[0].message)

    def write(self, kind: str, w: Write) -> None:
        dev, _, name = w.signal.partition(".")
        if kind == "fault" and self.twins and dev in self.twins.actors:
            self.check_twins(drain=True)  # the estimate must follow every sample sent so far
            self.events.append(Event(t=self.t, kind="twin_estimate", device=dev,
                                     note=f"before fault: {w.note}".strip(": "),
                                     data={"estimate": self.twins.estimate(dev)}))
        self.rig.transports[dev].write(name, w.value)
        self.events.append(Event(t=self.t, kind=kind, device=dev, signal=name, value=w.value, note=w.note))

    def safe_state(self) -> str | None:
        """Apply every open device's safe state, log it, and return the first failure, if any."""
        failure = None
        for r in self.rig.apply_safe_state():
            note = "failed" if r.error else ("applied" if r.values else "none declared")
            self.events.append(Event(t=self.t, kind="safe_state", device=r.device, note=note,
                                     message=r.error or "", data={"values": r.values}))
            failure = failure or (r.error and f"safe state of device '{r.device}' failed: {r.error}")
        return failure

    def twin_results(self) -> tuple[dict[str, TwinResult], str | None]:
        """Every twin's final estimate and history; the twins' actors are stopped either way."""
        if not self.twins:
            return {}, None
        try:
            raw = self.twins.results()
        except TwinError as err:
            return {}, str(err)
        finally:
            self.twins.stop()
        out = {}
        for dev, r in raw.items():
            spec = self.plan.devices[dev].twin
            out[dev] = TwinResult(model=spec.model, level=spec.level, inputs=r["inputs"],
                                  final={k: v for k, v in r["final"].items() if not isinstance(v, str)},
                                  history=r["history"])
        return out, None


def execute(plan: Plan, progress: Progress | None = None, clock: Clock | None = None) -> RunRecord:
    """Run ``plan`` and judge it; ``progress(t, total)`` is called after every sample."""
    if clock is None:
        clock = SimulatedClock() if plan.clock_kind == "simulated" else RealClock()
    return _Run(plan, clock, progress).execute()
