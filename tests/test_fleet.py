"""Fleet simulation: the fleet file's errors, shard-count invariance, checkpoint resume, GPU fallback."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy
import pytest
import ray

from twinloop.errors import ConfigError, TwinError
from twinloop.harness.services import Services
from twinloop.twins.fleet import NEVER, FleetProgress, ShardCore, run_local, simulate, split
from twinloop.twins.fleet_spec import DRAW_BLOCK, FleetPlan, draw, load_fleet, parse_fleet
from twinloop.twins.models.pump_bearing import PumpBearingWear
from twinloop.twins.predict import failure_times

FLEET = """\
fleet: pumps-and-modules
seed: 7
horizon: 365 d
dt: 1 h
shards: {shards}
array: {array}
checkpoint_every: 30 d
groups:
  - name: pumps
    model: pump_bearing
    units: {pumps}
    params: {{k: 1.2e-8}}
    vary:
      k: {{lognormal: 0.4}}
      wear: {{uniform: [0, 0.3]}}
    profile:
      speed: 1480 rpm
      load: {{cycle: [100, 60], every: 12 h}}
  - name: modules
    model: power_module_thermal
    units: 501
    params: {{k_ref: 8.0e-9}}
    vary: {{k_ref: {{lognormal: 0.5}}, r_ca: {{lognormal: 0.1}}}}
    profile: {{power: {{cycle: [60, 10], every: 2 h}}, ambient: 30 degC}}
"""


def fleet(shards: Any = 2, array: str = "numpy", pumps: int = 1003) -> FleetPlan:
    return parse_fleet(FLEET.format(shards=shards, array=array, pumps=pumps), "fleet.yaml").plan


def within(seconds: float, fn: Callable[[], Any], what: str = "the fleet") -> Any:
    """``fn()`` in a thread, or a test failure naming ``what`` after ``seconds`` (nothing here may hang)."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(fn).result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        pytest.fail(f"{what} did not answer within {seconds} s")
    finally:
        pool.shutdown(wait=False)


# --- the fleet file ------------------------------------------------------------------------------------------

GOOD = """\
fleet: f
horizon: 10 d
dt: 1 h
groups:
  - name: pumps
    model: pump_bearing
    units: 10
    params: {k: 1.0e-7}
    vary:
      k: {lognormal: 0.2}
    profile:
      load: {cycle: [100, 60], every: 12 h}
"""

