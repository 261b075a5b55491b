"""The one pipeline: plan -> run -> record -> commit -> verify.

The CLI, the pytest plugin, fleet simulation (and next, the CI gate) all
go through it. ``plan`` has no side effects: a configuration error stops
there, before any service starts, and nothing is recorded.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, replace
from typing import Callable
from pathlib import Path

from securesystemslib.signer import Key

from twinloop.errors import ConfigError
from twinloop.harness.commit import Committed, commit, sync
from twinloop.harness.fleet_record import FleetRecord
from twinloop.harness.plan import Plan, plan
from twinloop.harness.record import RunRecord
from twinloop.harness.runner import Progress, Prompter, execute, software_versions, utc_now
from twinloop.harness.scenario import ScenarioSource
from twinloop.harness.services import Services
from twinloop.harness.verify import Verification, verify
from twinloop.rigs.profile import RigSource
from twinloop.twins.fleet import FleetProgress, simulate
from twinloop.twins.fleet_spec import MAX_SHARDS, FleetSource


@dataclass(frozen=True)
class PipelineResult:
    """A run taken through every stage."""

    plan: Plan
    record: RunRecord
    committed: Committed
    verification: Verification


class Pipeline:
    """The stages of a run over one set of services (started on first need, stopped by the caller)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    @staticmethod
    def plan(scenario: str | Path | ScenarioSource, rig: str | Path | RigSource | None = None, *,
             interactive: bool = False, dut_version: str | None = None) -> Plan:
        """Load and check scenario and rig; raises ConfigError, starts nothing.

        ``dut_version`` records the run against that version of the device under
        test instead of the scenario's ``dut.version`` (a bench testing a new build).
        """
        p = plan(scenario, rig, interactive=interactive)
        return replace(p, dut_version=dut_version) if dut_version else p

    def prepare(self, plan: Plan) -> None:
        """Start what the plan needs: Ray when it has twins, and the ledger."""
        if any(d.twin is not None for d in plan.devices.values()):
            self.services.start_ray()
        self.services.start_ledger()

    def run(self, plan: Plan, progress: Progress | None = None,
            prompter: Prompter | None = None) -> RunRecord:
        """Execute the plan on its rig; the record holds the outcome, never an exception."""
        self.prepare(plan)
        return execute(plan, progress, prompter=prompter)

    def prepare_fleet(self) -> str | None:
        """Start (or join) Ray with its dashboard, and the ledger; the dashboard's URL."""
        url = self.services.start_ray(dashboard=True)
        self.services.start_ledger()
        return url

    def simulate(self, source: FleetSource, checkpoints: Path,
                 progress: Callable[[FleetProgress], None] | None = None, *, resume: bool = False,
                 shards: int | None = None) -> FleetRecord:
        """Simulate a fleet on the services' Ray; its record, ready to commit.

        Shard checkpoints go to ``checkpoints``; with ``resume`` a simulation
        cut short goes on from them. ``shards`` overrides the file's count.
        """
        if shards is not None and not (isinstance(shards, int) and 1 <= shards <= MAX_SHARDS):
            raise ConfigError(f"shards must be a whole number from 1 to {MAX_SHARDS}, got {shards!r}", key="shards")
        self.prepare_fleet()
        plan = replace(source.plan, shards=shards) if shards is not None else source.plan
        started = utc_now()
        result = simulate(plan, checkpoints, progress=progress, resume=resume)
        where = self.services.options.ray_address or os.environ.get("RAY_ADDRESS") or "local, 127.0.0.1"
        return FleetRecord.of(source, result, str(uuid.uuid4()), started, utc_now(), where, software_versions())

    def commit(self, record: RunRecord | FleetRecord) -> Committed:
        """Outbox, IPFS, chain; the outbox keeps the run if IPFS or the chain fails."""
        return commit(record, self.services)

    def sync(self) -> list[Committed]:
        """Commit the runs waiting in the outbox (the chain or store was down when they ended), each once."""
        return sync(self.services)

    def verify(self, run_id: str, scenario_file: Path | None = None, *,
               no_scenario_file: bool = False, resimulate: bool = True, signer: Key | None = None,
               require_attestation: bool = False) -> Verification:
        """Re-check a committed run or fleet from the ledger alone."""
        return verify(run_id, self.services, scenario_file, no_scenario_file=no_scenario_file,
                      resimulate=resimulate, signer=signer, require_attestation=require_attestation)

    def run_scenario(self, scenario: str | Path | ScenarioSource, rig: str | Path | RigSource | None = None,
                     progress: Progress | None = None, *, dut_version: str | None = None) -> PipelineResult:
        """Every stage in order, as CI runs a scenario file."""
        p = self.plan(scenario, rig, dut_version=dut_version)
        record = self.run(p, progress)
        committed = self.commit(record)
        scenario_file = Path(p.source.path)
        return PipelineResult(p, committed.record, committed, self.verify(record.run_id, scenario_file))
