"""The per-device twin as a Ray actor: assimilates samples, reports health and RUL."""

from __future__ import annotations

import io
import math
import os
import pickle
import uuid
from pathlib import Path
from typing import Any, Literal, Mapping

import ray

from twinloop.errors import TwinError
from twinloop.twins.anomaly import InnovationMonitor, filter_innovations
from twinloop.twins.enkf import EnsembleKalmanFilter
from twinloop.twins.estimate import ParticleFilter
from twinloop.twins.policy import MEMBERS, Policy, WriteLimit, keep_band, rul_seconds
from twinloop.twins.registry import models
from twinloop.twins.xp import named_module

FILTERS = {"particle": ParticleFilter, "enkf": EnsembleKalmanFilter}

MaturityLevel = Literal["model", "shadow", "twin", "intelligent"]


def _finite(signals: Mapping[str, Any], names: Mapping[str, Any]) -> dict[str, float]:
    """The signals named in ``names`` whose values are finite numbers (a NaN reading is skipped)."""
    out = {}
    for k, v in signals.items():
        if k in names and v is not None and math.isfinite(float(v)):
            out[k] = float(v)
    return out


class DeviceTwin:
    """One device's twin: physics model + estimator (particle or ensemble Kalman filter) + a columnar log.

    Plain class so it runs and tests without Ray; ``TwinActor`` wraps it. A new
    ``incarnation`` is drawn whenever the object is (re)built, so a caller can
    tell that an actor restarted and lost its history. ``anomaly`` holds the
    keywords of an ``InnovationMonitor`` run on every sample's predictive
    innovations; ``policy`` is what a ``twin``/``intelligent`` twin may do
    (see ``decide``). ``array`` picks NumPy, CuPy or ``auto`` (CuPy where a
    GPU is) for the filter's cloud.

    With ``checkpoint`` (a file path) the twin appends each logged row to a
    journal beside it (``<checkpoint>.log``, fsynced), then saves its state
    with the journal's length in bytes (a temporary file, fsync,
    ``os.replace``) after every sample and decision; a twin built again on
    the same path (Ray restarting a crashed actor) restores the state and
    cuts the journal back to that length, so a row written by a call the
    crash cut short (or torn by it) is dropped and journal and state agree.
    Samples carry sequence numbers, so one retried after a restart is
    applied once, and one ahead of a missing one waits for it.
    """

    def __init__(self, device: str, model: str, params: Mapping[str, float] | None = None,
                 level: MaturityLevel = "shadow", n_particles: int = 1000, seed: int = 0,
                 rul_every_s: float | None = None, filter: str = "particle",
                 anomaly: Mapping[str, Any] | None = None, policy: Policy | None = None,
                 array: str = "numpy", checkpoint: str | None = None) -> None:
        self.device, self.model_name, self.level = device, model, level
        self.model = models.get(model)(**dict(params or {}))
        self.xp = named_module(array)
        self.filter = FILTERS[filter](self.model, n_particles, seed, xp=self.xp)
        self.monitor = (InnovationMonitor(outputs=tuple(self.model.outputs), **anomaly)
                        if anomaly is not None else None)
        self.alarms: list[dict[str, Any]] = []
        self.policy = policy or Policy()
        self.caps: dict[str, float] = {}   # ceilings set by derate decisions, for the rest of the run
        self.fired: list[int] = []         # decisions taken (each fires once)
        self.inputs = self.model.default_inputs()
        self.log: dict[str, list[float | None]] = {"t": []}
        self.incarnation = uuid.uuid4().hex
        self.seq = 0
        self.rul_every_s = rul_every_s
        self._rul_at: float | None = None
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.restored_at: int | None = None  # the sample sequence restored from, after a restart
        #: Samples that arrived ahead of one still missing (Ray retries calls after a restart in any order).
        self.waiting: dict[int, tuple[float, dict[str, float]]] = {}
        self.journal_bytes = 0  # the journal's length when the state was last saved
        if self.checkpoint is not None:
            if self.checkpoint.exists():
                self._restore()
            else:
                with open(self._journal_path(), "wb") as f:  # a fresh twin: no rows of an earlier one
                    os.fsync(f.fileno())
                self._save()

    def ready(self) -> str:
        """The incarnation id; answering at all means the model was built."""
        return self.incarnation

    _STATE = ("inputs", "seq", "_rul_at", "monitor", "alarms", "caps", "fired", "waiting", "journal_bytes")
    _NOT_SAVED = ("model", "xp")  # the filter's model and array module: rebuilt from the arguments

    def _journal_path(self) -> Path:
        return self.checkpoint.with_name(self.checkpoint.name + ".log")

    def _save(self) -> None:
        """Write the state (not the log, which the journal holds) atomically and durably."""
        tmp = self.checkpoint.with_name(self.checkpoint.name + ".tmp")
        with open(tmp, "wb") as f:
            state = {k: getattr(self, k) for k in self._STATE}
            state["filter"] = {k: v for k, v in vars(self.filter).items() if k not in self._NOT_SAVED}
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.checkpoint)

    def _journal(self, row: dict[str, Any]) -> None:
        """Append one row, on disk before the state that counts it is saved."""
        with open(self._journal_path(), "ab") as f:
            pickle.dump(row, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
            self.journal_bytes = f.tell()

    def _restore(self) -> None:
        """State from the checkpoint; the journal cut back to the length it had then, and its rows logged."""
        with open(self.checkpoint, "rb") as f:
            state = pickle.load(f)
        vars(self.filter).update(state.pop("filter"))
        for key, value in state.items():
            setattr(self, key, value)
        journal = self._journal_path()
        size = journal.stat().st_size if journal.exists() else 0
        if size < self.journal_bytes:
            raise TwinError(f"twin of '{self.device}': checkpoint at sample {self.seq} needs {self.journal_bytes} "
                            f"bytes of its journal {journal}, which holds {size}")
        with open(journal, "r+b") as f:
            if size > self.journal_bytes:  # rows of a sample the crash cut short (maybe torn): not in the state
                f.truncate(self.journal_bytes)
                os.fsync(f.fileno())
            data = io.BytesIO(f.read(self.journal_bytes))
        rows: list[dict[str, Any]] = []
        try:
            while data.tell() < self.journal_bytes:
                rows.append(pickle.load(data))
        except (EOFError, pickle.UnpicklingError) as err:
            raise TwinError(f"twin of '{self.device}': its journal {journal} is unreadable at row {len(rows) + 1}: "
                            f"{err}") from err
        if len(rows) != self.seq:
            raise TwinError(f"twin of '{self.device}': checkpoint at sample {self.seq} but its journal "
                            f"holds {len(rows)} rows")
        for row in rows:
            self._log_row(row)
        self.restored_at = self.seq

    def _log_row(self, est: Mapping[str, Any]) -> None:
        # One entry per row in every column (None where a quantity was not computed, e.g. the
        # innovation of an output whose reading was NaN), so columns line up with ``t``.
        row = len(self.log["t"])
        self.log["t"].append(float(est["t"]))
        for key in est:
            self.log.setdefault(key, [None] * row)
        for key, column in self.log.items():
            if key != "t":
                column.append(est.get(key))

    def assimilate(self, t: float, signals: Mapping[str, float], seq: int | None = None
                   ) -> tuple[str, int, list[dict[str, Any]], int | None]:
        """Take one sample of named signals (inputs and outputs); ``seq`` numbers it from 1.

        Returns (incarnation, samples taken, alarms, restored_at): the anomaly
        monitor's alarms raised by this call, and the sequence this twin was
        restored from after a restart (else None). A sample already taken (a
        call Ray retried after a restart) is acknowledged, not applied; one
        ahead of a missing one waits for it, so samples apply in order.
        """
        if seq is not None and seq > self.seq + 1:
            self.waiting[seq] = (float(t), dict(signals))
            if self.checkpoint is not None:
                self._save()
        alarms: list[dict[str, Any]] = []
        if seq is None or seq == self.seq + 1:
            alarm = self._take(t, signals)
            alarms += [alarm] if alarm else []
            while self.seq + 1 in self.waiting:
                alarm = self._take(*self.waiting.pop(self.seq + 1))
                alarms += [alarm] if alarm else []
        return self.incarnation, self.seq, alarms, self.restored_at

    def _take(self, t: float, signals: Mapping[str, float]) -> dict[str, Any] | None:
        """Apply one sample: update the filter, log a row, checkpoint; returns an anomaly alarm or None."""
        self.inputs.update(_finite(signals, self.model.inputs))
        self.filter.update(t, self.inputs, _finite(signals, self.model.outputs))
        est = self.filter.estimate()
        alarm = None
        if self.monitor is not None:
            found = self.monitor.update(filter_innovations(self.filter, predictive=True))
            est["anomaly"] = 1.0 if found is not None else 0.0
            if found is not None:
                alarm = dict(found.as_dict(), t=float(t), message=str(found))
                self.alarms.append(alarm)
        est.update({f"innovation_{k}": v for k, v in self.filter.last_innovation.items()})
        est.update({f"predicted_{k}": v for k, v in self.filter.last_prediction.items()})
        est.update({f"predicted_{k}_std": v for k, v in self.filter.last_prediction_std.items()})
        if self.rul_every_s is not None:
            due = self._rul_at is None or t - self._rul_at >= self.rul_every_s
            rul = self.filter.predict_rul(self.inputs) if due else {}
            if due:
                self._rul_at = float(t)
            est.update({k: rul.get(k) for k in ("rul_p05_s", "rul_p50_s", "rul_p95_s")})
        est["t"] = float(t)
        self._log_row(est)
        self.seq += 1
        if self.checkpoint is not None:
            self._journal(est)
            self._save()
        return alarm

    def decide(self, commanded: Mapping[str, float]) -> dict[str, Any]:
        """What the twin does now: the band each of its setpoints may take, and the decisions that fired.

        ``commanded`` is what the scenario last asked of each setpoint. RUL
        decisions (``intelligent``) are checked first, on the twin's RUL under
        its present inputs; a derate lowers the setpoint's ceiling for the rest
        of the run. Then each ``keep`` narrows its setpoint's band to the
        values whose prediction stays within the limit, nearest the command.
        Returns ``{"bands": {signal: {low, high, feasible, predicted, keep}},
        "fired": [decision, ...]}``.
        """
        p = self.policy
        fired: list[dict[str, Any]] = []
        if p.decide and self.filter.x is not None:
            rul = self.filter.predict_rul(self.inputs)
            for i, d in enumerate(p.decide):
                value = rul.get(f"rul_{d.rul}_s")
                if i in self.fired or not rul_seconds(value) < d.below_s:
                    continue
                self.fired.append(i)
                for name, ceiling in d.derate.items():
                    self.caps[name] = min(self.caps.get(name, ceiling), ceiling)
                fired.append({"decision": i, "t": self.filter.t, "rul": d.rul, "rul_s": value,
                              "below_s": d.below_s, "derate": dict(d.derate), "maintenance": d.maintenance})
        bands: dict[str, dict[str, Any]] = {}
        cloud = None
        for name, lim in p.writes.items():
            low, high = lim.low, min(lim.high, self.caps.get(name, lim.high))
            band: dict[str, Any] = {"low": low, "high": high, "feasible": True, "predicted": None, "keep": None}
            for k in (k for k in p.keep if k.write == name):
                if self.filter.x is None:
                    break
                if cloud is None:
                    drawn = self.filter.samples()
                    stride = max(1, self.filter.n // MEMBERS)
                    cloud = {key: v[::stride] for key, v in drawn.items()}
                target = commanded.get(name, self.inputs.get(name, low))
                low, high, ok, predicted = keep_band(self.model, cloud, self.inputs, k, WriteLimit(low, high),
                                                     target)
                band = {"low": low, "high": high, "feasible": ok, "predicted": predicted,
                        "keep": f"{k.quantity} {k.direction} {k.limit:g}"}
            bands[name] = band
        if self.checkpoint is not None:
            self._save()
        return {"bands": bands, "fired": fired}

    def estimate(self) -> dict[str, float | None]:
        """Latest state, health and remaining useful life (seconds; None beyond the horizon)."""
        est: dict[str, float | None] = dict(self.filter.estimate())
        est.update(self.filter.predict_rul(self.inputs))
        est["t"] = self.filter.t
        return est

    def current_inputs(self) -> dict[str, float]:
        """The inputs the twin is running on (last sampled, else the model's defaults)."""
        return dict(self.inputs)

    def anomalies(self) -> list[dict[str, Any]]:
        """Every anomaly alarm raised so far."""
        return list(self.alarms)

    def history(self) -> dict[str, list[float | None]]:
        """Every estimate logged so far, one column per quantity."""
        return {k: list(v) for k, v in self.log.items()}


@ray.remote(max_restarts=3, max_task_retries=-1, num_cpus=0)
class TwinActor(DeviceTwin):
    """DeviceTwin as a Ray actor (one per device in HIL runs)."""