# (text with the bad line marked '# <-', expected key, a fragment of the message)
BAD = [
    (GOOD.replace("dt: 1 h", "dt: 1 h\nshardz: 2  # <-"), "shardz", "unknown key 'shardz'"),
    (GOOD.replace("dt: 1 h", "dt: 3600  # <-"), "dt", "needs a unit"),
    (GOOD.replace("dt: 1 h", "dt: 1 m  # <-"), "dt", "expected a duration"),
    (GOOD.replace("horizon: 10 d", "horizon: 10.5 h  # <-"), "horizon", "whole number of steps"),
    (GOOD.replace("model: pump_bearing", "model: pump  # <-"), "groups[0].model", "known: battery_circuit"),
    (GOOD.replace("params: {k: 1.0e-7}", "params:\n      kk: 1.0  # <-"), "groups[0].params.kk",
     "pump_bearing has no parameter 'kk'; known: c, g, k"),
    (GOOD.replace("params: {k: 1.0e-7}", "params:\n      k: 5.0  # <-"), "groups[0].params.k", "outside"),
    (GOOD.replace("params: {k: 1.0e-7}", "params:  # <-\n      v0: 8.0"), "groups[0].params",
     "vibration_limit"),
    (GOOD.replace("k: {lognormal: 0.2}", "speed: {lognormal: 0.2}  # <-"), "groups[0].vary.speed",
     "not a state of pump_bearing; states: k, wear"),
    (GOOD.replace("k: {lognormal: 0.2}", "k: {gamma: 2}  # <-"), "groups[0].vary.k", "'gamma' is not one of"),
    (GOOD.replace("k: {lognormal: 0.2}", "wear: {lognormal: 0.2}  # <-"), "groups[0].vary.wear.lognormal",
     "starts at 0"),
    (GOOD.replace("k: {lognormal: 0.2}", "k: {uniform: [2, 1]}  # <-"), "groups[0].vary.k.uniform", "low <= high"),
    (GOOD.replace("load: {cycle", "torque: 3  # <-\n      load: {cycle"), "groups[0].profile.torque",
     "inputs: load, speed"),
    (GOOD.replace("load: {cycle", "speed: 5 degC  # <-\n      load: {cycle"), "groups[0].profile.speed",
     "the signal's unit 'rpm'"),
    (GOOD.replace("every: 12 h}", "every: 90 min}  # <-"), "groups[0].profile.load.every",
     "whole number of steps"),
    (GOOD.replace("units: 10", "units: 0  # <-"), "groups[0].units", "greater than or equal to 1"),
    (GOOD.replace("units: 10", "units: 1.5  # <-"), "groups[0].units", "integer"),
    (GOOD + "  - name: pumps  # <-\n    model: pump_bearing\n    units: 1\n", "groups[1].name", "used twice"),
    (GOOD.replace("fleet: f", "fleet: f\nseed: 1\nseed: 2  # <-"), "seed", "duplicate key"),
    (GOOD.replace("horizon: 10 d", "horizon: 10 d\nshards: 0  # <-"), "shards", ""),
    # every number finite
    (GOOD.replace("k: {lognormal: 0.2}", "k: {normal: .inf}  # <-"), "groups[0].vary.k.normal", "finite number"),
    (GOOD.replace("k: {lognormal: 0.2}", "k: {lognormal: .nan}  # <-"), "groups[0].vary.k.lognormal",
     "finite number"),
    (GOOD.replace("k: {lognormal: 0.2}", "wear: {uniform: [0, .inf]}  # <-"), "groups[0].vary.wear.uniform[1]",
     "finite number"),
    (GOOD.replace("params: {k: 1.0e-7}", "params: {g: .inf}  # <-"), "groups[0].params.g", "finite number"),
    (GOOD.replace("every: 12 h}", "every: 12 h}\n      speed: .nan  # <-"), "groups[0].profile.speed",
     "finite number"),
    (GOOD.replace("cycle: [100, 60], every: 12 h}", "cycle: [100, -.inf], every: 12 h}  # <-"),
     "groups[0].profile.load.cycle[1]", "finite number"),
    # draws stay in the state's physical range (refused, never clipped)
    (GOOD.replace("k: {lognormal: 0.2}", "k: {normal: 1.0e-8}  # <-"), "groups[0].vary.k.normal",
     "outside its physical range [0, inf] 1/s (draws are refused, not clipped); use lognormal"),
    (GOOD.replace("k: {lognormal: 0.2}", "wear: {normal: 0.01}  # <-"), "groups[0].vary.wear.normal",
     "'wear' outside its physical range [0, inf]"),
    (GOOD.replace("k: {lognormal: 0.2}", "wear: {uniform: [-0.1, 0.2]}  # <-"), "groups[0].vary.wear.uniform",
     "keep uniform within [0, inf]"),
]


@pytest.mark.parametrize("text,key,fragment", BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD])
def test_a_bad_fleet_file_names_file_line_and_key(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    path = tmp_path / "bad-fleet.yaml"
    path.write_text(text)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "# <-" in ln)
    with pytest.raises(ConfigError) as info:
        load_fleet(path)
    err = info.value
    assert (err.file, err.line, err.key) == (str(path), line, key), str(err)
    assert fragment in str(err) and str(path) in str(err) and f":{line}" in str(err)


def test_draws_within_the_physical_range_are_taken() -> None:
    text = GOOD.replace("k: {lognormal: 0.2}", "k: {normal: 0}\n      wear: {uniform: [0, 0.3]}")
    g = parse_fleet(text).plan.groups[0]
    assert [(v.state, v.kind) for v in g.vary] == [("k", "normal"), ("wear", "uniform")]
    x = draw(g, 0, 0, g.units, {"k": numpy.full(g.units, 1e-7), "wear": numpy.zeros(g.units)})
    assert (x["k"] == 1e-7).all() and ((0 <= x["wear"]) & (x["wear"] <= 0.3)).all()


