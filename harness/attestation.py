"""Signed, standard evidence for a run: an in-toto Test Result statement in a DSSE envelope.

Policy tools outside twinloop (in-toto, Conforma/OPA, anything that reads DSSE)
can check a run from this alone; twinloop's own verify checks it against the
record it travels in.

How commit and verify use it
----------------------------
- ``harness/commit.py`` signs first thing in ``commit``, before
  ``record.to_bytes()``: ``attest(record, services.signer or
  EthereumSigner(services.recorder))``, the bench's recorder key or the
  standard key named by ``$TWINLOOP_SIGNING_KEY``. The envelope goes into the
  bundle, so the bundle, envelope included, is what IPFS stores and the
  chain's CID names.
- ``harness/verify.py`` (``check_bundle``) calls ``verify_attestation`` with the
  bundle bytes and the expected signer: the ``--public-key`` given, else the
  trusted key the envelope names (the CI gate's ``--public-key`` /
  ``twinloop_public_keys``), else the recorder's address from the chain.
  Passing the bytes (not the parsed record) takes the record digest over the
  bytes as stored, independent of the code's current model. A bundle with no
  attestation gives one ``skipped`` check ("no attestation"), or a failed one
  with ``required=True`` (``--require-attestation``; the CI gate's default).

Where the envelope lives, and why
---------------------------------
In the record, as its ``attestation`` field, so the chain and contract stay as
they are and "the bundle bytes hash to the CID on chain" still holds: the CID is
taken after the envelope is in. The envelope cannot sign the bytes that contain
it, so its statement names the record by a digest of the record without the
``attestation`` field (``record_digest``): subject ``run:<run id>``. A separate
IPFS object would be unreachable from the chain record (which names one CID) and
could be dropped or swapped without any hash noticing; inside the bundle it is
covered by the CID the chain holds.

The statement
-------------
Subjects: the scenario (``scenario.path``, sha256 of the scenario as run), the
DUT (``dut:<id>@<version>``, sha256 of the canonical JSON ``{"id", "version"}``),
the DUT's firmware (``firmware:<id>@<version>``, only where the record carries
``dut.firmware_sha256``: no rig reports one yet, and none is made up) and the
record itself (``run:<run id>``, ``record_digest``).

Predicate (https://in-toto.io/attestation/test-result/v0.1):

- ``result``: ``pass`` with no marginal verdict is ``PASSED``; ``pass`` with a
  marginal one is ``WARNED``; ``fail`` and ``error`` are ``FAILED`` (the spec has
  no error value, and a broken run must never read as a pass).
- ``passedTests`` / ``warnedTests`` / ``failedTests``: expectation names; a
  passing verdict that is marginal is warned; ``fail`` and ``error`` verdicts
  are failed. A run can fail with no failed test (an ``until`` step failed, or
  the harness or rig broke), so the predicate carries one extension field,
  ``twinloop``: ``{"outcome": "pass|fail|error", "error": "..."}``, which tells a
  failure from an error. It only adds detail to a ``FAILED`` (the spec's
  monotonic rule); consumers that ignore it lose nothing.
- ``configuration``: the rig profile (``rig:<name>``, its sha256) and twinloop
  (``pkg:generic/twinloop@<version as recorded>``, annotation ``judgeVersion``).
- ``url``: only if the caller gives one (a CI or bench run page).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from securesystemslib.dsse import Envelope
from securesystemslib.signer import Key, Signer

from twinloop.errors import LedgerError, LedgerTamperedError
from twinloop.harness.record import DsseEnvelope, RunRecord
from twinloop.ledger import bundle, dsse

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
TEST_RESULT_TYPE = "https://in-toto.io/attestation/test-result/v0.1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
#: How the check of a bundle without an attestation begins (the gate tells an unsigned run by it).
NO_ATTESTATION = "no attestation: the bundle carries no signed statement"

Status = Literal["ok", "failed", "skipped"]
Result = Literal["PASSED", "WARNED", "FAILED"]


# --- the in-toto types (unrecognised fields are ignored, as the framework's parsing rules say) ---

class _InToto(BaseModel):
    model_config = ConfigDict(extra="allow")

    def to_json(self) -> dict[str, Any]:
        """The JSON form: the spec's field names, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ResourceDescriptor(_InToto):
    """in-toto v1 ResourceDescriptor; at least one of uri, digest, content."""

    name: str | None = None
    uri: str | None = None
    digest: dict[str, str] | None = None
    content: str | None = None
    downloadLocation: str | None = None
    mediaType: str | None = None
    annotations: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _identifies_something(self) -> ResourceDescriptor:
        if not (self.uri or self.digest or self.content):
            raise ValueError("a ResourceDescriptor needs one of uri, digest or content")
        return self


