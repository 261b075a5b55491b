"""The run record: one typed, versioned definition shared by runner, commit, verify and report.

It is plain data. ``to_bytes`` gives canonical JSON (RFC 8785), so the same
record always gives the same bytes and the same CID, in any language. Values
that are not finite numbers (NaN, inf) are stored as ``null``, and are
defined that way once, here, so a live judgement and a re-judgement of the
bundle see the same data.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, SerializerFunctionWrapHandler,
                      StringConstraints, ValidationError, model_serializer)

from twinloop.errors import LedgerTamperedError
from twinloop.ledger import bundle
from twinloop.ledger.chain import LedgerEntry

FORMAT = "twinloop.run/2"
FORMAT_V1 = "twinloop.run/1"

Outcome = Literal["pass", "fail", "error"]


def finite_or_none(value: Any) -> Any:
    """NaN and infinities become ``None`` ("no valid value"); everything else passes through."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


#: A number that is finite, or ``None`` where the value was NaN, infinite or absent.
Finite = Annotated[float | None, BeforeValidator(finite_or_none)]


#: A SHA-256 digest as 64 lower-case hex digits.
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class Data(BaseModel):
    """Plain record data: unknown keys are refused, so a tampered bundle cannot hide fields."""

    model_config = ConfigDict(extra="forbid")


D = TypeVar("D", bound=Data)


