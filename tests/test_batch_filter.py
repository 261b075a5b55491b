"""BatchParticleFilter: many devices' particle filters as one units x particles array, each unit as if alone."""

from __future__ import annotations

import math

import numpy
import pytest

from twinloop.errors import TwinError
from twinloop.twins.batch import BatchParticleFilter, systematic_indices
from twinloop.twins.estimate import ParticleFilter
from twinloop.twins.models.power_module import PowerModuleThermal
from twinloop.twins.models.pump_bearing import PumpBearingWear

U = 8


def shard_truth(model: PowerModuleThermal) -> dict[str, numpy.ndarray]:
    """Eight modules, each with its own hidden damage, heatsink path and creep rate, and its own load."""
    low, high = model.prior["k_ref"]
    return {"k_ref": numpy.geomspace(low * 1.3, high / 1.3, U)[[3, 0, 6, 1, 7, 2, 5, 4]],
            "damage": numpy.linspace(0.01, 0.12, U)[[5, 2, 7, 0, 3, 6, 1, 4]],
            "r_ca": numpy.linspace(0.7, 0.9, U)[[1, 4, 0, 6, 2, 7, 3, 5]],
            "power": numpy.linspace(50.0, 90.0, U),
            "ambient": numpy.linspace(35.0, 20.0, U)}


def shard_samples(model: PowerModuleThermal, truth: dict[str, numpy.ndarray], hours: int, seed: int = 7):
    """(t, inputs, readings, true states): 1 s samples over a fan cycle, then hourly ones while damage grows.

    The true units are stepped together (one per-unit input array each) and
    read with the model's sensor noise.
    """
    n = len(truth["damage"])
    x = model.initial_state(n, damage=truth["damage"], r_ca=truth["r_ca"], k_ref=truth["k_ref"])
    rng = numpy.random.default_rng(seed)
    t = 0.0
    for tk in [float(k) for k in range(1, 601)] + [600.0 + 3600.0 * h for h in range(1, hours + 1)]:
        u = {"power": truth["power"], "ambient": truth["ambient"], "fan": 0.0 if 200 <= tk < 400 else 1.0}
        x = model.next_state(x, u, tk - t)
        t = tk
        yield t, u, {"temperature": x["temperature"] + rng.normal(0.0, model.output_noise["temperature"], n)}, x


def drive_pump(update, seconds: int = 40 * 3600, dt: float = 600.0) -> None:
    """Feed one pump bearing's noisy vibration (hidden k 1.5x nominal, wear 0.2) to ``update(t, u, reading)``."""
    model = PumpBearingWear()
    x = model.initial_state(1, wear=0.2, k=1.5 * model.params["k"])
    rng = numpy.random.default_rng(11)
    u = {"speed": 1480.0, "load": 100.0}
    for k in range(int(seconds / dt)):
        x = model.next_state(x, u, dt)
        update(k * dt, u, float(model.output(x, u)["vibration"][0]) + rng.normal(0, model.output_noise["vibration"]))


@pytest.mark.parametrize("model", [PowerModuleThermal(), PumpBearingWear()], ids=lambda m: m.name)
def test_one_unit_is_the_particle_filter_draw_for_draw(model) -> None:
    """units=1 makes ParticleFilter's random draws in the same order and shapes: the same cloud.

    Bit-identical on this machine; the tolerance allows a BLAS that sums the
    batched covariance in another order.
    """
    single, batch = ParticleFilter(model, 1000, seed=1), BatchParticleFilter(model, 1, 1000, seed=1)
    resampled = 0
    if model.name == "pump_bearing":
        def update(t, u, y):
            nonlocal resampled
            single.update(t, u, {"vibration": y})
            batch.update(t, u, {"vibration": numpy.array([y])})
            resampled += int(batch.resampled[0])
        drive_pump(update)
    else:
        truth = {k: v[:1] for k, v in shard_truth(model).items()}
        for t, u, y, _ in shard_samples(model, truth, hours=24):
            u = {k: v if numpy.ndim(v) == 0 else float(v[0]) for k, v in u.items()}
            single.update(t, u, {"temperature": float(y["temperature"][0])})
            batch.update(t, u, {"temperature": y["temperature"][:1]})
            resampled += int(batch.resampled[0])
    assert resampled > 5
    for key in single.x:
        numpy.testing.assert_allclose(batch.x[key], single.x[key], rtol=1e-9, atol=1e-15)
    numpy.testing.assert_allclose(batch.w[0], single.w, rtol=1e-9)
    one, many = single.estimate(), batch.estimate()
    assert set(one) == set(many)
    for key, value in one.items():
        assert many[key].shape == (1,)
        assert many[key][0] == pytest.approx(value, rel=1e-9, abs=1e-15)
    for key, value in single.last_prediction.items():
        assert batch.last_prediction[key][0] == pytest.approx(value, rel=1e-9)
        assert batch.last_prediction_std[key][0] == pytest.approx(single.last_prediction_std[key], rel=1e-9)
        assert batch.last_innovation[key][0] == pytest.approx(single.last_innovation[key], rel=1e-6, abs=1e-9)


