"""The scenario language: units, includes, parameters and matrices, and every kind of declared measurement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twinloop.errors import ConfigError
from twinloop.harness.judge import Measure, judge_all, resolve
from twinloop.harness.plan import plan
from twinloop.harness.record import Event, RunRecord, Samples, TwinResult
from twinloop.harness.scenario import json_schema, load_points, load_scenario, parse_scenario

ROOT = Path(__file__).parents[1]
BASE = """\
scenario: lang
dut: {id: pm, version: "1"}
devices:
  module: {type: power_module}
steps:
  - set: {signal: module.power, value: 30 W}
  - wait: 10 s
expect:
  - {name: tj, signal: module.temperature, max: 125 degC}
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- units ------------------------------------------------------------------------------

@pytest.mark.parametrize("written, expected", [
    ("125 degC", 125.0), ("398.15 K", 125.0), ("257 degF", 125.0), (125, 125.0)])
def test_limits_are_converted_to_the_signal_unit_at_load(tmp_path: Path, written: object,
                                                         expected: float) -> None:
    text = BASE.replace("max: 125 degC", f"max: {json.dumps(written)}")
    p = plan(write(tmp_path, text))
    assert p.measures[0].max == pytest.approx(expected) and p.measures[0].unit == "degC"


def test_set_values_and_durations_take_any_unit_of_the_right_dimension(tmp_path: Path) -> None:
    text = BASE.replace("value: 30 W", "value: 0.03 kW").replace("wait: 10 s", "wait: 250 ms")
    p = plan(write(tmp_path, text))
    assert p.actions[0].value == pytest.approx(30.0) and p.actions[1].over == 0.25


@pytest.mark.parametrize("old, new, key, words", [
    ("max: 125 degC", "max: 3 bar", "expect[0].max", "is [temperature]" ),
    ("value: 30 W", "value: 30 degC", "steps[0].set.value", "but the signal's unit 'W'"),
    ("wait: 10 s", "wait: 10", "steps[1].wait", "a duration needs a unit"),
    ("wait: 10 s", "wait: 10 W", "steps[1].wait", "expected a duration"),
    ("value: 30 W", "value: 30 furlongs_per_fortnight", "steps[0].set.value", "unknown unit"),
])
def test_a_dimension_mismatch_is_an_error_at_load_with_file_line_and_key(
        tmp_path: Path, old: str, new: str, key: str, words: str) -> None:
    path = write(tmp_path, BASE.replace(old, new))
    with pytest.raises(ConfigError) as err:
        plan(path)
    assert err.value.file == str(path) and err.value.key == key and words in str(err.value)
    assert err.value.line == next(i for i, l in enumerate(BASE.replace(old, new).splitlines(), 1)
                                  if new.split(":")[0] in l and (new.split(": ")[1] in l))


# --- includes, parameters, matrices ---------------------------------------------------

FRAGMENT = """\
dut: {id: pm, version: "1"}
devices:
  module: {type: power_module}
expect:
  - {name: tj, signal: module.temperature, max: 125 degC}
"""
MAIN = """\
scenario: family
include: [parts/module.yaml]
parameters: {load: 10 W}
matrix: {load: [10 W, 20 W], fan: [0, 1]}
steps:
  - set: {signal: module.power, value: "${load}"}
  - set: {signal: module.fan, value: "${fan}"}
  - wait: 10 s
expect:
  - {name: cold, signal: module.temperature, min: 0 degC}
"""


def test_a_matrix_expands_to_one_run_per_point_with_fragments_merged(tmp_path: Path) -> None:
    write(tmp_path, FRAGMENT, "parts/module.yaml")
    points = load_points(write(tmp_path, MAIN))
    assert [p.point_id for p in points] == ["load=10 W,fan=0", "load=10 W,fan=1",
                                             "load=20 W,fan=0", "load=20 W,fan=1"]
    sc = points[3].scenario
    assert [e.name for e in sc.expect] == ["tj", "cold"]  # lists concatenate, fragment first
    assert sc.steps[0].set.value == "20 W" and sc.steps[1].set.value == 1
    assert len({p.sha256 for p in points}) == 4
    assert plan(points[2]).actions[0].value == 20.0


def test_the_scenario_hash_covers_every_included_file(tmp_path: Path) -> None:
    fragment = write(tmp_path, FRAGMENT, "parts/module.yaml")
    main = write(tmp_path, MAIN)
    before = load_scenario(main).sha256
    fragment.write_text(FRAGMENT.replace("125 degC", "150 degC"))
    assert load_scenario(main).sha256 != before


