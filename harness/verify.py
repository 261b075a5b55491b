"""Verify a recorded run or fleet from the ledger alone: chain record, bundle bytes, file, verdicts or outcome."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from securesystemslib.signer import Key

from twinloop.errors import ConfigError, LedgerTamperedError
from twinloop.harness.attestation import verify_attestation
from twinloop.harness.expand import split_expanded
from twinloop.harness.fleet_record import FleetRecord, GroupOutcome, read_bundle
from twinloop.harness.judge import JUDGE_VERSION, judge_all, overall, resolve, step_failures
from twinloop.harness.record import RunRecord
from twinloop.harness.scenario import Bounds, load_scenario, parse_scenario
from twinloop.harness.services import Services
from twinloop.ledger.chain import LedgerEntry
from twinloop.ledger.ipfs import import_file
from twinloop.twins.fleet_shard import run_local
from twinloop.twins.fleet_spec import parse_fleet

Status = Literal["ok", "failed", "skipped"]


@dataclass(frozen=True)
class Check:
    """One verification step and what it found."""

    name: str
    status: Status
    detail: str


@dataclass
class Verification:
    """Every check made for one run; ``ok`` only if none failed."""

    run_id: str
    entry: LedgerEntry | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the run is on chain and nothing failed."""
        return self.entry is not None and all(c.status != "failed" for c in self.checks)

    def add(self, name: str, passed: bool, ok: str, failed: str) -> bool:
        """Record a check with the message for its result; failures name the run."""
        self.checks.append(Check(name, "ok", ok) if passed
                           else Check(name, "failed", f"run {self.run_id}: {failed}"))
        return passed


