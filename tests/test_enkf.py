"""The ensemble Kalman filter: hidden states and per-unit parameters from noisy outputs, RUL, missing data."""

from __future__ import annotations

import copy
import math

import numpy
import pytest

from twinloop.rigs.emulators.pump import PumpDevice
from twinloop.twins.actor import DeviceTwin
from twinloop.twins.enkf import EnsembleKalmanFilter
from twinloop.twins.estimate import ParticleFilter
from twinloop.twins.models.capacitor import ElectrolyticCapacitorAgeing
from twinloop.twins.models.power_module import PowerModuleThermal
from twinloop.twins.models.pump_bearing import PumpBearingWear

NOMINAL = {"speed": 1480.0, "load": 100.0}
HOUR = 3600.0
SAMPLE_S = 600.0  # a pump sample every 10 min, as in tests/test_pump.py
K_NOM = PumpBearingWear().params["k"]


def life_s(model: PumpBearingWear, k: float, wear: float = 0.0) -> float:
    """Time from ``wear`` to the vibration limit at nominal speed and load (closed form, as tests/test_pump.py)."""
    g = model.params["g"]
    return math.log((1 + g * model.wear_limit) / (1 + g * wear)) / (g * k)


def pump(k_factor: float, initial_wear: float, seed: int) -> PumpDevice:
    device = PumpDevice(k=k_factor * K_NOM, initial_wear=initial_wear, seed=seed)  # sensor noise 0.05 mm/s
    device.write("speed", NOMINAL["speed"])
    device.write("load", NOMINAL["load"])
    return device


def run_pump(device: PumpDevice, filt: EnsembleKalmanFilter, until_s: float, every: int = 0) -> tuple[float, list]:
    """Feed ``filt`` the pump's noisy vibration every 10 min until ``until_s``; estimates every ``every`` samples."""
    t, seen = 0.0, []
    while t < until_s:
        device.step(SAMPLE_S)
        t += SAMPLE_S
        filt.update(t, device.inputs(), {"vibration": device.values["vibration"]})
        if every and len(filt.last_innovation) and round(t / SAMPLE_S) % every == 0:
            seen.append((filt.estimate(), device.wear))
    return t, seen


def drive(twin: DeviceTwin, damage: float, r_ca: float, seconds: int = 600, fan_off_at: int | None = 200,
          fan_on_at: int | None = 400, every: int = 0) -> list:
    """tests/test_twins.py's ``drive``: a true power module with hidden ``damage`` and ``r_ca``, fan on, off, on.

    The fan scales only the heatsink path, so the cycle separates ``r_ca`` from
    the damage (junction-to-case) that raise the temperature alike with the fan
    steady. Returns the twin's estimate every ``every`` seconds.
    """
    model = PowerModuleThermal()
    x = model.initial_state(1, damage=damage, r_ca=r_ca)
    rng = numpy.random.default_rng(3)
    u = {"power": 30.0, "ambient": 25.0, "fan": 1.0}
    seen = []
    for k in range(seconds):
        if k == fan_off_at:
            u["fan"] = 0.0
        if k == fan_on_at:
            u["fan"] = 1.0
        x = model.next_state(x, u, 1.0)
        twin.assimilate(float(k), dict(u, temperature=float(x["temperature"][0]) + rng.normal(0, 0.05)))
        if every and (k + 1) % every == 0:
            seen.append(twin.filter.estimate())
    return seen


def enkf_twin(seed: int = 1) -> DeviceTwin:
    """A power-module DeviceTwin running on the ensemble Kalman filter instead of its particle filter."""
    twin = DeviceTwin("m", "power_module_thermal", seed=seed)
    twin.filter = EnsembleKalmanFilter(twin.model, 200, seed=seed)
    return twin


# -- pump bearing: hidden wear and the bearing's own wear rate ---------------------------------------


@pytest.mark.parametrize(("k_factor", "initial_wear", "seed"), [(1.0, 0.0, 0), (0.5, 0.0, 1), (2.0, 0.0, 2),
                                                               (1.0, 0.5, 3)])