def test_a_good_fleet_file_compiles_to_model_units(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(GOOD.replace("load: {cycle", "speed: 24.5 rps\n      load: {cycle"))
    plan = load_fleet(path).plan
    g = plan.groups[0]
    assert (plan.steps, plan.steps_per_call, plan.units) == (240, 12, 10)
    assert dict((i.name, (i.values, i.hold)) for i in g.inputs) == {"speed": ((24.5 * 60,), 1),
                                                                   "load": ((100.0, 60.0), 12)}
    assert [g.inputs_at(s)["load"] for s in (0, 11, 12, 23, 24)] == [100.0, 100.0, 60.0, 60.0, 100.0]


# --- the physics and the draws, without Ray ------------------------------------------------------------------

def test_draws_do_not_depend_on_the_split() -> None:
    plan = fleet(pumps=2 * DRAW_BLOCK + 17)
    g, n = plan.groups[0], plan.groups[0].units
    nominal = PumpBearingWear(**g.params).initial_state(n)
    whole = draw(g, plan.seed, 0, n, nominal)
    cuts = [0, 1, 999, DRAW_BLOCK - 1, DRAW_BLOCK, DRAW_BLOCK + 5, 2 * DRAW_BLOCK + 3, n]
    pieces = [draw(g, plan.seed, a, b, {k: v[a:b] for k, v in nominal.items()}) for a, b in zip(cuts, cuts[1:])]
    for state in ("k", "wear"):
        assert numpy.array_equal(numpy.concatenate([p[state] for p in pieces]), whole[state])
    assert 0.0 <= whole["wear"].min() and whole["wear"].max() <= 0.3
    assert abs(numpy.median(whole["k"]) / g.params["k"] - 1) < 0.01
    assert abs(numpy.log(whole["k"] / g.params["k"]).std() - 0.4) < 0.01
    other = draw(g, plan.seed + 1, 0, 100, {k: v[:100] for k, v in nominal.items()})
    assert not numpy.array_equal(other["k"], whole["k"][:100])


@pytest.mark.parametrize("units,shards", [(1, 1), (7, 3), (1003, 4), (1504, 7), (5, 9)])
def test_a_split_covers_every_unit_once(units: int, shards: int) -> None:
    plan = fleet(pumps=units)
    layout = split(plan, shards)
    seen = {0: numpy.zeros(units, int), 1: numpy.zeros(501, int)}
    for parts in layout:
        for gi, a, b in parts:
            seen[gi][a:b] += 1
    assert all((s == 1).all() for s in seen.values())
    sizes = [sum(b - a for _, a, b in parts) for parts in layout]
    assert max(sizes) - min(sizes) <= 1


def test_failure_steps_match_predict_and_the_closed_form() -> None:
    """Constant inputs: each unit fails at the end of the step predict.failure_times says; no spread: the formula."""
    text = (GOOD.replace("units: 10", "units: 300").replace("load: {cycle: [100, 60], every: 12 h}", "load: 80")
            .replace("horizon: 10 d", "horizon: 90 d"))
    plan = parse_fleet(text).plan
    core = ShardCore(plan, 0, split(plan, 1)[0], None)
    x0 = {k: v.copy() for k, v in core.parts[0].x.items()}
    seq = 0
    while core.step < plan.steps:
        seq += 1
        core.run(seq, plan.steps_per_call)
    fail = core.parts[0].fail
    ttf = failure_times(core.models[0], x0, {"speed": 1480.0, "load": 80.0}, plan.dt, plan.horizon,
                        process_noise=False)
    mine = numpy.where(fail == NEVER, numpy.inf, fail * plan.dt)
    assert 0 < (fail != NEVER).sum() < 300  # some fail within the horizon, some do not
    assert numpy.array_equal(mine, ttf)

    m = PumpBearingWear(k=1e-7)
    life = math.log(1 + m.params["g"] * m.wear_limit) / (m.params["g"] * 1e-7 * 0.8)
    flat = parse_fleet(text.replace("    vary:\n      k: {lognormal: 0.2}\n", "")).plan
    [g] = run_local(flat)
    assert g.failed == 300 and g.failure_time_s["p05"] == g.failure_time_s["p95"] == math.ceil(life / 3600) * 3600


def test_a_retried_call_is_not_applied_twice_and_a_new_core_resumes(tmp_path: Path) -> None:
    plan = fleet(pumps=200)
    slices = split(plan, 3)[1]
    core = ShardCore(plan, 1, slices, tmp_path)
    first = core.run(1, plan.steps_per_call)
    again = core.run(1, plan.steps_per_call)
    assert again["replayed"] and core.step == first["step"] == plan.steps_per_call
    core.run(2, plan.steps_per_call)
    with pytest.raises(TwinError, match="out of sequence"):
        core.run(4, plan.steps_per_call)
    reborn = ShardCore(plan, 1, slices, tmp_path)  # as Ray rebuilds a crashed actor
    assert reborn.restored and (reborn.seq, reborn.step) == (2, 2 * plan.steps_per_call)
    assert reborn.run(2, plan.steps_per_call)["replayed"]
    seq = 2
    while reborn.step < plan.steps:
        seq += 1
        reborn.run(seq, plan.steps_per_call)
    straight = ShardCore(plan, 1, slices, None)
    for s in range(1, seq + 1):
        straight.run(s, plan.steps_per_call)
    for a, b in zip(reborn.result(), straight.result()):
        assert all(numpy.array_equal(a[k], b[k]) for k in a)
    assert not list(tmp_path.glob("*.tmp"))


def test_a_checkpoint_of_another_fleet_is_refused(tmp_path: Path) -> None:
    ShardCore(fleet(pumps=200), 0, split(fleet(pumps=200), 2)[0], tmp_path).run(1, 10)
    with pytest.raises(TwinError, match="another fleet or shard layout"):
        ShardCore(fleet(pumps=201), 0, split(fleet(pumps=201), 2)[0], tmp_path)


def test_cupy_without_a_gpu_is_an_error_naming_what_is_missing() -> None:
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("this machine has a GPU")
    except Exception:
        pass
    with pytest.raises(TwinError, match="CUDA GPU"):
        ShardCore(fleet(pumps=10), 0, split(fleet(pumps=10), 1)[0], None, array="cupy")


# --- on Ray -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shards", [0, -3, 4097])
def test_a_plan_with_a_bad_shard_count_is_refused(twinloop_ray: Services, tmp_path: Path, shards: int) -> None:
    with pytest.raises(ConfigError, match=f"shards must be a whole number from 1 to 4096, got {shards}"):
        simulate(dataclasses.replace(fleet(), shards=shards), tmp_path)


def test_one_two_and_four_shards_give_the_same_result(twinloop_ray: Services, tmp_path: Path) -> None:
    """1003 pumps and 501 modules: not divisible by 2 or 4, and shards straddle the groups."""
    results = {n: within(120, lambda n=n: simulate(fleet(shards=n), tmp_path / str(n))) for n in (1, 2, 4)}
    assert [results[n].shards for n in (1, 2, 4)] == [1, 2, 4]
    outcome = results[1].outcome()
    for n in (2, 4):
        assert results[n].outcome() == outcome
    pumps, modules = outcome["groups"]
    assert 0 < pumps["failed"] < 1003 and sum(pumps["failures_per_bin"]) == pumps["failed"]
    assert pumps["survivors"] == 1003 - pumps["failed"] and len(pumps["failures_per_bin"]) == 100
    assert 0 < modules["failed"] < 501
    assert [vars(g) for g in run_local(fleet())] == outcome["groups"]  # Ray changes nothing
    d = json.loads(json.dumps(results[4].as_dict()))
    assert d["run"]["shards"] == 4 and d["run"]["twin_steps"] > 0 and d["run"]["restarts"] == 0
    assert not [n for n in ray.util.list_named_actors() if n.startswith("twinloop-fleet/")]  # actors stopped


def test_a_killed_shard_resumes_from_its_checkpoint(twinloop_ray: Services, tmp_path: Path) -> None:
    killed: list[int] = []

    def kill_shard_0(p: FleetProgress) -> None:
        if p.shard == 0 and p.seq == 3 and not killed:
            ray.kill(ray.get_actor(p.actor_names[0]), no_restart=False)
            killed.append(p.calls_done)

    plan = fleet(shards=2, pumps=20_000)
    hit = within(180, lambda: simulate(plan, tmp_path / "killed", progress=kill_shard_0))
    clean = within(180, lambda: simulate(plan, tmp_path / "clean"))
    assert killed and killed[0] < 24  # killed mid-simulation (12 calls per shard)
    assert hit.restarts == 1 and "shard 0 was restarted by Ray" in hit.events[0]
    assert hit.outcome() == clean.outcome()
    assert hit.groups[0].failed > 0


def test_no_failure_within_the_horizon(twinloop_ray: Services, tmp_path: Path) -> None:
    text = GOOD.replace("horizon: 10 d", "horizon: 2 d").replace("units: 10", "units: 50")
    result = within(120, lambda: simulate(parse_fleet(text), tmp_path))
    [g] = result.groups
    assert (g.failed, g.fraction_failed, g.mean_failure_time_s, g.survivors) == (0, 0.0, None, 50)
    assert g.failure_time_s == {"p05": None, "p50": None, "p95": None}
    assert g.failures_per_bin == [0] * 100
    # nominal life at 80 % mean load is ~3.5e6 s; extrapolating the wear rate of the first 2 days says more
    assert 1e6 < g.survivor_rul_s["p50"] < 3e7 and 0.9 < g.survivor_health["p05"] < 1.0
    assert result.as_dict()["groups"][0]["failure_time_s"]["p50"] is None


@pytest.mark.parametrize("array", ["cupy", "auto"])
def test_a_fleet_asking_for_a_gpu_without_one_runs_numpy_and_says_so(twinloop_ray: Services, tmp_path: Path,
                                                                      array: str) -> None:
    if ray.cluster_resources().get("GPU", 0) >= 1:
        pytest.skip("Ray reports a GPU here")
    result = within(60, lambda: simulate(fleet(shards=1, array=array, pumps=10), tmp_path))
    numpy_result = within(60, lambda: simulate(fleet(shards=1, array="numpy", pumps=10), tmp_path))
    assert result.array == "numpy"
    assert result.notes == [f"array {array}: the Ray cluster reports no GPU "
                            f"({ray.cluster_resources()['CPU']:g} CPU, 0 GPU), so the shards ran NumPy"]
    assert result.groups == numpy_result.groups and numpy_result.notes == []