@pytest.fixture(scope="module", params=[None, 3], ids=["one-block", "blocks-of-3"])
def tracked_shard(request):
    model = PowerModuleThermal()
    truth = shard_truth(model)
    bf = BatchParticleFilter(model, U, 1000, seed=2, block_units=request.param)
    for t, u, y, x in shard_samples(model, truth, hours=1440):
        bf.update(t, u, y)
    return model, truth, bf, x


def test_each_unit_of_a_shard_tracks_its_own_truth(tracked_shard) -> None:
    """Eight modules with their own creep rates, heatsinks and loads: no unit's data leaks into another's."""
    model, truth, bf, x = tracked_shard
    est = bf.estimate()
    assert all(v.shape == (U,) for v in est.values())
    for key in ("damage", "k_ref"):
        z = (x[key] - est[key]) / est[f"{key}_std"]
        assert (numpy.abs(z) < 3).all(), (key, z)
    # Learned, not the prior: two months of hourly ageing pin each unit's creep rate.
    low, high = model.prior["k_ref"]
    assert (est["k_ref_std"] < 0.35 * (high - low) / math.sqrt(12)).all()
    numpy.testing.assert_allclose(est["r_ca"], truth["r_ca"], atol=0.01)
    # Each estimate is nearest its own unit's truth, not a neighbour's.
    for key in ("damage", "r_ca"):
        nearest = numpy.abs(est[key][:, None] - x[key][None, :]).argmin(axis=1)
        numpy.testing.assert_array_equal(nearest, numpy.arange(U))
    # The last prediction and innovation are each unit's own.
    numpy.testing.assert_allclose(bf.last_prediction["temperature"], est["temperature"], atol=0.5)
    assert (numpy.abs(bf.last_innovation["temperature"]) < 5).all()
    assert (bf.last_prediction_std["temperature"] >= model.output_noise["temperature"]).all()
    # Units with a faster true creep rate are estimated faster.
    order = numpy.argsort(truth["k_ref"])
    assert numpy.corrcoef(est["k_ref"][order], truth["k_ref"][order])[0, 1] > 0.95


