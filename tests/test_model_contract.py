"""Every registered twin model keeps the array contract: many units per call, each as if alone, on NumPy or CuPy."""

from __future__ import annotations

import numpy
import pytest

from twinloop.twins.registry import models

NAMES = models.names()


def _units(model, n: int, xp=numpy):
    """``n`` units spread over each prior (or the fresh state), under default inputs."""
    rng = numpy.random.default_rng(5)
    overrides = {k: xp.asarray(rng.uniform(lo, hi, n)) for k, (lo, hi) in model.prior.items() if k in model.states}
    return model.initial_state(n, xp, **overrides), {k: float(v) for k, v in model.default_inputs().items()}


@pytest.mark.parametrize("name", NAMES)
def test_a_batch_steps_each_unit_as_if_alone(name: str) -> None:
    model = models.get(name)()
    x, u = _units(model, 5)
    batch = model.next_state(x, u, 60.0)
    assert set(batch) == set(model.states)
    for k in range(5):
        alone = model.next_state({s: v[k:k + 1] for s, v in x.items()}, u, 60.0)
        for s in model.states:
            numpy.testing.assert_allclose(batch[s][k], alone[s][0], rtol=1e-12, atol=0)
    outputs = model.output(batch, u)
    assert set(outputs) == set(model.outputs) and all(v.shape == (5,) for v in outputs.values())
    health = model.health(batch)
    assert health.shape == (5,) and ((0 <= health) & (health <= 1)).all()
    assert model.threshold_met(batch).shape == (5,)


@pytest.mark.parametrize("name", NAMES)
def test_the_same_code_runs_on_cupy_where_a_gpu_is(name: str) -> None:
    cupy = pytest.importorskip("cupy")
    try:
        cupy.zeros(1).sum().item()
    except Exception as err:  # cupy imports without a GPU; the first CUDA call fails
        pytest.skip(f"no usable GPU: {err}")
    model = models.get(name)()
    x, u = _units(model, 5)
    on_gpu = model.next_state({k: cupy.asarray(v) for k, v in x.items()}, u, 60.0)
    on_cpu = model.next_state(x, u, 60.0)
    for s in model.states:
        assert type(on_gpu[s]).__module__.startswith("cupy")
        numpy.testing.assert_allclose(on_gpu[s].get(), on_cpu[s], rtol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_state_limits_name_states_and_hold_the_fresh_state_and_prior(name: str) -> None:
    model = models.get(name)()
    assert set(model.state_limits) <= set(model.states)
    x = model.initial_state(1)
    for state, (low, high) in model.state_limits.items():
        assert low <= high and low <= float(x[state][0]) <= high, state
        if state in model.prior:
            lo, hi = model.prior[state]
            assert low <= lo and hi <= high, state