def _repo_root(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        if (directory / ".git").exists():
            return directory
    return None


def find_scenario_file(recorded_path: str, named: Path | None) -> tuple[Path | None, list[Path]]:
    """The scenario file to compare: the one named, else the recorded path here or in the repository."""
    if named is not None:
        return (named if named.is_file() else None), [named]
    recorded = Path(recorded_path)
    tried = [recorded]
    if not recorded.is_absolute() and (root := _repo_root(Path.cwd().resolve())) is not None:
        tried.append(root / recorded)
    return next((p for p in tried if p.is_file()), None), tried


def _check_scenario_file(v: Verification, record: RunRecord, entry: LedgerEntry, named: Path | None,
                         no_scenario_file: bool) -> None:
    if no_scenario_file:
        v.checks.append(Check("scenario file", "skipped", "not compared (--no-scenario-file); the "
                              "recorded scenario text was used as recorded"))
        return
    path, tried = find_scenario_file(record.scenario.path, named)
    if path is None:
        v.add("scenario file", False, "", f"scenario file not found (looked for "
              f"{', '.join(str(p) for p in tried)}); name it with --scenario FILE, or pass "
              "--no-scenario-file to accept the recorded text without a file")
        return
    docs, point = split_expanded(record.scenario.path, record.scenario.text)
    if len(docs) == 1 and point is None:
        file_hash = hashlib.sha256(path.read_bytes()).hexdigest()
    else:  # re-expand the file with its includes, at the recorded matrix point
        try:
            file_hash = load_scenario(path, point).sha256
        except ConfigError as err:
            v.add("scenario file", False, "", f"{path} no longer expands to the recorded scenario: {err}")
            return
    what = "with its included files " if len(docs) > 1 else ""
    v.add("scenario file", file_hash == entry.scenario_hash,
          f"{path} {what}hashes to the recorded scenario hash",
          f"{path} {what}has changed since the run (sha256 {file_hash[:12]}, recorded "
          f"{entry.scenario_hash[:12]})")


def _rejudge(v: Verification, record: RunRecord, entry: LedgerEntry) -> None:
    try:
        source = parse_scenario(record.scenario.path, record.scenario.text)
    except ConfigError as err:
        v.add("re-judged verdicts", False, "", f"recorded scenario no longer parses: {err}")
        return
    units = dict(record.rig.units) or {e.signal: e.unit for e in source.scenario.expect
                                       if isinstance(e, Bounds) and e.unit}  # format 1 had no units
    try:
        measures = resolve(source, units)
    except (ConfigError, KeyError) as err:
        v.add("re-judged verdicts", False, "", f"recorded scenario cannot be judged with the recorded "
              f"units: {err}")
        return
    verdicts = judge_all(measures, record)
    recorded = {r.name: (r.outcome, r.value) for r in record.verdicts}
    mismatched = [f"{x.name}: recomputed {x.outcome} ({x.value}), recorded {recorded.get(x.name)}"
                  for x in verdicts if recorded.get(x.name) != (x.outcome, x.value)]
    outcome = overall(verdicts, record.error, step_failures(record))
    if outcome != entry.verdict or outcome != record.outcome:
        mismatched.append(f"overall: recomputed {outcome}, bundle {record.outcome}, chain {entry.verdict}")
    if record.judge_version != JUDGE_VERSION:
        mismatched = [f"{m} (recorded with judge version {record.judge_version}, now "
                      f"{JUDGE_VERSION})" for m in mismatched]
    v.add("re-judged verdicts", not mismatched,
          f"{len(verdicts)} expectation(s) re-judged from raw samples: {outcome}", "; ".join(mismatched))


def _verify_fleet(v: Verification, record: FleetRecord, entry: LedgerEntry, named: Path | None,
                  no_file: bool, resimulate: bool) -> None:
    """A fleet's bundle against its chain record and file; then simulated again (the outcome is deterministic)."""
    text_hash = hashlib.sha256(record.fleet.text.encode()).hexdigest()
    key = (record.run_id, text_hash, record.dut_id, record.dut_version)
    v.add("record matches chain", key == (v.run_id, entry.scenario_hash, entry.dut_id, entry.dut_version)
          and text_hash == record.fleet.sha256 and entry.verdict == record.outcome,
          "run id, fleet file hash and twinloop version match the chain record",
          f"bundle says run {record.run_id}, fleet {text_hash[:12]}, {record.dut_id} {record.dut_version}; "
          f"chain says fleet {entry.scenario_hash[:12]}, {entry.dut_id} {entry.dut_version}")
    if no_file:
        v.checks.append(Check("fleet file", "skipped", "not compared (--no-scenario-file)"))
    else:
        path, tried = find_scenario_file(record.fleet.path, named)
        if path is None:
            v.add("fleet file", False, "", f"fleet file not found (looked for {', '.join(map(str, tried))}); "
                  "name it with --scenario FILE, or pass --no-scenario-file")
        else:
            file_hash = hashlib.sha256(path.read_bytes()).hexdigest()
            v.add("fleet file", file_hash == entry.scenario_hash, f"{path} hashes to the recorded fleet hash",
                  f"{path} has changed since the run (sha256 {file_hash[:12]}, recorded {entry.scenario_hash[:12]})")
    if not resimulate:
        v.checks.append(Check("re-simulated", "skipped", "not simulated again (--no-resimulate)"))
        return
    try:
        plan = parse_fleet(record.fleet.text, record.fleet.path).plan
    except ConfigError as err:
        v.add("re-simulated", False, "", f"recorded fleet file no longer loads: {err}")
        return
    again = [GroupOutcome.model_validate(vars(g)).model_dump() for g in run_local(plan)]
    recorded = [g.model_dump() for g in record.groups]
    differ = [f"group {a['name']}: {k} recomputed {a[k]}, recorded {b[k]}"
              for a, b in zip(again, recorded) for k in a if a[k] != b[k]]
    if len(again) != len(recorded):
        differ.append(f"{len(again)} groups recomputed, {len(recorded)} recorded")
    if differ and record.run.array != "numpy":
        differ.append(f"(the run stepped on {record.run.array}; this check steps on NumPy)")
    v.add("re-simulated", not differ, f"{plan.units:,} units simulated again on NumPy in this process: "
          "every group's outcome is identical", "; ".join(differ[:5]))


def verify(run_id: str, services: Services, scenario_file: Path | None = None, *,
           no_scenario_file: bool = False, resimulate: bool = True, signer: Key | None = None,
           require_attestation: bool = False, trusted_keys: Sequence[Key] = ()) -> Verification:
    """Check run ``run_id`` end to end; tampering anywhere shows as a failed check.

    The scenario file is the one named, else the recorded path here or at the
    repository's root; a missing file fails unless ``no_scenario_file``. A
    fleet is simulated again unless ``resimulate`` is False. A run's
    attestation must be signed by ``signer`` (a bench's standard public key)
    where one is given; else by whichever of ``trusted_keys`` (the benches'
    standard keys, as the CI gate holds them) it names, else by its
    recorder's address. A run without one passes that check as skipped
    unless ``require_attestation``.
    """
    v = Verification(run_id)
    ledger = services.ledger
    v.entry = entry = ledger.get(run_id)
    v.add("transaction", entry.tx_status == 1, f"recorded by transaction {entry.tx_hash} in block "
          f"{entry.block_number}, which succeeded", f"transaction {entry.tx_hash} has status {entry.tx_status}")
    v.add("recorder role", ledger.recorder_was_authorised(entry),
          f"recorder {entry.recorder} held the recorder role at block {entry.block_number}",
          f"recorder {entry.recorder} did not hold the recorder role at block {entry.block_number}, "
          "when the run was recorded")
    check_bundle(v, entry, services, scenario_file, no_scenario_file=no_scenario_file, resimulate=resimulate,
                 signer=signer, require_attestation=require_attestation, trusted_keys=trusted_keys)
    return v


def expected_signer(record: RunRecord, recorder: str, signer: Key | None, trusted_keys: Sequence[Key]) -> str | Key:
    """Whose signature the attestation must carry: ``signer``, else the trusted key it names, else the recorder.

    A key is picked by the key id the envelope claims, so an envelope naming a
    trusted key must still verify under it; one naming none is held to the
    recorder's address.
    """
    if signer is not None:
        return signer
    named = {s.keyid for s in record.attestation.signatures} if record.attestation else set()
    return next((k for k in trusted_keys if k.keyid in named), recorder)


def check_bundle(v: Verification, entry: LedgerEntry, services: Services, scenario_file: Path | None = None, *,
                 no_scenario_file: bool = False, resimulate: bool = True, signer: Key | None = None,
                 require_attestation: bool = False, trusted_keys: Sequence[Key] = ()) -> None:
    """The bundle checks of ``verify`` against a chain record ``entry``: integrity, format, attestation,
    record matches chain, scenario file, re-judged verdicts (or a fleet's re-simulation).

    Shared by single runs and batched runs (``twinloop.harness.batch_verify``).
    """
    run_id = v.run_id
    try:
        data = services.ipfs.cat(entry.bundle_cid)
    except LedgerTamperedError as err:
        v.add("bundle integrity", False, "", str(err))
        return
    cid = import_file(data)[0]
    if not v.add("bundle integrity", cid == entry.bundle_cid, f"bundle bytes hash to {cid}",
                 f"bundle bytes hash to {cid}, chain records {entry.bundle_cid}"):
        return
    try:
        record = read_bundle(data)
    except LedgerTamperedError as err:
        v.add("bundle format", False, "", f"bundle {cid}: {err}")
        return
    if isinstance(record, FleetRecord):
        _verify_fleet(v, record, entry, scenario_file, no_scenario_file, resimulate)
        return
    for c in verify_attestation(data, expected_signer(record, entry.recorder, signer, trusted_keys),
                                required=require_attestation):
        v.checks.append(Check(c.name, c.status, c.detail if c.status != "failed" else f"run {run_id}: {c.detail}"))
    text_hash = hashlib.sha256(record.scenario.text.encode()).hexdigest()
    dut = (record.dut.id, record.dut.version)
    same = (record.run_id == run_id and text_hash == entry.scenario_hash == record.scenario.sha256
            and dut == (entry.dut_id, entry.dut_version))
    v.add("record matches chain", same, "run id, scenario hash and DUT match the chain record",
          f"bundle says run {record.run_id}, scenario {text_hash[:12]}, DUT {' '.join(dut)}; chain says "
          f"scenario {entry.scenario_hash[:12]}, DUT {entry.dut_id} {entry.dut_version}")
    _check_scenario_file(v, record, entry, scenario_file, no_scenario_file)
    _rejudge(v, record, entry)