class TwinloopOutcome(_InToto):
    """The predicate's extension field: the record's own outcome, and its error if any."""

    outcome: Literal["pass", "fail", "error"]
    error: str | None = None


class TestResult(_InToto):
    """The Test Result predicate, v0.1."""

    __test__ = False  # not a pytest test class

    result: Result
    configuration: list[ResourceDescriptor]
    url: str | None = None
    passedTests: list[str] = Field(default_factory=list)
    warnedTests: list[str] = Field(default_factory=list)
    failedTests: list[str] = Field(default_factory=list)
    twinloop: TwinloopOutcome | None = None


class Statement(_InToto):
    """in-toto Statement v1; every subject has a digest."""

    type: Literal["https://in-toto.io/Statement/v1"] = Field(alias="_type")
    subject: list[ResourceDescriptor] = Field(min_length=1)
    predicateType: str
    predicate: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _subjects_have_digests(self) -> Statement:
        for i, s in enumerate(self.subject):
            if not s.digest:
                raise ValueError(f"subject {i} ({s.name or 'unnamed'}) has no digest")
        return self


# --- building ---------------------------------------------------------------------------

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_digest(source: RunRecord | bytes) -> str:
    """SHA-256 of the record's canonical JSON without its ``attestation`` field.

    From bundle bytes it is taken over the JSON as stored, so it does not
    depend on the fields this version of the record model knows.
    """
    if isinstance(source, RunRecord):
        raw = source.model_dump(mode="json")
    else:
        raw = bundle.decode(source)
        if not isinstance(raw, dict):
            raise LedgerTamperedError("bundle is not a run record (not a JSON object)")
    raw.pop("attestation", None)
    return _sha256(bundle.encode(raw))


def dut_digest(record: RunRecord) -> str:
    """SHA-256 of the DUT's canonical identity, ``{"id": ..., "version": ...}`` as RFC 8785 JSON."""
    return _sha256(bundle.encode({"id": record.dut.id, "version": record.dut.version}))


def _subjects(record: RunRecord, digest: str) -> list[tuple[str, ResourceDescriptor]]:
    """The subjects the record calls for, each with the role messages name it by."""
    dut = f"{record.dut.id}@{record.dut.version}"
    out = [("scenario", ResourceDescriptor(name=record.scenario.path,
                                           digest={"sha256": record.scenario.sha256})),
           ("DUT", ResourceDescriptor(name=f"dut:{dut}", digest={"sha256": dut_digest(record)}))]
    if record.dut.firmware_sha256 is not None:
        out.append(("DUT firmware", ResourceDescriptor(name=f"firmware:{dut}",
                                                       digest={"sha256": record.dut.firmware_sha256})))
    out.append(("run record", ResourceDescriptor(name=f"run:{record.run_id}", digest={"sha256": digest})))
    return out


def _tests(record: RunRecord) -> dict[str, list[str]]:
    tests: dict[str, list[str]] = {"passedTests": [], "warnedTests": [], "failedTests": []}
    for v in record.verdicts:
        key = ("failedTests" if v.outcome != "pass" else "warnedTests" if v.marginal else "passedTests")
        tests[key].append(v.name)
    return tests


def _result(record: RunRecord) -> Result:
    if record.outcome != "pass":
        return "FAILED"
    return "WARNED" if any(v.marginal for v in record.verdicts) else "PASSED"


def _configuration(record: RunRecord) -> list[ResourceDescriptor]:
    version = record.software.get("twinloop")
    purl = "pkg:generic/twinloop" + (f"@{version}" if version and version != "not installed" else "")
    return [ResourceDescriptor(name=f"rig:{record.rig.name}", digest={"sha256": record.rig.sha256}),
            ResourceDescriptor(name="twinloop", uri=purl,
                               annotations={"judgeVersion": record.judge_version})]


