"""Verify a recorded run from the ledger alone: chain record, bundle bytes, verdicts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from twinloop.harness.judge import judge, overall
from twinloop.harness.scenario import parse_scenario
from twinloop.harness.services import Services
from twinloop.ledger import bundle
from twinloop.ledger.chain import LedgerEntry
from twinloop.ledger.ipfs import import_file
from twinloop.errors import ConfigError, LedgerTamperedError

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


def verify(run_id: str, services: Services, scenario_file: Path | None = None) -> Verification:
    """Check run ``run_id`` end to end; tampering anywhere shows as a failed check.

    ``scenario_file`` defaults to the path recorded in the bundle, relative to
    the current directory; it is skipped (not failed) if absent.
    """
    v = Verification(run_id)
    ledger = services.ledger
    v.entry = entry = ledger.get(run_id)
    v.add("recorder role", ledger.is_recorder(entry.recorder),
          f"recorder {entry.recorder} holds the recorder role",
          f"recorder {entry.recorder} does not hold the recorder role")
    try:
        data = services.ipfs.cat(entry.bundle_cid)
    except LedgerTamperedError as err:
        v.add("bundle integrity", False, "", str(err))
        return v
    cid = import_file(data)[0]
    if not v.add("bundle integrity", cid == entry.bundle_cid, f"bundle bytes hash to {cid}",
                 f"bundle bytes hash to {cid}, chain records {entry.bundle_cid}"):
        return v
    try:
        record = bundle.decode(data)
    except ValueError as err:
        v.add("bundle format", False, "", f"bundle {cid} is not a run record: {err}")
        return v
    text = record["scenario"]["text"]
    text_hash = hashlib.sha256(text.encode()).hexdigest()
    same = (record["run_id"] == run_id and text_hash == entry.scenario_hash
            and record["dut"] == {"id": entry.dut_id, "version": entry.dut_version})
    v.add("record matches chain", same, "run id, scenario hash and DUT match the chain record",
          f"bundle says run {record['run_id']}, scenario {text_hash[:12]}, DUT {record['dut']}; chain says "
          f"scenario {entry.scenario_hash[:12]}, DUT {entry.dut_id} {entry.dut_version}")
    path = scenario_file or Path(record["scenario"]["path"])
    if path.is_file():
        file_hash = hashlib.sha256(path.read_bytes()).hexdigest()
        v.add("scenario file", file_hash == entry.scenario_hash,
              f"{path} hashes to the recorded scenario hash",
              f"{path} has changed since the run (sha256 {file_hash[:12]}, recorded "
                   f"{entry.scenario_hash[:12]})")
    else:
        v.checks.append(Check("scenario file", "skipped", f"{path} not found here"))
    try:
        source = parse_scenario(record["scenario"]["path"], text)
    except ConfigError as err:
        v.add("re-judged verdicts", False, "", f"recorded scenario no longer parses: {err}")
        return v
    verdicts = [judge(e, record["samples"]) for e in source.scenario.expect]
    recorded = {d.get("name"): (d.get("outcome"), d.get("value")) for d in record["verdicts"]}
    mismatched = [f"{x.name}: recomputed {x.outcome} ({x.value}), recorded {recorded.get(x.name)}"
                  for x in verdicts if recorded.get(x.name) != (x.outcome, x.value)]
    outcome = overall(verdicts, record.get("error"))
    if outcome != entry.verdict or outcome != record["outcome"]:
        mismatched.append(f"overall: recomputed {outcome}, bundle {record['outcome']}, chain {entry.verdict}")
    v.add("re-judged verdicts", not mismatched,
          f"{len(verdicts)} expectation(s) re-judged from raw samples: {outcome}", "; ".join(mismatched))
    return v