class Grown(Data):
    """A model that gained optional fields after its format shipped.

    Those fields (``LATER``) are left out of the bytes while they are ``None``,
    so a record that does not use them keeps the exact bytes, and so the CID,
    it had before they existed.
    """

    LATER: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _leave_out_unset_later_fields(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        for name in self.LATER:
            if data.get(name) is None:
                data.pop(name, None)
        return data


class ScenarioInfo(Data):
    """The scenario exactly as run: its name, where it came from, its text and SHA-256."""

    name: str
    path: str
    sha256: str
    text: str
    point: dict[str, float | str] | None = None


class RigInfo(Data):
    """The rig profile the run used, and the clock that drove it."""

    name: str
    sha256: str
    clock: Literal["real", "simulated"]
    units: dict[str, str] = Field(default_factory=dict)


class DutInfo(Grown):
    """The device under test, as the ledger keys runs.

    ``firmware_sha256`` is the SHA-256 of the firmware image the DUT ran, where
    the rig reports one. No transport or rig profile reads it yet, so it is
    ``None`` (and absent from the bytes) unless whoever builds the record sets
    it from a real measurement; it is never derived from ``version``. When set,
    the run's attestation names the firmware as a subject of its own.
    """

    LATER: ClassVar[tuple[str, ...]] = ("firmware_sha256",)

    id: str
    version: str
    firmware_sha256: Sha256 | None = None


class Samples(Data):
    """Columnar samples: scheduled time ``t``, acquisition time ``t_read`` (both s from the start)."""

    t: list[float] = Field(default_factory=list)
    t_read: list[float] = Field(default_factory=list)
    columns: dict[str, list[Finite]] = Field(default_factory=dict)

    def append(self, t: float, t_read: float, row: dict[str, float | None]) -> None:
        """Add one whole row, so columns never go ragged; non-finite values become None."""
        for name, column in self.columns.items():
            column.append(finite_or_none(row.get(name)))
        self.t.append(t)
        self.t_read.append(t_read)


EventKind = Literal["set", "fault", "wait", "ramp", "until", "sample", "power", "reconnect", "prompt",
                    "mark", "call", "twin_estimate", "twin_error", "twin_restarted", "overrun", "retry",
                    "transport_error", "safe_state", "interrupted", "error", "twin_anomaly", "twin_setpoint",
                    "derate", "maintenance_request"]


class Event(Data):
    """One thing that happened at scheduled time ``t`` (seconds from the start of the run)."""

    t: float
    kind: EventKind
    device: str | None = None
    signal: str | None = None
    value: Finite = None
    note: str = ""
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class Calls(Data):
    """Every transport call of the run, columnar: when (run time), device, operation, outcome, duration."""

    t: list[float] = Field(default_factory=list)
    device: list[str] = Field(default_factory=list)
    op: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    ok: list[bool] = Field(default_factory=list)
    duration_s: list[float] = Field(default_factory=list)
    error: list[str] = Field(default_factory=list)

    def append(self, t: float, device: str, op: str, args: str, ok: bool, duration_s: float,
               error: str = "") -> None:
        """Log one call."""
        self.t.append(t)
        self.device.append(device)
        self.op.append(op)
        self.args.append(args)
        self.ok.append(ok)
        self.duration_s.append(round(duration_s, 6))
        self.error.append(error)


class TwinResult(Data):
    """A device twin's final estimate and its estimate history (columns over time)."""

    model: str
    level: str
    inputs: dict[str, Finite] = Field(default_factory=dict)
    final: dict[str, Finite] = Field(default_factory=dict)
    history: dict[str, list[Finite]] = Field(default_factory=dict)


class VerdictRecord(Data):
    """One expectation's judged outcome, worst value and limit; ``invalid`` counts non-finite samples.

    ``signal``, the numeric limits (in the signal's unit on the rig) and the
    judged ``window`` (s from the start) are there for reports and plots.
    """

    name: str
    kind: str = "bounds"
    outcome: Outcome
    value: Finite
    limit: str
    unit: str
    marginal: bool = False
    invalid: int = 0
    detail: str = ""
    signal: str | None = None
    min: Finite = None
    max: Finite = None
    marginal_min: Finite = None
    marginal_max: Finite = None
    window: tuple[Finite, Finite] | None = None


class DsseSignature(Data):
    """One DSSE signature: the signing key's id and the signature, base64 (DSSE's JSON form)."""

    keyid: str
    sig: str


class DsseEnvelope(Data):
    """A DSSE envelope in its standard JSON form (DSSE's own field names)."""

    payload: str
    payloadType: str
    signatures: list[DsseSignature]


class RunRecord(Grown):
    """Everything one run produced; the bundle committed to IPFS and named on chain.

    ``attestation`` is the run's in-toto Test Result statement in a DSSE
    envelope (``twinloop.harness.attestation``). It signs a digest of this record
    taken without the ``attestation`` field, and it is inside the bundle, so the
    CID on chain covers it too. Bundles written before it existed have none.
    """

    LATER: ClassVar[tuple[str, ...]] = ("attestation",)

    format: Literal["twinloop.run/2"] = FORMAT
    judge_version: str
    run_id: str
    scenario: ScenarioInfo
    rig: RigInfo
    dut: DutInfo
    software: dict[str, str]
    started_at: str
    finished_at: str
    samples: Samples
    events: list[Event] = Field(default_factory=list)
    calls: Calls = Field(default_factory=Calls)
    twins: dict[str, TwinResult] = Field(default_factory=dict)
    verdicts: list[VerdictRecord] = Field(default_factory=list)
    outcome: Outcome
    error: str | None = None
    attestation: DsseEnvelope | None = None

    def ledger_entry(self, cid: str) -> LedgerEntry:
        """What the chain stores for this run, with its bundle at ``cid``."""
        return LedgerEntry(run_id=self.run_id, scenario_hash=self.scenario.sha256, dut_id=self.dut.id,
                           dut_version=self.dut.version, bundle_cid=cid, verdict=self.outcome)

    def to_bytes(self) -> bytes:
        """Canonical JSON (RFC 8785) of the record: the bundle's exact bytes."""
        return bundle.encode(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, data: bytes) -> "RunRecord":
        """Decode a bundle of this or an earlier format version."""
        try:
            raw = bundle.decode(data)
        except ValueError as err:
            raise LedgerTamperedError(f"bundle is not JSON: {err}") from err
        if not isinstance(raw, dict):
            raise LedgerTamperedError("bundle is not a run record (not a JSON object)")
        if raw.get("format") == FORMAT_V1:
            raw = upgrade_v1(raw)
        elif raw.get("format") != FORMAT:
            raise LedgerTamperedError(f"bundle format {raw.get('format')!r} is not one of "
                                      f"{FORMAT!r}, {FORMAT_V1!r}")
        return validated(cls, raw, FORMAT)


def validated(cls: type[D], raw: dict[str, Any], fmt: str) -> D:
    """``raw`` as a ``cls`` record; a bundle that does not fit is tampered, its first problem named."""
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise LedgerTamperedError(f"bundle is not a valid {fmt} record: {where}: {first['msg']}") from None


def upgrade_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """A ``twinloop.run/1`` record (flat sample dict, untyped events and twins) in today's shape."""
    samples = dict(raw.get("samples") or {})
    t = samples.pop("t", [])
    events = []
    for e in raw.get("events", []):
        e = dict(e)
        data = {"estimate": e.pop("estimate")} if "estimate" in e else {}
        events.append({**e, "data": data})
    twins = {}
    for dev, tw in (raw.get("twins") or {}).items():
        final = {k: v for k, v in tw.get("final", {}).items()
                 if isinstance(v, (int, float)) or v is None}
        twins[dev] = {"model": tw["model"], "level": tw["level"],
                      "inputs": tw.get("final", {}).get("inputs", {}),
                      "final": final, "history": tw.get("history", {})}
    return {**raw, "format": FORMAT, "judge_version": "1",
            "samples": {"t": t, "t_read": list(t), "columns": samples},
            "events": events, "twins": twins}