def test_predict_rul_per_unit_matches_a_particle_filter_on_each_units_cloud(tracked_shard) -> None:
    model, truth, bf, _ = tracked_shard
    inputs = {"power": truth["power"], "ambient": truth["ambient"], "fan": 1.0}
    horizon = 1.5 * 3.15e7
    rul = bf.predict_rul(inputs, horizon_s=horizon)
    assert all(rul[k].shape == (U,) for k in ("rul_p05_s", "rul_p50_s", "rul_p95_s", "p_fail_in_horizon"))
    p50, exact = [], 0
    for unit in range(U):
        single = ParticleFilter(model, bf.particles)
        single.x, single.w = bf.cloud(unit)
        alone = single.predict_rul({"power": float(truth["power"][unit]), "ambient": float(truth["ambient"][unit]),
                                    "fan": 1.0}, horizon_s=horizon)
        assert rul["p_fail_in_horizon"][unit] == pytest.approx(alone["p_fail_in_horizon"], abs=1e-12)
        for key in ("rul_p05_s", "rul_p50_s", "rul_p95_s"):
            if alone[key] is None:
                assert math.isnan(rul[key][unit])
            else:  # ParticleFilter refines clouds that all fail early; the shard keeps horizon / 200 steps,
                # and each counts a crossing at the end of its step: apart by less than both steps
                assert rul[key][unit] == pytest.approx(alone[key], abs=2 * horizon / 200)
                exact += rul[key][unit] == alone[key]
        p50.append(numpy.inf if alone["rul_p50_s"] is None else alone["rul_p50_s"])
    assert exact > 0
    assert 0 < numpy.isfinite(rul["rul_p50_s"]).sum() < U  # some units fail within the horizon, some do not
    beyond = {k: numpy.where(numpy.isnan(rul[k]), numpy.inf, rul[k]) for k in ("rul_p05_s", "rul_p50_s", "rul_p95_s")}
    assert numpy.all(numpy.diff(beyond["rul_p50_s"][numpy.argsort(p50, kind="stable")]) >= -2 * horizon / 200)
    assert (beyond["rul_p05_s"] <= beyond["rul_p50_s"]).all() and (beyond["rul_p50_s"] <= beyond["rul_p95_s"]).all()


def test_a_unit_without_data_keeps_uniform_weights_and_its_prior_spread() -> None:
    model = PowerModuleThermal()
    truth = {k: v[:3] for k, v in shard_truth(model).items()}
    bf = BatchParticleFilter(model, 3, 500, seed=4)
    first = None
    count = numpy.zeros(3, dtype=int)
    for t, u, y, _ in shard_samples(model, truth, hours=24):
        reading = y["temperature"].copy()
        reading[1] = numpy.nan
        bf.update(t, u, {"temperature": reading})
        if first is None:
            first = {k: v.copy() for k, v in bf.x.items()}
        count += bf.resampled
    assert count[1] == 0 and count[0] > 5 and count[2] > 5
    numpy.testing.assert_array_equal(bf.w[1], numpy.full(500, 1 / 500))
    unit1 = slice(500, 1000)
    for key in ("r_ca", "k_ref"):  # no process noise and never resampled: the initial draws
        numpy.testing.assert_array_equal(bf.x[key][unit1], first[key][unit1])
    est = bf.estimate()
    for key, (low, high) in model.prior.items():
        prior_std = (high - low) / math.sqrt(12)
        assert est[f"{key}_std"][1] == pytest.approx(prior_std, rel=0.15)
        if key != "k_ref":  # a day is too short to show the creep rate; the fan cycle pins the rest
            assert est[f"{key}_std"][0] < 0.1 * prior_std and est[f"{key}_std"][2] < 0.1 * prior_std
    assert math.isnan(bf.last_innovation["temperature"][1])
    assert numpy.isfinite(bf.last_prediction["temperature"]).all()


def test_only_units_whose_ess_fell_below_half_are_resampled() -> None:
    model = PowerModuleThermal()
    bf = BatchParticleFilter(model, 3, 200, seed=5)
    bf.update(0.0, {"power": 30.0, "ambient": 25.0, "fan": 1.0}, {"temperature": numpy.array([30.0, 30.0, 30.0])})
    before = {k: v.copy() for k, v in bf.x.items()}
    w = numpy.full((3, 200), 1 / 200)
    w[0] = 0.0
    w[0, [17, 42]] = 0.5                            # degenerate: ESS 2
    w[2] = numpy.linspace(1.0, 2.0, 200)
    w[2] /= w[2].sum()                              # ESS ~ 0.97 P
    bf.w = w.copy()
    bf.update(0.0, {"power": 30.0, "ambient": 25.0, "fan": 1.0}, {"temperature": numpy.full(3, numpy.nan)})
    numpy.testing.assert_array_equal(bf.resampled, [True, False, False])
    numpy.testing.assert_array_equal(bf.w[0], numpy.full(200, 1 / 200))
    numpy.testing.assert_array_equal(bf.w[1:], w[1:])
    for key, v in bf.x.items():
        numpy.testing.assert_array_equal(v[200:], before[key][200:])
    # Unit 0 is particles 17 and 42, half each; its hidden states jittered along their spread, >= 0.
    assert set(bf.x["r_ca"][:200]) != set(before["r_ca"][[17, 42]])
    for key in model.prior:
        assert (bf.x[key][:200] >= 0).all()
        assert numpy.unique(bf.x[key][:200]).size == 200
        low, high = sorted(before[key][[17, 42]])
        assert low - (high - low) < bf.x[key][:200].mean() < high + (high - low)