def test_pump_wear_and_the_bearings_own_k_are_recovered_from_noisy_vibration(
        k_factor: float, initial_wear: float, seed: int) -> None:
    """At 70 % of life: wear within 0.01 (measured <= 0.002), k within 15 % (measured <= 5 %), both within 3 std."""
    device = pump(k_factor, initial_wear, seed)
    enkf = EnsembleKalmanFilter(PumpBearingWear(), 200, seed=seed)
    innovations, t = [], 0.0
    while t < 0.7 * life_s(device.model, device.k, initial_wear):
        device.step(SAMPLE_S)
        t += SAMPLE_S
        enkf.update(t, device.inputs(), {"vibration": device.values["vibration"]})
        innovations.append(enkf.last_innovation["vibration"])
    assert numpy.abs(innovations[len(innovations) // 2:]).mean() < 2.0  # one-step predictions within noise
    est = enkf.estimate()
    assert est["wear"] == pytest.approx(device.wear, abs=0.01)
    assert abs(est["wear"] - device.wear) < 3 * est["wear_std"]
    assert est["k"] == pytest.approx(device.k, rel=0.15)
    assert abs(est["k"] - device.k) < 3 * est["k_std"]
    assert est["health"] == pytest.approx(1 - device.wear / device.model.wear_limit, abs=0.02)


def test_the_reported_std_shrinks_as_data_arrives_and_the_truth_stays_within_3_std() -> None:
    device = pump(1.3, 0.1, 7)
    enkf = EnsembleKalmanFilter(PumpBearingWear(), 200, seed=7)
    _, seen = run_pump(device, enkf, 0.7 * life_s(device.model, device.k, 0.1), every=60)  # every 10 h
    assert len(seen) >= 8
    for est, wear in seen:
        assert abs(est["wear"] - wear) < 3 * est["wear_std"]
        assert abs(est["k"] - device.k) < 3 * est["k_std"]
    k_std = [est["k_std"] for est, _ in seen]
    prior_k_std = (3.0 - 0.3) * K_NOM / math.sqrt(12)
    assert k_std[0] < prior_k_std and k_std[-1] < k_std[0] / 2 and k_std[-1] < 0.05 * device.k


def test_power_module_std_shrinks_through_the_fan_cycle_and_holds_the_truth() -> None:
    """Fan steady: damage and r_ca uncertain (std > 0.01), not wrong; after the cycle both are pinned."""
    twin = enkf_twin()
    seen = drive(twin, 0.08, 0.88, every=100)
    for est in seen:
        assert abs(est["damage"] - 0.08) < 3 * est["damage_std"]
        assert abs(est["r_ca"] - 0.88) < 3 * est["r_ca_std"]
    before, after = seen[1], seen[-1]  # t = 200 s (fan on so far), t = 600 s (after on, off, on)
    assert before["damage_std"] > 0.01 and before["r_ca_std"] > 0.005
    assert after["damage_std"] < before["damage_std"] / 10 and after["r_ca_std"] < before["r_ca_std"] / 10


# -- power module: damage and the unit's own heatsink path through a fan cycle -----------------------


@pytest.mark.parametrize("r_ca", [0.72, 0.8, 0.88])
@pytest.mark.parametrize("damage", [0.02, 0.08, 0.12])
def test_power_module_damage_and_r_ca_are_recovered_with_a_fan_cycle(damage: float, r_ca: float) -> None:
    """Damage and r_ca within 0.005 (measured <= 0.0008 and <= 0.0002), within 3 std; through DeviceTwin."""
    twin = enkf_twin()
    drive(twin, damage, r_ca)
    est = twin.estimate()
    assert est["damage"] == pytest.approx(damage, abs=0.005)
    assert est["r_ca"] == pytest.approx(r_ca, abs=0.005)
    assert abs(est["damage"] - damage) < 3 * est["damage_std"]
    assert abs(est["r_ca"] - r_ca) < 3 * est["r_ca_std"]
    assert est["health"] == pytest.approx(1 - damage / 0.2, abs=0.025)
    assert est["rul_p05_s"] <= est["rul_p50_s"] <= est["rul_p95_s"]
    # k_ref (the solder's creep rate) cannot show in 10 minutes: it keeps most of its prior spread.
    low, high = twin.model.prior["k_ref"]
    assert est["k_ref_std"] > 0.5 * (high - low) / math.sqrt(12)


def test_a_nonlinear_output_needs_no_jacobian() -> None:
    """The capacitor's ESR is esr0 / (1 - loss): the ensemble's own statistics linearise it."""
    model = ElectrolyticCapacitorAgeing()
    u = {"ambient": 85.0, "ripple": 2.0}
    x = model.initial_state(1, loss=0.05, life_factor=0.6)
    rng = numpy.random.default_rng(1)
    enkf = EnsembleKalmanFilter(ElectrolyticCapacitorAgeing(), 200, seed=1)
    for k in range(200):  # twice a day for 100 days
        if k:
            x = model.next_state(x, u, 12 * HOUR)
        y = model.output(x, u)
        enkf.update(k * 12 * HOUR, u, {"esr": float(y["esr"][0]) + rng.normal(0.0, 5e-4),
                                       "capacitance": float(y["capacitance"][0]) + rng.normal(0.0, 5.0)})
    est = enkf.estimate()
    assert est["loss"] == pytest.approx(float(x["loss"][0]), abs=0.003)  # measured 0.0006
    assert est["life_factor"] == pytest.approx(0.6, rel=0.1)             # measured 2 %


def test_one_analysis_matches_the_kalman_filter_on_a_linear_output() -> None:
    """Vibration is linear in wear: the analysed mean and spread are the Kalman posterior's.

    Without the perturbed observations (Burgers et al. 1998) the analysed
    spread would be (1 - KH) times too small: about 0.0003 here, not 0.008.
    """
    model = PumpBearingWear()
    enkf = EnsembleKalmanFilter(model, 4000, seed=11)
    enkf.update(0.0, NOMINAL, {"vibration": float("nan")})  # members drawn from the prior, nothing analysed
    prior = enkf.x["wear"].copy()
    y, sigma, c = 1.0 + 6.1 * 0.3 + 0.02, 0.05, model.params["c"]
    enkf.update(0.0, NOMINAL, {"vibration": y})  # no time step: the analysis alone
    p = prior.var(ddof=1)
    gain = p * c / (c * c * p + sigma * sigma)
    est = enkf.estimate()
    assert est["wear"] == pytest.approx(prior.mean() + gain * (y - 1.0 - c * prior.mean()), abs=0.001)
    assert est["wear_std"] == pytest.approx(math.sqrt((1 - gain * c) * p), rel=0.1)
    assert enkf.last_prediction["vibration"] == pytest.approx(1.0 + c * prior.mean())


def test_states_kept_non_negative_are_clipped_after_the_analysis_and_the_rest_are_not() -> None:
    enkf = EnsembleKalmanFilter(PumpBearingWear(), 200, seed=0)
    enkf.update(0.0, NOMINAL, {"vibration": 0.5})  # below a new bearing's 1 mm/s: pulls wear below zero
    assert (enkf.x["wear"] >= 0).all() and (enkf.x["k"] >= 0).all() and (enkf.x["wear"] == 0).any()
    cold = EnsembleKalmanFilter(PowerModuleThermal(), 200, seed=0)
    u = {"power": 0.0, "ambient": -20.0, "fan": 1.0}
    for t in range(3):
        cold.update(float(t), u, {"temperature": -20.0})
    assert cold.estimate()["temperature"] == pytest.approx(-20.0, abs=0.1)  # degC: not a clipped state
    assert (cold.x["damage"] >= 0).all() and (cold.x["r_ca"] >= 0).all() and (cold.x["k_ref"] >= 0).all()


# -- remaining useful life ----------------------------------------------------------------------------


@pytest.mark.parametrize(("k_factor", "initial_wear", "seed", "fraction"),
                         [(1.0, 0.0, 0, 0.5), (0.7, 0.2, 4, 0.7), (1.4, 0.1, 5, 0.3), (2.0, 0.0, 2, 0.7)])
def test_rul_percentiles_are_ordered_and_the_median_is_near_the_true_remaining_life(
        k_factor: float, initial_wear: float, seed: int, fraction: float) -> None:
    """The median within 15 % of the closed-form remaining life (measured <= 5 % at 70 %, <= 8 % at 30 %)."""
    device = pump(k_factor, initial_wear, seed)
    life = life_s(device.model, device.k, initial_wear)
    enkf = EnsembleKalmanFilter(PumpBearingWear(), 200, seed=seed)
    t, _ = run_pump(device, enkf, fraction * life)
    rul = enkf.predict_rul(device.inputs())
    true_rul = life - t
    assert 0 < rul["rul_p05_s"] <= rul["rul_p50_s"] <= rul["rul_p95_s"]
    assert rul["rul_p50_s"] == pytest.approx(true_rul, rel=0.15)
    assert rul["rul_p05_s"] <= true_rul <= rul["rul_p95_s"]
    assert rul["p_fail_in_horizon"] == pytest.approx(1.0) and rul["horizon_s"] == PumpBearingWear.rul_horizon_s
    # Beyond a short horizon: the percentiles that do not fail in it are None, as the particle filter reports.
    short = enkf.predict_rul(device.inputs(), horizon_s=0.5 * true_rul)
    assert short["rul_p50_s"] is None and short["p_fail_in_horizon"] < 0.5


# -- missing data --------------------------------------------------------------------------------------


@pytest.mark.parametrize("reading", [{"vibration": float("nan")}, {"vibration": None}, {},
                                     {"bearing_temperature": 40.0}])
def test_a_missing_output_leaves_the_ensemble_to_its_forecast(reading: dict) -> None:
    model = PumpBearingWear()
    model.process_noise = {}  # a deterministic forecast, so "the forecast" is next_state exactly
    device = pump(1.0, 0.2, 3)
    enkf = EnsembleKalmanFilter(model, 200, seed=3)
    t, _ = run_pump(device, enkf, 20 * SAMPLE_S)
    before = copy.deepcopy(enkf.x)
    enkf.update(t + SAMPLE_S, NOMINAL, reading)
    forecast = model.next_state(before, NOMINAL, SAMPLE_S)
    for key in model.states:
        numpy.testing.assert_array_equal(enkf.x[key], forecast[key])
    assert enkf.last_innovation == {} and enkf.last_prediction == {} and enkf.t == t + SAMPLE_S


def test_a_missing_output_with_process_noise_is_the_same_as_no_reading() -> None:
    """With the model's process noise: NaN, absent and unknown readings all give the very same forecast."""
    branches = []
    for reading in ({"vibration": float("nan")}, {}, {"bearing_temperature": 40.0}, None):
        enkf = EnsembleKalmanFilter(PumpBearingWear(), 200, seed=3)  # same seed, same samples: same ensemble
        t, _ = run_pump(pump(1.0, 0.2, 3), enkf, 20 * SAMPLE_S)
        spread_before = enkf.estimate()["wear_std"]
        if reading is not None:
            enkf.update(t + SAMPLE_S, NOMINAL, reading)
        branches.append(enkf)
    nan, absent, unknown, untouched = branches
    for key in nan.x:
        numpy.testing.assert_array_equal(nan.x[key], absent.x[key])
        numpy.testing.assert_array_equal(nan.x[key], unknown.x[key])
        assert not numpy.array_equal(nan.x[key], untouched.x[key])  # the forecast did run
    assert nan.estimate()["wear_std"] >= 0.9 * spread_before  # no analysis tightened it


def test_of_two_outputs_a_nan_one_is_left_out_and_the_other_used() -> None:
    model = ElectrolyticCapacitorAgeing()
    u = {"ambient": 85.0, "ripple": 2.0}
    branches = []
    for reading in ({"esr": float("nan"), "capacitance": 940.0}, {"capacitance": 940.0},
                    {"esr": float("nan"), "capacitance": float("nan")}):
        enkf = EnsembleKalmanFilter(model, 200, seed=2)
        enkf.update(0.0, u, {"esr": 0.0525, "capacitance": 950.0})
        enkf.update(HOUR, u, reading)
        branches.append(enkf)
    one, only_c, both_nan = branches
    for key in model.states:
        numpy.testing.assert_array_equal(one.x[key], only_c.x[key])
    assert set(one.last_innovation) == {"capacitance"} and both_nan.last_innovation == {}
    assert one.estimate()["loss_std"] < both_nan.estimate()["loss_std"]


# -- against the particle filter, and in the twin actor ------------------------------------------------


@pytest.mark.parametrize(("k_factor", "initial_wear", "seed"), [(1.0, 0.0, 0), (0.6, 0.3, 6)])
def test_the_enkf_and_the_particle_filter_agree_on_the_pumps_wear(
        k_factor: float, initial_wear: float, seed: int) -> None:
    """Same samples into both: wear (and k) agree within 3 of their combined std at every 10 h."""
    device = pump(k_factor, initial_wear, seed)
    enkf = EnsembleKalmanFilter(PumpBearingWear(), 200, seed=seed)
    pf = ParticleFilter(PumpBearingWear(), 1000, seed=seed)
    t, checked = 0.0, 0
    while t < 0.7 * life_s(device.model, device.k, initial_wear):
        device.step(SAMPLE_S)
        t += SAMPLE_S
        reading = {"vibration": device.values["vibration"]}
        enkf.update(t, device.inputs(), reading)
        pf.update(t, device.inputs(), reading)
        if round(t / SAMPLE_S) % 60 == 0:
            e, p = enkf.estimate(), pf.estimate()
            for key in ("wear", "k"):
                assert abs(e[key] - p[key]) < 3 * math.hypot(e[f"{key}_std"], p[f"{key}_std"]), (t, key)
            checked += 1
    assert checked >= 10
    assert enkf.estimate()["wear"] == pytest.approx(pf.estimate()["wear"], abs=0.005)


def test_the_twin_actor_runs_on_the_enkf_and_skips_a_nan_reading() -> None:
    device = pump(1.0, 0.4, 5)
    twin = DeviceTwin("pump", "pump_bearing", seed=5, rul_every_s=HOUR)
    twin.filter = EnsembleKalmanFilter(twin.model, 200, seed=5)
    for k in range(20):
        device.step(SAMPLE_S)  # first, so no reading is the emulator's 0 mm/s from before it ran
        signals = dict(device.inputs(), vibration=device.values["vibration"])
        if k == 7:
            signals["vibration"] = float("nan")
        twin.assimilate(k * SAMPLE_S, signals)
    history = twin.history()
    assert {len(column) for column in history.values()} == {20}
    assert history["innovation_vibration"][7] is None and history["innovation_vibration"][8] is not None
    assert all(s > 0.05 for s in history["predicted_vibration_std"] if s is not None)  # >= the sensor noise
    final = twin.estimate()
    assert final["wear"] == pytest.approx(device.wear, abs=0.01)
    assert 0 < final["rul_p05_s"] <= final["rul_p50_s"] <= final["rul_p95_s"]


def test_constructor_and_an_empty_filter() -> None:
    enkf = EnsembleKalmanFilter(PumpBearingWear())
    assert enkf.n == 200 and enkf.x is None and enkf.t is None
    assert enkf.estimate() == {} and enkf.predict_rul(NOMINAL) == {}
    with pytest.raises(ValueError, match="at least 2 members"):
        EnsembleKalmanFilter(PumpBearingWear(), 1)


def test_the_same_code_runs_on_cupy_where_a_gpu_is() -> None:
    cupy = pytest.importorskip("cupy")
    try:
        cupy.zeros(1).sum().item()
    except Exception as err:  # cupy imports without a GPU; the first CUDA call fails
        pytest.skip(f"no usable GPU: {err}")
    device = pump(1.0, 0.2, 3)
    enkf = EnsembleKalmanFilter(PumpBearingWear(), 200, seed=3, xp=cupy)
    t, _ = run_pump(device, enkf, 0.5 * life_s(device.model, device.k, 0.2))
    assert type(enkf.x["wear"]).__module__.startswith("cupy")
    est = enkf.estimate()
    assert est["wear"] == pytest.approx(device.wear, abs=0.01)
    assert est["k"] == pytest.approx(device.k, rel=0.15)
    rul = enkf.predict_rul(device.inputs())
    assert rul["rul_p05_s"] <= rul["rul_p50_s"] <= rul["rul_p95_s"]
