"""The CI gate for hardware scenarios: pass only on a verified, passing, authorised run from the ledger.

A scenario marked ``hardware: true`` cannot run in CI. The gate looks on the
RunLedger for runs of the same scenario (its SHA-256 with includes expanded, at
the same matrix point) and the same DUT id and version, newest first, and
verifies each with ``verify`` against the scenario file on disk. It passes on
the first run that the chain records as passing and that verifies; with
``require_baseline`` only the run a reviewer accepted as the baseline counts.
A run's attestation must be signed by its recorder's address or by one of
``public_keys`` (benches that sign with a standard key); a run without one
fails (kind ``unsigned``) unless ``require_attestation`` is False.

When it does not pass, ``GateResult.reason`` says what is missing, one of
``GateResult.kind``:

``no-run``              nothing recorded for this scenario hash and DUT version
``failed-runs``         only failing (or erroring) runs are recorded
``scenario-changed``    runs exist for this scenario's name and point, but the
                        file (or an included fragment) changed since
``unauthorised``        the recorder did not hold the recorder role at the run's block
``unsigned``            the run's bundle carries no signed attestation, and one is required
``no-baseline``         ``require_baseline`` and no reviewer accepted a run
``bundle-missing``      the run's bundle bytes are not in the IPFS store (local, or the --ipfs node)
``tampered``            a bundle, record or attestation does not match the chain
``ledger-unavailable``  the chain (or its node), or the --ipfs Kubo node, cannot be reached

``details`` lists every candidate's failed checks. Every kind but ``tampered``
means the evidence is missing, and the pytest plugin may skip on it
(``--ledger-missing=skip``); tampering always fails. Candidates are examined
newest first until one passes, and a tampered one among them fails the gate
even when an older run would verify: forged evidence is never outvoted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from securesystemslib.signer import Key

from twinloop.errors import (
    LedgerError,
    LedgerTamperedError,
    LedgerUnavailableError,
    RunNotFoundError,
)
from twinloop.harness.attestation import NO_ATTESTATION
from twinloop.harness.fleet_record import read_bundle
from twinloop.harness.record import RunRecord
from twinloop.harness.scenario import ScenarioSource
from twinloop.harness.services import Services
from twinloop.harness.verify import Verification, verify
from twinloop.ledger.chain import LedgerEntry, RunLedgerClient

Kind = Literal["pass", "no-run", "failed-runs", "scenario-changed", "unauthorised", "unsigned", "no-baseline",
               "bundle-missing", "tampered", "ledger-unavailable"]
#: Failed checks that mean "not (yet) acceptable evidence" rather than "forged evidence".
MISSING_CHECKS = frozenset({"recorder role", "scenario file"})
#: How many passing runs are verified before the gate gives up (newest first).
MAX_CANDIDATES = 10
#: How many runs of the same DUT version are read to tell a changed scenario from no run at all.
MAX_CHANGED_LOOKUPS = 50


@dataclass(frozen=True)
class GateResult:
    """What the gate found for one scenario point and DUT version."""

    passed: bool
    kind: Kind
    reason: str
    scenario: str
    sha256: str
    dut_id: str
    dut_version: str
    run_id: str | None = None
    entry: LedgerEntry | None = None
    details: tuple[str, ...] = ()
    verification: Verification | None = None

    @property
    def tampered(self) -> bool:
        """True when a candidate's bundle, record or attestation contradicts the chain."""
        return self.kind == "tampered"

    @property
    def missing(self) -> bool:
        """True when the gate failed for want of evidence (skippable), not because of tampering."""
        return not self.passed and not self.tampered

    def message(self) -> str:
        """The reason and, below it, every candidate's failed checks."""
        return "\n".join([self.reason, *(f"  {d}" for d in self.details if d not in self.reason)])


@dataclass
class _Candidate:
    entry: LedgerEntry
    problems: list[str] = field(default_factory=list)
    kind: Kind = "tampered"
    verification: Verification | None = None


def _short(h: str) -> str:
    return h[:12] + "…"


def _runs_text(entries: list[LedgerEntry]) -> str:
    return ", ".join(f"run {e.run_id} ({e.verdict}, block {e.block_number})" for e in entries)


