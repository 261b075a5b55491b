"""The typed run record: canonical bytes, one definition of non-finite values, older formats."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from twinloop.errors import LedgerTamperedError
from twinloop.harness.judge import JUDGE_VERSION, Measure, judge_all
from twinloop.harness.record import FORMAT, RunRecord, Samples, TwinResult
from twinloop.harness.report import duration
from twinloop.ledger.ipfs import import_file

DATA = Path(__file__).parent / "data"
MAX_125 = Measure(name="tj", kind="bounds", signal="m.temperature", unit="degC", max=125.0)


def record(**changes: object) -> RunRecord:
    base = RunRecord.from_bytes((DATA / "run-v1.json").read_bytes())
    return base.model_copy(update=changes)


def test_a_v1_bundle_decodes_into_the_current_record() -> None:
    data = (DATA / "run-v1.json").read_bytes()
    assert json.loads(data)["format"] == "twinloop.run/1"
    r = RunRecord.from_bytes(data)
    assert r.format == FORMAT and r.run_id == "e31ca39e-df2b-4228-948f-18fe50c4ce7b"
    assert len(r.samples.t) == 601 and r.samples.t_read == r.samples.t
    assert r.samples.columns["module.temperature"][0] == 25.0
    assert [e.kind for e in r.events] == ["set", "twin_estimate", "fault"]
    assert r.events[1].data["estimate"]["damage"] == pytest.approx(0.0492, abs=1e-4)
    assert r.twins["module"].final["rul_p50_s"] == pytest.approx(32838750.0)
    assert r.twins["module"].inputs == {"ambient": 25.0, "fan": 0.0, "power": 30.0}
    assert r.verdicts[0].value == 109.39 and r.outcome == "pass"


def test_bytes_are_rfc8785_canonical_and_stable() -> None:
    r = record()
    data = r.to_bytes()
    assert data == RunRecord.from_bytes(data).to_bytes()
    assert import_file(data)[0] == import_file(RunRecord.from_bytes(data).to_bytes())[0]
    text = data.decode()
    assert text.startswith('{"calls":{"args":[],') and ": " not in text[:200]  # sorted keys, no whitespace
    assert '"t":[0,1,2,' in text  # ES6 number form: 1.0 is written 1


def test_nan_never_masks_a_later_sample_live_or_after_the_round_trip() -> None:
    samples = Samples(columns={"m.temperature": []})
    samples.append(0.0, 0.0, {"m.temperature": math.nan})
    samples.append(1.0, 1.0, {"m.temperature": 200.0})
    samples.append(2.0, 2.0, {"m.temperature": math.inf})
    live = judge_all([MAX_125], record(samples=samples))[0]
    assert (live.outcome, live.value, live.invalid) == ("fail", 200.0, 2)
    assert "2 of 3 samples missing or not finite" in live.detail
    r = record(samples=samples, verdicts=[live], outcome="fail")
    again = RunRecord.from_bytes(r.to_bytes())
    assert again.samples.columns["m.temperature"] == [None, 200.0, None]
    assert judge_all([MAX_125], again)[0] == live


def test_only_non_finite_samples_is_an_error_not_a_pass() -> None:
    samples = Samples(columns={"m.temperature": [None, None]}, t=[0.0, 1.0], t_read=[0.0, 1.0])
    v = judge_all([MAX_125], record(samples=samples))[0]
    assert (v.outcome, v.value, v.invalid) == ("error", None, 2)


def test_infinite_rul_is_stored_and_shown_as_beyond_horizon() -> None:
    twin = TwinResult(model="m", level="shadow", final={"rul_p50_s": math.inf, "health": 0.9})
    assert twin.final["rul_p50_s"] is None
    r = RunRecord.from_bytes(record(twins={"m": twin}).to_bytes())
    assert r.twins["m"].final["rul_p50_s"] is None
    assert duration(r.twins["m"].final["rul_p50_s"]) == "beyond horizon"
    assert "inf" not in duration(None)


def test_a_record_carries_its_format_and_judge_version() -> None:
    raw = json.loads(record(judge_version=JUDGE_VERSION).to_bytes())
    assert raw["format"] == "twinloop.run/2" and raw["judge_version"] == JUDGE_VERSION


@pytest.mark.parametrize("data, words", [
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"format": "twinloop.run/9"}', "'twinloop.run/9' is not one of"),
    (b'{"format": "twinloop.run/2", "run_id": 3}', "not a valid twinloop.run/2 record"),
])
def test_bad_bundles_are_named_as_such(data: bytes, words: str) -> None:
    with pytest.raises(LedgerTamperedError, match=words):
        RunRecord.from_bytes(data)