def test_the_expanded_text_re_parses_without_the_files(tmp_path: Path) -> None:
    write(tmp_path, FRAGMENT, "parts/module.yaml")
    source = load_scenario(write(tmp_path, MAIN), {"load": "20 W", "fan": 1})
    again = parse_scenario("elsewhere/family.yaml", source.text)
    assert again.sha256 == source.sha256 and again.point == {"fan": 1, "load": "20 W"}
    assert again.scenario == source.scenario


def test_a_scenario_without_includes_hashes_as_its_own_file() -> None:
    import hashlib
    smoke = ROOT / "scenarios" / "smoke.yaml"
    assert load_scenario(smoke).sha256 == hashlib.sha256(smoke.read_bytes()).hexdigest()


@pytest.mark.parametrize("fragment, main_change, file, line, words", [
    (FRAGMENT.replace("max: 125 degC", "max: 125 bar"), None, "parts/module.yaml", 5, "'125 bar' is [mass]"),
    (FRAGMENT.replace("devices:", "devises:"), None, "parts/module.yaml", 2, "unknown key 'devises'"),
    (FRAGMENT, ("${fan}", "${fna}"), "s.yaml", 7, "unknown parameter '${fna}'"),
    (FRAGMENT, ("parts/module.yaml", "parts/missing.yaml"), "s.yaml", 2, "not found"),
])
def test_errors_in_fragments_and_parameters_name_the_right_file_and_line(
        tmp_path: Path, fragment: str, main_change: tuple[str, str] | None, file: str, line: int,
        words: str) -> None:
    write(tmp_path, fragment, "parts/module.yaml")
    main = write(tmp_path, MAIN.replace(*main_change) if main_change else MAIN)
    with pytest.raises(ConfigError) as err:
        for source in load_points(main):
            plan(source)
    assert err.value.file == str(tmp_path / file) and err.value.line == line
    assert words in str(err.value)


def test_an_include_cycle_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "include: [../s.yaml]\n" + FRAGMENT, "parts/module.yaml")
    with pytest.raises(ConfigError, match="include cycle"):
        load_points(write(tmp_path, MAIN))


# --- steps ------------------------------------------------------------------------------

def test_marks_must_exist_and_be_unique(tmp_path: Path) -> None:
    text = BASE.replace("max: 125 degC}", "max: 125 degC, window: {from: nowhere}}")
    with pytest.raises(ConfigError, match="no mark step named 'nowhere'"):
        load_scenario(write(tmp_path, text))


def test_a_prompt_on_a_real_time_rig_without_a_terminal_is_refused_at_plan(tmp_path: Path) -> None:
    text = BASE.replace("  - wait: 10 s", "  - prompt: {message: connect the probe}\n  - wait: 10 s")
    rig = write(tmp_path, "rig: bench\nclock: real\ndevices:\n  module: {emulator: power_module}\n", "rig.yaml")
    with pytest.raises(ConfigError, match="no terminal is attached") as err:
        plan(write(tmp_path, text), rig)
    assert err.value.key == "steps[1].prompt"
    assert plan(write(tmp_path, text), rig, interactive=True).actions[1].kind == "prompt"
    assert plan(write(tmp_path, text)).actions[1].kind == "prompt"  # emulated: logged, not shown


def test_power_and_fault_kinds_need_a_device_that_can_do_them(tmp_path: Path) -> None:
    text = BASE.replace("  - wait: 10 s", "  - fault: {device: module, kind: melt}\n  - wait: 10 s")
    with pytest.raises(ConfigError, match="cannot inject fault 'melt'; it can: wedge"):
        plan(write(tmp_path, text))


def test_sample_count_follows_rate_changes_and_until_timeouts(tmp_path: Path) -> None:
    text = BASE.replace("  - wait: 10 s", "  - wait: 10 s\n  - sample: {every: 100 ms}\n"
                        "  - until: {signal: module.temperature, above: 50 degC, timeout: 1 min}")
    sc = load_scenario(write(tmp_path, text)).scenario
    assert sc.sample_count() == 1 + 10 + 600


# --- measurements, judged from a record -------------------------------------------------

def _record(t: list[float], temps: list[float | None], marks: dict[str, float] | None = None,
            twin: dict[str, list[float | None]] | None = None) -> RunRecord:
    base = RunRecord.from_bytes((ROOT / "tests" / "data" / "run-v1.json").read_bytes())
    events = [Event(t=at, kind="mark", note=name) for name, at in (marks or {}).items()]
    twins = {"m": TwinResult(model="x", level="shadow", history={"t": t, **twin})} if twin else {}
    return base.model_copy(update=dict(samples=Samples(t=t, t_read=t, columns={"m.temp": temps}),
                                       events=events, twins=twins))