def _same_point(record: RunRecord, source: ScenarioSource) -> bool:
    a, b = record.scenario.point or {}, source.point or {}
    return {k: str(v) for k, v in a.items()} == {k: str(v) for k, v in b.items()}


def _check(v: Verification, name: str) -> str | None:
    return next((c.detail for c in v.checks if c.name == name and c.status == "failed"), None)


def _unsigned(v: Verification) -> bool:
    detail = _check(v, "attestation")
    return detail is not None and NO_ATTESTATION in detail


def _judge(c: _Candidate, services: Services, scenario_file: Path, public_keys: Sequence[Key],
           require_attestation: bool) -> None:
    """Verify one candidate; fills its problems and the kind of failure (or ``pass``)."""
    e, ipfs = c.entry, services.ipfs
    if not ipfs.has(e.bundle_cid):
        c.kind = "bundle-missing"
        c.problems.append(
            f"run {e.run_id}: its bundle {e.bundle_cid} is not in {ipfs.location}; verification needs the "
            "bundle bytes: copy the bench's blocks into this store, or point --ipfs at a Kubo node that has them")
        return
    try:
        v = verify(e.run_id, services, scenario_file, trusted_keys=public_keys,
                   require_attestation=require_attestation)
    except RunNotFoundError as err:  # a block of a multi-block bundle is missing
        c.kind = "bundle-missing"
        c.problems.append(f"run {e.run_id}: part of its bundle is not in {ipfs.location}: {err}")
        return
    except LedgerTamperedError as err:
        c.problems.append(f"run {e.run_id}: {err}")
        return
    c.verification = v
    failed = [x for x in v.checks if x.status == "failed"]
    if v.ok:
        c.kind = "pass"
        return
    entry = v.entry or e
    if _check(v, "recorder role") is not None:
        c.problems.append(f"run {e.run_id} was recorded by {entry.recorder} which did not hold the recorder "
                          f"role at block {entry.block_number}")
    if (detail := _check(v, "scenario file")) is not None:
        c.problems.append(f"run {e.run_id}: scenario file changed since the run "
                          f"({detail.removeprefix(f'run {e.run_id}: ')})")
    unsigned = _unsigned(v)
    if unsigned:
        c.problems.append(f"run {e.run_id}: its bundle carries no signed attestation, and the gate requires "
                          "one (record the run again on a bench that signs its runs)")
    missing = MISSING_CHECKS | ({"attestation"} if unsigned else set())
    c.problems += [f"{x.name}: {x.detail}" for x in failed if x.name not in missing]
    names = {x.name for x in failed}
    if not names <= missing or not names:
        c.kind = "tampered"
    elif "recorder role" in names:
        c.kind = "unauthorised"
    elif unsigned:
        c.kind = "unsigned"
    else:
        c.kind = "scenario-changed"


def _changed_runs(ledger: RunLedgerClient, services: Services, source: ScenarioSource, dut_id: str,
                  dut_version: str) -> list[LedgerEntry]:
    """Runs of this DUT version recorded for this scenario's name and point under another hash."""
    found = []
    for e in list(reversed(ledger.find_runs(dut_id=dut_id, dut_version=dut_version)))[:MAX_CHANGED_LOOKUPS]:
        if e.scenario_hash == source.sha256 or not services.ipfs.has(e.bundle_cid):
            continue
        try:
            record = read_bundle(services.ipfs.cat(e.bundle_cid))
        except LedgerError:
            continue
        if (isinstance(record, RunRecord) and record.scenario.name == source.scenario.scenario
                and _same_point(record, source)):
            found.append(e)
    return found