def test_liu_west_keeps_each_units_own_mean_and_spread() -> None:
    """The kernel is shaped by each unit's own covariance: a tight cloud is not blown up by a wide neighbour's."""
    model = PumpBearingWear()
    bf = BatchParticleFilter(model, 4, 2000, seed=8)
    bf.update(0.0, {"speed": 1480.0, "load": 100.0}, {"vibration": numpy.full(4, numpy.nan)})
    rng = numpy.random.default_rng(1)
    k = model.params["k"]
    centre, width = numpy.array([0.2, 0.5, 0.8, 0.3]), numpy.array([1e-4, 0.05, 1e-3, 0.1])
    bf.x["wear"] = (centre[:, None] + width[:, None] * rng.standard_normal((4, 2000))).ravel()
    bf.x["k"] = (k * (1 + width[:, None] * rng.standard_normal((4, 2000)))).ravel()
    w = (rng.random((4, 2000)) < 0.3).astype(float)  # ESS 0.3 P: every unit resamples
    w /= w.sum(axis=1, keepdims=True)
    before = {key: (bf.x[key].reshape(4, 2000) * w).sum(axis=1) for key in ("wear", "k")}
    spread = {key: numpy.sqrt((w * (bf.x[key].reshape(4, 2000) - before[key][:, None]) ** 2).sum(axis=1))
              for key in ("wear", "k")}
    bf.w = w
    bf.update(0.0, {"speed": 1480.0, "load": 100.0}, {"vibration": numpy.full(4, numpy.nan)})
    assert bf.resampled.all()
    for key in ("wear", "k"):
        after = bf.x[key].reshape(4, 2000)
        numpy.testing.assert_allclose(after.mean(axis=1), before[key], atol=0, rtol=0.01)
        numpy.testing.assert_allclose(after.std(axis=1), spread[key], rtol=0.15)


def test_nan_readings_leave_that_units_weights_unchanged() -> None:
    model = PowerModuleThermal()
    bf = BatchParticleFilter(model, 3, 300, seed=6)
    u = {"power": numpy.array([20.0, 30.0, 40.0]), "ambient": 25.0, "fan": 1.0}
    bf.update(0.0, u, {"temperature": numpy.array([30.0, 35.0, 40.0])})
    rng = numpy.random.default_rng(0)
    w = rng.uniform(0.8, 1.2, (3, 300))
    w /= w.sum(axis=1, keepdims=True)               # uneven but healthy (ESS ~ 0.99 P)
    bf.w = w.copy()
    bf.update(10.0, u, {"temperature": numpy.array([31.0, numpy.nan, 41.0])})
    assert not bf.resampled[1]
    numpy.testing.assert_array_equal(bf.w[1], w[1])
    assert not numpy.allclose(bf.w[0], w[0]) and not numpy.allclose(bf.w[2], w[2])
    assert numpy.allclose(bf.w.sum(axis=1), 1.0)
    assert math.isnan(bf.last_innovation["temperature"][1])


