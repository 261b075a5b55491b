"""The fleet record: a fleet simulation's summary as a ledger bundle, beside the run record.

Same rules as ``RunRecord``: plain typed data, canonical JSON bytes (RFC 8785),
non-finite numbers stored as ``null``. On chain a fleet is keyed like a run:
the fleet file's SHA-256 stands for the scenario hash and ``fleet:<name>`` at
the twinloop version for the DUT, because the result depends on the file and
on the model code that stepped it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from twinloop.errors import LedgerTamperedError
from twinloop.harness.record import FORMAT, FORMAT_V1, Data, Finite, RunRecord, validated
from twinloop.ledger import bundle
from twinloop.ledger.chain import LedgerEntry
from twinloop.twins.fleet_result import FleetResult  # plain data: no Ray, which commit, gate and verify must not need
from twinloop.twins.fleet_spec import FleetSource

FLEET_FORMAT = "twinloop.fleet/1"


class FleetInfo(Data):
    """The fleet file exactly as simulated: its name, where it came from, its text and SHA-256."""

    name: str
    path: str
    sha256: str
    text: str


class GroupOutcome(Data):
    """One group's outcome (``twins.fleet_result.GroupResult``): failure times, failures over time, survivors."""

    name: str
    model: str
    units: int
    failed: int
    fraction_failed: Finite
    failure_time_s: dict[str, Finite]
    mean_failure_time_s: Finite
    bin_width_s: Finite
    failures_per_bin: list[int]
    survivors: int
    survivor_health: dict[str, Finite]
    survivor_rul_s: dict[str, Finite]


class FleetRun(Data):
    """How the simulation went: where and on what it ran, how fast, what Ray had to restart."""

    ray: str
    shards: int
    array: str
    notes: list[str] = Field(default_factory=list)
    events: list[str] = Field(default_factory=list)
    wall_s: float
    stepping_s: float
    twin_steps: int
    twin_steps_per_s: float
    restarts: int


class FleetRecord(Data):
    """A fleet simulation's bundle: the file, the outcome every shard layout gives, and the run's facts."""

    format: Literal["twinloop.fleet/1"] = FLEET_FORMAT
    run_id: str
    fleet: FleetInfo
    seed: int
    horizon_s: float
    dt_s: float
    steps: int
    units: int
    software: dict[str, str]
    started_at: str
    finished_at: str
    groups: list[GroupOutcome]
    run: FleetRun
    outcome: Literal["pass"] = "pass"

    @property
    def dut_id(self) -> str:
        return f"fleet:{self.fleet.name}"

    @property
    def dut_version(self) -> str:
        return self.software.get("twinloop", "unknown")

    def ledger_entry(self, cid: str) -> LedgerEntry:
        """What the chain stores for this fleet, with its bundle at ``cid``."""
        return LedgerEntry(run_id=self.run_id, scenario_hash=self.fleet.sha256, dut_id=self.dut_id,
                           dut_version=self.dut_version, bundle_cid=cid, verdict=self.outcome)

    def to_bytes(self) -> bytes:
        """Canonical JSON (RFC 8785): the bundle's exact bytes."""
        return bundle.encode(self.model_dump(mode="json"))

    @classmethod
    def of(cls, source: FleetSource, result: FleetResult, run_id: str, started_at: str, finished_at: str,
           ray_where: str, software: dict[str, str]) -> "FleetRecord":
        """The record of ``result``, simulated from ``source``."""
        out = result.as_dict()
        return cls(run_id=run_id, fleet=FleetInfo(name=result.fleet, path=source.path, sha256=source.sha256,
                                                  text=source.text),
                   seed=result.seed, horizon_s=result.horizon_s, dt_s=result.dt_s, steps=result.steps,
                   units=result.units, software=software, started_at=started_at, finished_at=finished_at,
                   groups=out["groups"],
                   run=FleetRun(ray=ray_where, array=result.array, notes=result.notes, **out["run"]))



def read_bundle(data: bytes) -> RunRecord | FleetRecord:
    """A bundle's record, whichever kind (run or fleet) its ``format`` names."""
    try:
        raw = bundle.decode(data)
    except ValueError as err:
        raise LedgerTamperedError(f"bundle is not JSON: {err}") from err
    if isinstance(raw, dict) and raw.get("format") == FLEET_FORMAT:
        return validated(FleetRecord, raw, FLEET_FORMAT)
    if isinstance(raw, dict) and raw.get("format") not in (FORMAT, FORMAT_V1):
        raise LedgerTamperedError(f"bundle format {raw.get('format')!r} is not one of "
                                  f"{FORMAT!r}, {FORMAT_V1!r}, {FLEET_FORMAT!r}")
    return RunRecord.from_bytes(data)