def _predicate(record: RunRecord, url: str | None = None) -> TestResult:
    return TestResult(result=_result(record), configuration=_configuration(record), url=url,
                      twinloop=TwinloopOutcome(outcome=record.outcome, error=record.error),
                      **_tests(record))


def statement(record: RunRecord, *, url: str | None = None) -> dict[str, Any]:
    """The in-toto Statement v1 (Test Result predicate) for ``record``, as JSON data."""
    subjects = [s.to_json() for _, s in _subjects(record, record_digest(record))]
    return Statement.model_validate({"_type": STATEMENT_TYPE, "subject": subjects,
                                     "predicateType": TEST_RESULT_TYPE,
                                     "predicate": _predicate(record, url).to_json()}).to_json()


def attest(record: RunRecord, signer: Signer, *, url: str | None = None) -> RunRecord:
    """A copy of ``record`` carrying its statement, signed by ``signer``, in ``attestation``.

    If the record already carries an envelope for the same statement, the new
    signature is added to it (a second key co-signs); otherwise it is replaced.
    """
    payload = bundle.encode(statement(record, url=url))
    existing = _envelope(record.attestation) if record.attestation is not None else None
    try:
        envelope = dsse.sign(payload, PAYLOAD_TYPE, signer, existing)
    except Exception as err:  # signers (KMS, HSM, files) report failures with many types
        raise LedgerError(f"run {record.run_id}: signing its attestation with "
                          f"{dsse.describe(signer.public_key)} failed: {err}") from err
    return record.model_copy(update={"attestation": DsseEnvelope.model_validate(envelope.to_dict())})


def _envelope(attestation: DsseEnvelope) -> Envelope | None:
    try:  # from_dict rewrites the dicts it is given, so give it a fresh copy
        return Envelope.from_dict(attestation.model_dump(mode="json"))
    except (KeyError, ValueError, TypeError):
        return None


# --- verifying --------------------------------------------------------------------------

@dataclass(frozen=True)
class AttestationCheck:
    """One attestation check, shaped like ``harness.verify.Check``."""

    name: str
    status: Status
    detail: str

    @property
    def ok(self) -> bool:
        """True unless the check failed."""
        return self.status != "failed"


def _digest_text(d: ResourceDescriptor) -> str:
    return ", ".join(f"{k} {v[:12]}" for k, v in sorted((d.digest or {}).items())) or "no digest"


def _descriptor_text(d: ResourceDescriptor) -> str:
    notes = ", ".join(f"{k}={v}" for k, v in sorted((d.annotations or {}).items()))
    return " ".join(p for p in (d.name or "unnamed", d.uri, d.digest and _digest_text(d),
                                notes and f"({notes})") if p)


def _compare_subjects(expected: list[tuple[str, ResourceDescriptor]],
                      found: list[ResourceDescriptor]) -> list[str]:
    problems, unmatched = [], list(found)
    for role, want in expected:
        same = [s for s in unmatched if s.name == want.name and s.digest == want.digest]
        if same:
            unmatched.remove(same[0])
            continue
        named = [s for s in unmatched if s.name == want.name]
        if named:
            unmatched.remove(named[0])
            why = " (the record was changed after it was signed)" if role == "run record" else ""
            problems.append(f"{role} subject {want.name}: the attestation has {_digest_text(named[0])}, "
                            f"the record {_digest_text(want)}{why}")
        else:
            problems.append(f"{role} subject {_descriptor_text(want)} is missing")
    problems += [f"subject {_descriptor_text(s)} is not this record's" for s in unmatched]
    return problems


def _lists(predicate: TestResult) -> dict[str, list[str]]:
    """Each test name and the lists it is in."""
    where: dict[str, list[str]] = {}
    for key in ("passedTests", "warnedTests", "failedTests"):
        for name in getattr(predicate, key):
            where.setdefault(name, []).append(key)
    return where


