"""Execute a plan: drive the steps on a clock, sample every device, feed the twins, judge, record.

The run never raises for what happens on the rig or in a twin: a transport
error, a lost twin, Ctrl-C or SIGTERM end it with outcome ``error`` and every
sample taken so far. Every way out goes through the rig's safe state.
"""

from __future__ import annotations

import math
import platform
import signal
import threading
import time
import traceback
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable, Iterator

from twinloop.config import to_ns
from twinloop.errors import TransportError, TwinError, TwinloopError
from twinloop.harness.clock import NS, Clock, RealClock, SimulatedClock
from twinloop.harness.judge import JUDGE_VERSION, judge_all, overall, seconds_text, step_failures
from twinloop.harness.plan import Action, Plan
from twinloop.harness.record import (Calls, DutInfo, Event, RigInfo, RunRecord, Samples, ScenarioInfo,
                                     TwinResult)
from twinloop.rigs.rig import Rig
from twinloop.twins.group import TwinGroup, TwinSetup

Progress = Callable[[float, float], None]
#: Shows an operator instruction and returns when the operator has acted.
Prompter = Callable[[str], None]
PACKAGES = ("twinloop", "numpy", "pint", "pymodbus", "ray", "web3", "vyper", "pydantic", "rfc8785")


class StepError(TwinloopError):
    """A step could not do what the scenario asked (an ``until`` that timed out as an error)."""


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


