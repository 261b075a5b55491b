"""The twins of one run: one Ray actor per device, with failures and restarts surfaced.

Samples go to the actors without waiting, but every reply is collected: an
exception inside a twin, a dead actor, or a restart (which rebuilds the twin
and loses its history) becomes a ``TwinProblem`` the runner records.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import ray

from twinloop.errors import TwinError
from twinloop.twins.actor import TwinActor
from twinloop.twins.cluster import first_line
from twinloop.twins.policy import Policy

READY_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class TwinSetup:
    """What one device's twin is built from."""

    model: str
    params: dict[str, float]
    level: str
    particles: int
    rul_every_s: float | None = None
    filter: str = "particle"
    anomaly: dict[str, Any] | None = None
    policy: Policy = Policy()
    array: str = "numpy"


@dataclass(frozen=True)
class TwinProblem:
    """A twin failed (``twin_error``) or was rebuilt by Ray (``twin_restarted``).

    A restarted twin that restored its checkpoint lost nothing: ``fatal`` is False.
    """

    device: str
    kind: str
    t: float
    message: str
    fatal: bool = True


class TwinGroup:
    """Actors named ``twinloop/<run id>/<device>``, started together and stopped together."""

    def __init__(self, run_id: str, setups: Mapping[str, TwinSetup], checkpoints: str | Path | None = None) -> None:
        self.run_id, self.setups = run_id, dict(setups)
        #: Where each twin checkpoints (one file per device); a temporary folder, removed by ``stop``, if not given.
        self._own_folder = checkpoints is None
        self.checkpoints = Path(checkpoints) if checkpoints else Path(tempfile.mkdtemp(prefix="twinloop-twins-"))
        self._seq: dict[str, int] = {}    # samples sent, per device
        self._taken: dict[str, int] = {}  # samples the twin reports applied, per device
        self.actors: dict[str, Any] = {}
        self._incarnation: dict[str, str] = {}
        self._pending: dict[Any, tuple[str, float]] = {}
        self.lost: set[str] = set()
        #: Anomaly alarms that came back with the replies, (device, alarm), until the runner takes them.
        self.alarms: list[tuple[str, dict[str, Any]]] = []

    def actor_name(self, device: str) -> str:
        """The Ray actor name of ``device``'s twin (for tools and tests)."""
        return f"twinloop/{self.run_id}/{device}"

    def start(self) -> None:
        """Create every actor and wait until each has built its model."""
        for dev, s in self.setups.items():
            self.actors[dev] = TwinActor.options(name=self.actor_name(dev)).remote(
                dev, s.model, s.params, s.level, s.particles, rul_every_s=s.rul_every_s, filter=s.filter,
                anomaly=s.anomaly, policy=s.policy, array=s.array,
                checkpoint=str(self.checkpoints / f"{dev}.ckpt"))
        for dev, actor in self.actors.items():
            try:
                self._incarnation[dev] = ray.get(actor.ready.remote(), timeout=READY_TIMEOUT_S)
            except (ray.exceptions.RayError, TimeoutError) as err:
                raise TwinError(f"twin of device '{dev}' did not start: {err}") from err

    def assimilate(self, device: str, t: float, signals: Mapping[str, float]) -> None:
        """Send one sample to ``device``'s twin; its reply is checked by ``problems``."""
        if device in self.actors and device not in self.lost:
            self._seq[device] = seq = self._seq.get(device, 0) + 1
            self._pending[self.actors[device].assimilate.remote(t, dict(signals), seq)] = (device, t)

    def problems(self, wait_s: float = 0.0) -> list[TwinProblem]:
        """Replies that arrived (all of them, waiting up to ``wait_s``), as problems found."""
        if not self._pending:
            return []
        refs = list(self._pending)
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=wait_s)
        found = []
        for ref in ready:
            device, t = self._pending.pop(ref)
            if device in self.lost:
                continue
            try:
                incarnation, taken, alarms, restored_at = ray.get(ref)
                self._taken[device] = max(self._taken.get(device, 0), taken)
                self.alarms += [(device, alarm) for alarm in alarms]
            except ray.exceptions.RayError as err:
                self.lost.add(device)
                found.append(TwinProblem(device, "twin_error", t, f"twin of device '{device}' failed "
                                         f"at t={t:g} s: {first_line(err)}"))
                continue
            if incarnation != self._incarnation[device]:
                self._incarnation[device] = incarnation
                if restored_at is None:
                    self.lost.add(device)
                    found.append(TwinProblem(device, "twin_restarted", t, f"twin of device '{device}' "
                                             f"was restarted by Ray before t={t:g} s and lost its history"))
                else:
                    found.append(TwinProblem(device, "twin_restarted", t, f"twin of device '{device}' was "
                                             f"restarted by Ray before t={t:g} s and restored from its "
                                             f"checkpoint at sample {restored_at}; no sample lost",
                                             fatal=False))
        return found

    def drain(self) -> list[TwinProblem]:
        """Wait for every outstanding reply; what is still missing then is a problem too."""
        found = self.problems(wait_s=DRAIN_TIMEOUT_S)
        for device, t in self._pending.values():
            if device not in self.lost:
                self.lost.add(device)
                found.append(TwinProblem(device, "twin_error", t, f"twin of device '{device}' did not "
                                         f"answer within {DRAIN_TIMEOUT_S:.0f} s"))
        self._pending.clear()
        for device, sent in self._seq.items():
            if device not in self.lost and self._taken.get(device, 0) != sent:
                self.lost.add(device)
                found.append(TwinProblem(device, "twin_error", 0.0, f"twin of device '{device}' applied "
                                         f"{self._taken.get(device, 0)} of the {sent} samples sent to it"))
        return found

    def estimate(self, device: str) -> dict[str, Any]:
        """The latest estimate of ``device``'s twin."""
        return self._call(device, "estimate")

    def decide(self, device: str, commanded: dict[str, float]) -> dict[str, Any]:
        """``device``'s twin's setpoint bands and fired decisions (see ``DeviceTwin.decide``)."""
        return self._call(device, "decide", commanded)

    def results(self) -> dict[str, dict[str, Any]]:
        """Final estimate, inputs and history of every twin still standing."""
        return {dev: {"final": self._call(dev, "estimate"), "inputs": self._call(dev, "current_inputs"),
                      "history": self._call(dev, "history")}
                for dev in self.actors if dev not in self.lost}

    def stop(self) -> None:
        """Kill every actor of this run; safe to call twice."""
        for actor in self.actors.values():
            try:
                ray.kill(actor, no_restart=True)
            except ray.exceptions.RayError:
                pass
        self.actors.clear()
        if self._own_folder:
            shutil.rmtree(self.checkpoints, ignore_errors=True)

    def _call(self, device: str, method: str, *args: Any) -> Any:
        try:
            return ray.get(getattr(self.actors[device], method).remote(*args), timeout=DRAIN_TIMEOUT_S)
        except (ray.exceptions.RayError, TimeoutError) as err:
            self.lost.add(device)
            raise TwinError(f"twin of device '{device}' failed: {first_line(err)}") from err