def _compare_tests(expected: TestResult, found: TestResult) -> list[str]:
    want, got = _lists(expected), _lists(found)
    return [f"{name}: the attestation lists it in {' and '.join(got.get(name, [])) or 'no list'}, the "
            f"record's verdict puts it in {' and '.join(want.get(name, [])) or 'none (no such verdict)'}"
            for name in sorted(want.keys() | got.keys()) if want.get(name) != got.get(name)]


def verify_attestation(source: RunRecord | bytes, expected_signer: str | Key, *,
                       required: bool = False) -> list[AttestationCheck]:
    """Check the attestation a record or bundle carries against the record and the expected signer.

    ``expected_signer`` is the recorder's Ethereum address (the chain entry's
    ``recorder``) or a securesystemslib public ``Key`` (a bench configured with
    a standard key). Every problem is a ``failed`` check whose detail names it;
    the checks after a bad signature are not made (the statement is not the
    signer's). Bundle bytes that are not a run record raise ``LedgerTamperedError``.
    """
    record = source if isinstance(source, RunRecord) else RunRecord.from_bytes(source)
    checks: list[AttestationCheck] = []

    def add(name: str, problems: list[str], ok: str) -> bool:
        checks.append(AttestationCheck(name, "failed", "; ".join(problems)) if problems
                      else AttestationCheck(name, "ok", ok))
        return not problems

    if record.attestation is None:
        return [AttestationCheck("attestation", "failed" if required else "skipped",
                                 f"{NO_ATTESTATION} (written before twinloop signed run evidence, "
                                 "or committed unsigned)")]
    envelope = _envelope(record.attestation)
    if envelope is None:
        problems = ["the envelope is not valid DSSE (bad base64 or a repeated key id)"]
    elif envelope.payload_type != PAYLOAD_TYPE:
        problems = [f"payload type is {envelope.payload_type!r}, not {PAYLOAD_TYPE!r}"]
    else:
        problems = []
    if not add("attestation", problems, f"DSSE envelope ({PAYLOAD_TYPE}) with "
               f"{len(envelope.signatures) if envelope else 0} signature(s)") or envelope is None:
        return checks

    key = dsse.expected_key(expected_signer)
    signed, message = dsse.check_signature(envelope, key)
    if not add("attestation signature", [] if signed else [message], message):
        return checks

    try:
        found = Statement.model_validate(bundle.decode(envelope.payload))
        if found.predicateType != TEST_RESULT_TYPE:
            raise ValueError(f"predicateType is {found.predicateType!r}, not {TEST_RESULT_TYPE!r}")
        predicate = TestResult.model_validate(found.predicate)
    except (ValueError, ValidationError) as err:
        add("attestation statement", [f"the signed payload is not an in-toto Test Result "
                                      f"statement: {err}"], "")
        return checks
    add("attestation statement", [], f"in-toto Statement v1, predicate {TEST_RESULT_TYPE}")

    digest = record_digest(source)
    expected = _predicate(record)
    add("attestation subjects", _compare_subjects(_subjects(record, digest), found.subject),
        f"scenario, DUT and record digest {digest[:12]} match the record")
    outcome = TwinloopOutcome(outcome=record.outcome, error=record.error)
    result_problems = ([f"the attestation says {predicate.result}, the record's outcome "
                        f"{record.outcome} gives {expected.result}"]
                       if predicate.result != expected.result else [])
    if predicate.twinloop is not None and predicate.twinloop != outcome:
        result_problems.append(f"the attestation records outcome {predicate.twinloop.outcome} "
                               f"(error {predicate.twinloop.error!r}), the record {record.outcome} "
                               f"(error {record.error!r})")
    add("attestation result", result_problems, f"{predicate.result} agrees with the record's "
        f"outcome {record.outcome}")
    add("attestation tests", _compare_tests(expected, predicate),
        f"passed, warned and failed tests agree with the record's {len(record.verdicts)} verdict(s)")
    same = [d.to_json() for d in expected.configuration] == [d.to_json() for d in predicate.configuration]
    add("attestation configuration", [] if same else [
        f"the attestation names {'; '.join(map(_descriptor_text, predicate.configuration))}, the "
        f"record {'; '.join(map(_descriptor_text, expected.configuration))}"],
        "rig profile and twinloop version match the record")
    return checks