def test_row_wise_systematic_resampling_picks_what_searchsorted_picks() -> None:
    """The linear-time picks equal ParticleFilter's searchsorted ones, ties on the cumulative weights included."""
    rng = numpy.random.default_rng(1)
    for trial in range(200):
        rows, n = 6, int(rng.integers(1, 50))
        w = rng.random((rows, n)) ** rng.uniform(1, 30)
        w[rng.random((rows, n)) < 0.3] = 0.0
        w[:, -1] += 1e-300
        w /= w.sum(axis=1, keepdims=True)
        w[0] = 0.0
        w[0, n // 2] = 1.0                          # degenerate
        w[1] = 1.0 / n                              # uniform: positions land on the cumulative weights
        offsets = rng.random(rows)
        offsets[1:3] = 0.0
        got = systematic_indices(numpy, w, offsets)
        for r in range(rows):
            positions = (offsets[r] + numpy.arange(n)) / n
            want = numpy.minimum(numpy.searchsorted(numpy.cumsum(w[r]), positions), n - 1)
            numpy.testing.assert_array_equal(got[r], want, err_msg=f"trial {trial} row {r}")


class CountingModule(PowerModuleThermal):
    """Records the size of every ``next_state`` and ``output`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    def next_state(self, x, u, dt):
        self.calls.append(("next_state", x["damage"].shape[0]))
        return super().next_state(x, u, dt)

    def output(self, x, u):
        self.calls.append(("output", x["damage"].shape[0]))
        return super().output(x, u)


@pytest.mark.parametrize("block_units, sizes", [(None, [800]), (8, [800]), (3, [300, 300, 200])])
def test_the_model_steps_the_shard_in_one_call_or_a_few_blocks(block_units, sizes) -> None:
    model = CountingModule()
    bf = BatchParticleFilter(model, 8, 100, block_units=block_units)
    u = {"power": numpy.linspace(20.0, 60.0, 8), "ambient": 25.0, "fan": 1.0}
    bf.update(0.0, u, {"temperature": numpy.full(8, 40.0)})
    model.calls.clear()
    bf.update(1.0, u, {"temperature": numpy.full(8, 40.5)})
    assert model.calls == [c for size in sizes for c in (("next_state", size), ("output", size))]


def test_per_unit_inputs_are_repeated_to_each_units_particles() -> None:
    model = PowerModuleThermal()
    bf = BatchParticleFilter(model, 3, 4)
    u = bf.expand({"power": numpy.array([1.0, 2.0, 3.0]), "fan": 1.0})
    numpy.testing.assert_array_equal(u["power"], numpy.repeat([1.0, 2.0, 3.0], 4))
    assert u["fan"] == 1.0
    with pytest.raises(TwinError):
        bf.expand({"power": numpy.ones(12)})


def test_the_same_code_runs_on_cupy_where_a_gpu_is() -> None:
    cupy = pytest.importorskip("cupy")
    try:
        cupy.zeros(1).sum().item()
    except Exception as err:  # cupy imports without a GPU; the first CUDA call fails
        pytest.skip(f"no usable GPU: {err}")
    model = PowerModuleThermal()
    truth = shard_truth(model)
    on_cpu, on_gpu = BatchParticleFilter(model, U, 2000, seed=3), BatchParticleFilter(model, U, 2000, seed=3, xp=cupy)
    for t, u, y, x in shard_samples(model, truth, hours=48):
        on_cpu.update(t, u, y)
        on_gpu.update(t, {k: cupy.asarray(v) for k, v in u.items()}, {"temperature": cupy.asarray(y["temperature"])})
    assert all(type(v).__module__.startswith("cupy") for v in on_gpu.x.values())
    assert type(on_gpu.w).__module__.startswith("cupy")
    gpu, cpu = on_gpu.estimate(), on_cpu.estimate()
    assert all(isinstance(v, numpy.ndarray) and v.shape == (U,) for v in gpu.values())
    for key in ("damage", "r_ca"):  # different random streams: agree within Monte Carlo error
        assert (numpy.abs(gpu[key] - x[key]) < 3 * gpu[f"{key}_std"] + 1e-3).all()
        assert (numpy.abs(gpu[key] - cpu[key]) < 3 * (gpu[f"{key}_std"] + cpu[f"{key}_std"]) + 1e-3).all()
    rul = on_gpu.predict_rul({"power": truth["power"], "ambient": truth["ambient"], "fan": 1.0})
    assert isinstance(rul["rul_p50_s"], numpy.ndarray) and rul["rul_p50_s"].shape == (U,)