def utc_now() -> str:
    """Now in UTC, ISO 8601 to the millisecond: when a record started and finished."""
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

    def __init__(self, plan: Plan, clock: Clock, progress: Progress | None,
                 prompter: Prompter | None) -> None:
        self.plan, self.sc, self.clock, self.progress = plan, plan.source.scenario, clock, progress
        self.prompter = prompter
        self.run_id = str(uuid.uuid4())
        self.rig = Rig({name: d.setup for name, d in plan.devices.items()})
        self.samples = Samples(columns={f"{dev}.{n}": [] for dev, d in plan.devices.items() for n in d.read})
        self.events: list[Event] = []
        self.calls = Calls()
        setups = {dev: TwinSetup(d.twin.model, dict(d.twin.params), d.twin.level, d.twin.particles,
                                 rul_every_s=d.twin.rul_every, filter=d.twin.filter,
                                 anomaly=d.twin.anomaly.model_dump() if d.twin.anomaly else None,
                                 policy=d.policy, array=d.twin.array)
                  for dev, d in plan.devices.items() if d.twin is not None}
        self.twins = TwinGroup(self.run_id, setups) if setups else None
        #: Twins that act on their device, and per setpoint: what the scenario asked, the band the twin
        #: allows, and what was last written.
        self.acting = {dev: d.policy for dev, d in plan.devices.items() if d.twin is not None and d.policy}
        self.commanded: dict[str, dict[str, float]] = {dev: {} for dev in self.acting}
        self.bands: dict[str, dict[str, tuple[float, float]]] = {dev: {} for dev in self.acting}
        self.applied: dict[str, dict[str, float]] = {dev: {} for dev in self.acting}
        self.held: dict[str, dict[str, tuple[float, float] | None]] = {dev: {} for dev in self.acting}
        self.decided_at: dict[str, float] = {}
        self.active = {dev: list(d.initial or d.read) for dev, d in plan.devices.items()}
        self.powered = {dev: True for dev in plan.devices}
        self.t_ns = 0
        self.period_ns = to_ns(self.sc.sample.every)
        self.next_ns = 0
        self.total_s = self.sc.duration()
        self.row: dict[str, float | None] = {}
        self.continued: list[str] = []  # transport errors run past (on_error: continue)

    @property
    def t(self) -> float:
        return self.t_ns / NS

    def execute(self) -> RunRecord:
        started, error = utc_now(), None
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
                    for problem in self.rig.close():
                        self.events.append(Event(t=self.t, kind="error", message=problem))
        finally:
            twins, twin_error = self.twin_results()
        error = error or twin_error
        if not error and self.continued:
            error = (f"{len(self.continued)} transport error(s) run past (on_error: continue); "
                     f"first: {self.continued[0]}")
        src, rig = self.plan.source, self.plan.rig
        record = RunRecord(
            judge_version=JUDGE_VERSION, run_id=self.run_id,
            scenario=ScenarioInfo(name=self.sc.scenario, path=src.path, sha256=src.sha256, text=src.text,
                                  point=src.point),
            rig=RigInfo(name=rig.profile.rig, sha256=rig.sha256, clock=self.clock.kind,
                        units=dict(self.plan.units or {})),
            dut=DutInfo(id=self.sc.dut.id, version=self.plan.dut_version or self.sc.dut.version),
            software=software_versions(), started_at=started, finished_at=utc_now(),
            samples=self.samples, events=self.events, calls=self.calls, twins=twins,
            outcome="error", error=error)
        record.verdicts = judge_all(self.plan.measures, record)
        record.outcome = overall(record.verdicts, error, step_failures(record))
        return record

    def steps(self) -> None:
        self.wait(0)  # the sample at t = 0
        for action in self.plan.actions:
            t0 = self.t_ns
            event = getattr(self, f"do_{action.kind}")(action)
            event.data.update(step=action.index, duration_s=(self.t_ns - t0) / NS)
            self.events.append(event)
            if event.data.get("failed"):
                break  # an until that failed the run: the later steps assumed it held

    # --- steps -------------------------------------------------------------------------

    def do_wait(self, a: Action) -> Event:
        self.wait(to_ns(a.over or 0.0))
        return Event(t=self.t, kind="wait", value=a.over)

    def do_set(self, a: Action) -> Event:
        self.write(a.device, a.signal, a.value)
        return Event(t=self.t, kind="set", device=a.device, signal=a.signal, value=a.value, note=a.note)

    def do_fault(self, a: Action) -> Event:
        dev = a.device
        if self.twins and dev in self.twins.actors:
            self.check_twins(drain=True)  # the estimate must follow every sample sent so far
            self.events.append(Event(t=self.t, kind="twin_estimate", device=dev,
                                     note=f"before fault: {a.note}".strip(": "),
                                     data={"estimate": self.twins.estimate(dev)}))
        if a.fault_kind is None:  # the world acts, not the scenario's command: no twin in between
            self.write_raw(dev, a.signal, a.value)
            if a.signal in self.commanded.get(dev, {}):
                self.commanded[dev][a.signal] = self.applied[dev][a.signal] = a.value
            return Event(t=self.t, kind="fault", device=dev, signal=a.signal, value=a.value, note=a.note)
        self.rig.inject(dev, a.fault_kind, a.duration, a.signal, a.value)
        return Event(t=self.t, kind="fault", device=dev, signal=a.signal, value=a.value, note=a.note,
                     data={"kind": a.fault_kind, "for_s": a.duration})

    def do_ramp(self, a: Action) -> Event:
        start = a.start if a.start is not None else self.read(a.device, [a.signal])[a.signal]
        if start is None:
            raise StepError(f"ramp of {a.device}.{a.signal}: its present value could not be read")
        over = a.over if a.over is not None else abs(a.value - start) / a.rate
        t0, span = self.t_ns, to_ns(over)

        def on_tick(t_ns: int) -> None:
            frac = 1.0 if span == 0 else min(1.0, (t_ns - t0) / span)
            self.write(a.device, a.signal, start + (a.value - start) * frac)

        self.write(a.device, a.signal, start)
        self.wait(span, on_tick=on_tick)
        self.write(a.device, a.signal, a.value)
        return Event(t=t0 / NS, kind="ramp", device=a.device, signal=a.signal, value=a.value, note=a.note,
                     data={"from": start, "over_s": over})

    def do_until(self, a: Action) -> Event:
        what = f"{a.device}.{a.signal}" if a.signal else f"twin {a.device} {a.estimate}"
        limit = f"> {a.above:g}" if a.above is not None else f"< {a.below:g}"

        def met() -> bool:
            if a.signal is not None:
                v = self.row.get(f"{a.device}.{a.signal}")
            else:
                self.check_twins(drain=True)
                v = self.twins.estimate(a.device).get(a.estimate)
            return v is not None and (v > a.above if a.above is not None else v < a.below)

        t0 = self.t_ns
        ok = met() or self.wait(to_ns(a.timeout), stop_when=met)
        event = Event(t=t0 / NS, kind="until", device=a.device, signal=a.signal,
                      message=f"{what} {limit}: " + (f"held after {seconds_text((self.t_ns - t0) / NS)}" if ok
                                                     else f"timed out after {seconds_text(a.timeout)}"),
                      data={"met": ok})
        if not ok and a.on_timeout == "error":
            raise StepError(f"step {a.index + 1} (until {what} {limit}) timed out after {a.timeout:g} s")
        if not ok:
            event.data["failed"] = True
        return event

    def do_sample(self, a: Action) -> Event:
        if a.every is not None:
            self.period_ns = to_ns(a.every)
            self.next_ns = self.t_ns + self.period_ns
        if a.signals is not None:
            self.active = {dev: list(names) for dev, names in a.signals.items()}
        return Event(t=self.t, kind="sample", value=a.every,
                     data={"signals": [f"{d}.{n}" for d, ns in self.active.items() for n in ns]})

    def do_power(self, a: Action) -> Event:
        on = a.state == "on"
        self.rig.power(a.device, on)
        self.powered[a.device] = on
        if on:
            self.reconnect(a.device)
        return Event(t=self.t, kind="power", device=a.device, note=a.note or a.state or "")

    def do_reconnect(self, a: Action) -> Event:
        self.reconnect(a.device)
        return Event(t=self.t, kind="reconnect", device=a.device)

    def do_prompt(self, a: Action) -> Event:
        if self.clock.kind == "simulated" or self.prompter is None:
            return Event(t=self.t, kind="prompt", message=a.message,
                         note="not shown: simulated clock (emulated rig)")
        t0 = time.monotonic_ns()
        self.prompter(a.message)
        waited = time.monotonic_ns() - t0
        self.clock.hold(waited)  # the schedule resumes where it paused: no burst of ticks
        return Event(t=self.t, kind="prompt", message=a.message, note="acknowledged",
                     data={"waited_s": waited / NS})

    def do_call(self, a: Action) -> Event:
        args = ", ".join(map(repr, a.args))
        ok, result = self.call(a.device, "call", f"{a.method}({args})",
                               lambda: self.rig.transports[a.device].call(a.method, a.args))
        return Event(t=self.t, kind="call", device=a.device, note=a.note,
                     data={"method": a.method, "args": list(a.args), "ok": ok,
                           **({"result": result} if ok and result is not None else {})})

    def do_mark(self, a: Action) -> Event:
        return Event(t=self.t, kind="mark", note=a.note)

    # --- time and I/O -------------------------------------------------------------------

    def wait(self, duration_ns: int, on_tick: Callable[[int], None] | None = None,
             stop_when: Callable[[], bool] | None = None) -> bool:
        """Sample at every tick up to ``t + duration``; ticks missed while late are recorded, not burst.

        ``on_tick(t_ns)`` runs after each sample, as a set step does, so a sample
        always shows the value in force over the period that ended at it (what a
        twin needs to replay the period); ``stop_when()`` after it, ending the
        wait early (returns True) once it holds.
        """
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
            if on_tick:
                on_tick(self.t_ns)
            self.next_ns += self.period_ns
            if self.progress:
                self.progress(self.t, self.total_s)
            if stop_when is not None and stop_when():
                return True
        self.clock.sleep_until(end)
        self.t_ns = end
        return False

    def call(self, device: str, op: str, args: str, fn: Callable[[], Any]) -> tuple[bool, Any]:
        """One transport call with the scenario's retries; logged. Returns (ok, result)."""
        for attempt in range(self.sc.retries + 1):
            t0, began = time.perf_counter(), time.monotonic()
            try:
                result = fn()
            except TransportError as err:
                self.calls.append(self.t, device, op, args, False, time.perf_counter() - t0, str(err))
                if self.rig.faulted(device, began):  # the scenario injected this: expected, not a rig error
                    self.events.append(Event(t=self.t, kind="transport_error", device=device,
                                             message=str(err), note="expected: injected fault"))
                    self.reconnect(device, quiet=True)  # drops any late answer to this call
                    return False, None
                if attempt < self.sc.retries:
                    self.events.append(Event(t=self.t, kind="retry", device=device, message=str(err),
                                             data={"attempt": attempt + 1}))
                    self.reconnect(device, quiet=True)
                    continue
                if self.sc.on_error == "stop":
                    raise
                self.continued.append(str(err))
                self.events.append(Event(t=self.t, kind="transport_error", device=device, message=str(err),
                                         note="continued (on_error: continue)"))
                self.reconnect(device, quiet=True)
                return False, None
            self.calls.append(self.t, device, op, args, True, time.perf_counter() - t0)
            return True, result
        return False, None  # unreachable: the loop returns or raises

    def read(self, device: str, names: list[str]) -> dict[str, float | None]:
        ok, values = self.call(device, "read", ",".join(names), lambda: self.rig.transports[device].read(names))
        return values if ok else {n: None for n in names}

    def write(self, device: str, name: str, value: float) -> None:
        """A write the scenario asks for; a setpoint an acting twin governs is kept inside the twin's band."""
        policy = self.acting.get(device)
        if policy is None or name not in policy.writes:
            self.write_raw(device, name, value)
            return
        changed = self.commanded[device].get(name) != value
        self.commanded[device][name] = value
        if changed and self.powered[device]:
            self.decide(device)  # re-decide before the new command reaches the device
        self.apply(device, name)

    def write_raw(self, device: str, name: str, value: float) -> None:
        self.call(device, "write", f"{name}={value:g}", lambda: self.rig.transports[device].write(name, value))

    def apply(self, device: str, name: str, why: dict[str, Any] | None = None) -> None:
        """Write ``name`` as commanded, clipped into the twin's band; a clip or a move by the twin is an event."""
        commanded = self.commanded[device].get(name)
        if commanded is None:
            return
        low, high = self.bands[device].get(name, (-math.inf, math.inf))
        value = min(max(commanded, low), high)
        previous = self.applied[device].get(name)
        if value != previous:
            self.write_raw(device, name, value)
            self.applied[device][name] = value
        held = self.held[device].get(name)
        now = (commanded, value) if value != commanded else None
        if now == held:
            return
        self.held[device][name] = now
        if now is not None or held is not None:
            self.events.append(Event(
                t=self.t, kind="twin_setpoint", device=device, signal=name, value=value,
                message=(f"twin holds {device}.{name} at {value:g} (commanded {commanded:g})" if now
                         else f"twin releases {device}.{name} to the commanded {commanded:g}"),
                data={"commanded": commanded, "band": [low, high], **(why or {})}))

    def decide(self, device: str) -> None:
        """Ask ``device``'s twin for its bands and decisions, record them, and apply them to the device."""
        self.check_twins(drain=True)  # decide on every sample sent so far
        for name in self.acting[device].writes:  # a setpoint the scenario never set: govern its present value
            if name not in self.commanded[device] and self.row.get(f"{device}.{name}") is not None:
                self.commanded[device][name] = self.applied[device][name] = self.row[f"{device}.{name}"]
        out = self.twins.decide(device, dict(self.commanded[device]))
        self.decided_at[device] = self.t
        for f in out["fired"]:
            rul = f"RUL {f['rul']} {seconds_text(f['rul_s']) if f['rul_s'] is not None else 'beyond horizon'}"
            limit = f"below {seconds_text(f['below_s'])}"
            if f["derate"]:
                what = ", ".join(f"{device}.{k} <= {v:g}" for k, v in f["derate"].items())
                self.events.append(Event(t=self.t, kind="derate", device=device, message=f"{rul} {limit}: {what}",
                                         data=f))
            if f["maintenance"]:
                self.events.append(Event(t=self.t, kind="maintenance_request", device=device,
                                         message=f"{rul} {limit}: {f['maintenance']}", data=f))
        for name, band in out["bands"].items():
            self.bands[device][name] = (band["low"], band["high"])
            if not band["feasible"]:
                self.events.append(Event(
                    t=self.t, kind="twin_setpoint", device=device, signal=name,
                    message=f"no {device}.{name} within its declared range keeps {band['keep']}; "
                            f"holding the least unsafe value {band['low']:g}", data=band))
            self.apply(device, name, {"predicted": band["predicted"], "keep": band["keep"]})

    def reconnect(self, device: str, quiet: bool = False) -> None:
        """Close and reopen a device's transport (a failure to reopen shows on the next call)."""
        transport = self.rig.transports[device]
        transport.close()
        try:
            transport.open()
        except TransportError:
            if not quiet:
                raise

    def sample(self) -> None:
        """Read every device, append one whole row, and send each device's values to its twin."""
        t_read = self.clock.elapsed_ns() / NS
        rows = {dev: self.read(dev, names) for dev, names in self.active.items()
                if names and self.powered[dev]}
        self.row = {f"{dev}.{k}": v for dev, values in rows.items() for k, v in values.items()}
        self.samples.append(self.t, t_read, self.row)
        if self.twins:
            for dev, values in rows.items():
                d = self.plan.devices[dev]
                if d.twin is not None:
                    hidden = d.twin_outputs if d.twin.level == "model" else frozenset()
                    self.twins.assimilate(dev, self.t, {k: v for k, v in values.items()
                                                        if k not in hidden and v is not None})
            self.check_twins()
            for dev, policy in self.acting.items():
                every = policy.every_s or 0.0
                if dev in rows and self.t - self.decided_at.get(dev, -math.inf) >= every:
                    self.decide(dev)

    def check_twins(self, drain: bool = False) -> None:
        """Record twin failures and restarts as events; a lost twin ends the run as an error."""
        if not self.twins:
            return
        problems = self.twins.drain() if drain else self.twins.problems()
        for dev, alarm in self.twins.alarms:
            self.events.append(Event(t=alarm["t"], kind="twin_anomaly", device=dev, message=alarm["message"],
                                     data={k: v for k, v in alarm.items() if k not in ("t", "message")}))
        self.twins.alarms.clear()
        for p in problems:
            self.events.append(Event(t=p.t, kind=p.kind, device=p.device, message=p.message,
                                     note="" if p.fatal else "restored"))
        fatal = [p for p in problems if p.fatal]
        if fatal:
            raise TwinError(fatal[0].message)

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


def execute(plan: Plan, progress: Progress | None = None, clock: Clock | None = None,
            prompter: Prompter | None = None) -> RunRecord:
    """Run ``plan`` and judge it; ``progress(t, total)`` is called after every sample."""
    if clock is None:
        clock = SimulatedClock() if plan.clock_kind == "simulated" else RealClock()
    return _Run(plan, clock, progress, prompter).execute()