def _m(**kw: object) -> Measure:
    return Measure(**{"name": "x", "signal": "m.temp", "unit": "degC", **kw})  # type: ignore[arg-type]


def test_a_window_judges_only_between_its_anchors() -> None:
    r = _record([0, 1, 2, 3, 4], [200, 200, 50, 60, 200], marks={"start": 2.0})
    whole = _m(kind="bounds", max=100.0)
    windowed = _m(kind="bounds", max=100.0, window=("start", 3.0))
    a, b = judge_all([whole, windowed], r)
    assert a.outcome == "fail" and (b.outcome, b.value, b.window) == ("pass", 60, (2.0, 3.0))


def test_a_deadline_measures_the_time_from_the_mark() -> None:
    r = _record([0, 1, 2, 3, 4, 5], [20, 20, 20, 20, 90, 95], marks={"fault": 2.0})
    ok, late, order = judge_all([_m(kind="deadline", after="fault", above=80.0, within=2.0),
                                 _m(kind="deadline", after="fault", above=80.0, within=1.5),
                                 _m(kind="deadline", after="fault", above=80.0)], r)
    assert (ok.outcome, ok.value) == ("pass", 2.0)
    assert late.outcome == "fail" and "> 1.5 s" in late.detail
    assert order.outcome == "pass"


def test_settle_time_needs_the_signal_to_stay_in_the_band() -> None:
    r = _record([0, 1, 2, 3, 4, 5], [80, 60, 51, 58, 50.5, 50.2], marks={"go": 0.0})
    v = judge_all([_m(kind="settle", after="go", to=50.0, band=1.0, within=5.0)], r)[0]
    assert (v.outcome, v.value) == ("pass", 4.0)  # t=2 was inside, but it left again at t=3
    v = judge_all([_m(kind="settle", after="go", to=50.0, band=1.0, within=3.0)], r)[0]
    assert v.outcome == "fail"


def test_tolerance_compares_the_twins_one_step_prediction() -> None:
    r = _record([0, 1, 2], [20, 21, 25], twin={"predicted_temp": [20.0, 20.5, 28.0]})
    v = judge_all([_m(kind="tolerance", within=2.0)], r)[0]
    assert (v.outcome, v.value) == ("fail", 3.0)
    v = judge_all([_m(kind="tolerance", within=2.0, window=(0.0, 1.0))], r)[0]
    assert (v.outcome, v.value) == ("pass", 0.5)


def test_lead_time_is_from_the_twins_alarm_to_the_failure() -> None:
    hours = [0.0, 3600.0, 7200.0, 10800.0, 14400.0]
    r = _record(hours, [1.0, 2.0, 3.0, 5.0, 8.0],
                twin={"rul_p50_s": [None, 20000.0, None, 5000.0, 100.0]})
    lead = _m(kind="lead_time", twin="m", rul_below=6000.0, above=7.1, at_least=3600.0, unit="s")
    v = judge_all([lead], r)[0]
    assert (v.outcome, v.value) == ("pass", 3600.0)  # alarm at 3 h, failure at 4 h
    v = judge_all([_m(**{**lead.__dict__, "at_least": 7200.0})], r)[0]
    assert v.outcome == "fail"
    never = _record(hours, [1.0] * 5, twin={"rul_p50_s": [None] * 5})
    assert judge_all([lead], never)[0].outcome == "fail"


def test_resolve_reads_every_kind_from_a_scenario(tmp_path: Path) -> None:
    text = BASE.replace("  - wait: 10 s", "  - mark: heat\n  - wait: 10 s").replace(
        "expect:\n", "expect:\n  - {name: settles, settle: {signal: module.temperature, to: 300 K, "
        "band: 2 degC, within: 1 min, after: heat}}\n")
    source = load_scenario(write(tmp_path, text))
    m = resolve(source, {"module.temperature": "degC"})[0]
    assert (m.kind, m.to, m.band, m.within, m.after) == ("settle", pytest.approx(26.85), pytest.approx(2.0),
                                                         60.0, "heat")


def test_the_published_schema_is_current() -> None:
    committed = json.loads((ROOT / "scenario.schema.json").read_text())
    assert committed == json.loads(json.dumps(json_schema()))
    for example in (ROOT / "scenarios").glob("*.yaml"):
        assert example.read_text().startswith("# yaml-language-server: $schema=../scenario.schema.json"), example