def gate(source: ScenarioSource, services: Services, dut_version: str | None = None,
         require_baseline: bool = False, *, public_keys: Sequence[Key] = (),
         require_attestation: bool = True) -> GateResult:
    """Whether the ledger holds a verified, passing run of ``source`` for the DUT version.

    ``dut_version`` defaults to the scenario's ``dut.version``. ``public_keys``
    are the benches' standard keys trusted to sign attestations besides the
    recorders' addresses. Never raises for what the ledger holds or lacks; a
    chain that cannot be reached gives kind ``ledger-unavailable``. A
    ConfigError (bad options) is raised.
    """
    dut_id = source.scenario.dut.id
    version = dut_version or source.scenario.dut.version
    what = (f"scenario {source.id} (sha256 {_short(source.sha256)}) and DUT {dut_id} version {version}")

    def result(passed: bool, kind: Kind, reason: str, details: list[str] | None = None,
               chosen: _Candidate | None = None) -> GateResult:
        return GateResult(passed, kind, reason, source.id, source.sha256, dut_id, version,
                          chosen.entry.run_id if chosen else None, chosen.entry if chosen else None,
                          tuple(details or ()), chosen.verification if chosen else None)

    def judge(c: _Candidate) -> None:
        _judge(c, services, Path(source.path), public_keys, require_attestation)

    try:
        return _gate(source, services, dut_id, version, require_baseline, what, result, judge)
    except LedgerUnavailableError as err:
        return result(False, "ledger-unavailable", f"ledger unreachable: {err}")


def _gate(source: ScenarioSource, services: Services, dut_id: str, version: str, require_baseline: bool,
          what: str, result: Callable[..., GateResult], judge: Callable[[_Candidate], None]) -> GateResult:
    ledger = services.ledger
    runs = list(reversed(ledger.find_runs(source.sha256, dut_id, version)))  # newest first
    if not runs:
        changed = [_Candidate(e) for e in _changed_runs(ledger, services, source, dut_id, version)]
        if not changed:
            return result(False, "no-run", f"no run recorded for {what}")
        for c in changed[:3]:
            judge(c)
        tampered = any(c.kind == "tampered" for c in changed[:3])
        details = [p for c in changed[:3] for p in c.problems]
        first = changed[0]
        return result(False, "tampered" if tampered else "scenario-changed",
                      f"no run recorded for {what}: run {first.entry.run_id}: scenario file changed since the "
                      f"run (recorded sha256 {_short(first.entry.scenario_hash)}, the file with its includes "
                      f"now hashes to {_short(source.sha256)}); record a new run on the bench", details)
    if require_baseline:
        baseline = ledger.baseline(source.sha256, dut_id, version)
        if baseline is None:
            passing = [e for e in runs if e.verdict == "pass"]
            hint = (f"; runs a reviewer could accept: {', '.join(e.run_id for e in passing[:3])}"
                    if passing else "")
            return result(False, "no-baseline", f"no reviewer-accepted baseline for {what}{hint}")
        candidates = [_Candidate(next((e for e in runs if e.run_id == baseline), None) or ledger.get(baseline))]
    else:
        passing = [e for e in runs if e.verdict == "pass"]
        if not passing:
            return result(False, "failed-runs", f"the only runs recorded for {what} failed: {_runs_text(runs)}")
        candidates = [_Candidate(e) for e in passing[:MAX_CANDIDATES]]
    details: list[str] = []
    for c in candidates:
        judge(c)
        if c.kind == "tampered":
            return result(False, "tampered", f"a run recorded for {what} contradicts the chain, and tampering with "
                          f"any run fails the gate: {c.problems[0] if c.problems else c.entry.run_id}",
                          details + c.problems)
        if c.kind == "pass":
            label = "baseline run" if require_baseline else "run"
            return result(True, "pass", f"{label} {c.entry.run_id} recorded by {c.entry.recorder} in block "
                          f"{c.entry.block_number} verifies and passes for {what}", details, c)
        details += c.problems
    kinds = [c.kind for c in candidates]
    kind: Kind = next((k for k in ("tampered", "unauthorised", "unsigned", "scenario-changed", "bundle-missing")
                       if k in kinds), "tampered")
    first = next((c for c in candidates if c.kind == kind), candidates[0])
    label = "the accepted baseline" if require_baseline else "no passing run verifies"
    more = len(runs) - len(candidates) - sum(e.verdict != "pass" for e in runs) if not require_baseline else 0
    tail = f" ({more} older passing run(s) not checked)" if more > 0 else ""
    return result(False, kind, f"{label} for {what}: {first.problems[0] if first.problems else first.kind}{tail}",
                  details)
