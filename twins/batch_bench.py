"""Time one fleet shard's filter step: BatchParticleFilter(units x particles) against ``units`` ParticleFilters.

The timed step is each filter's second update (forecast 60 s, likelihood,
then resampling: the prior clouds are broad, so every unit degenerates and
resamples, systematic + Liu-West), on readings of simulated true modules with
their own damage, heatsink and load. Fresh filters per repetition; set-up and
the first update are not timed. Run:
``OMP_NUM_THREADS=1 python -m twinloop.twins.batch_bench [units] [particles] [repeats] [block_units]``
(block_units 0: the filter's default, cache-sized blocks on NumPy).
"""

from __future__ import annotations

import sys
import time

import numpy

from twinloop.twins.batch import BatchParticleFilter
from twinloop.twins.estimate import ParticleFilter
from twinloop.twins.models.power_module import PowerModuleThermal


def main(units: int = 1000, particles: int = 1000, repeats: int = 3, block_units: int = 0) -> None:
    model = PowerModuleThermal()
    rng = numpy.random.default_rng(0)
    power = rng.uniform(40.0, 90.0, units)
    u = {"power": power, "ambient": 25.0, "fan": 1.0}
    truth = model.initial_state(units, damage=rng.uniform(0.0, 0.15, units), r_ca=rng.uniform(0.65, 0.95, units),
                                temperature=rng.uniform(60.0, 100.0, units))
    first = truth["temperature"] + rng.normal(0.0, 0.1, units)
    second = model.next_state(truth, u, 60.0)["temperature"] + rng.normal(0.0, 0.1, units)

    shard, loop, resampled = [], [], 0
    for rep in range(repeats):
        batch = BatchParticleFilter(model, units, particles, seed=rep, block_units=block_units or None)
        batch.update(0.0, u, {"temperature": first})
        start = time.perf_counter()
        batch.update(60.0, u, {"temperature": second})
        shard.append(time.perf_counter() - start)
        resampled += int(batch.resampled.sum())

        singles = [ParticleFilter(model, particles, seed=rep * units + k) for k in range(units)]
        inputs = [dict(u, power=float(p)) for p in power]
        for k, pf in enumerate(singles):
            pf.update(0.0, inputs[k], {"temperature": float(first[k])})
        start = time.perf_counter()
        for k, pf in enumerate(singles):
            pf.update(60.0, inputs[k], {"temperature": float(second[k])})
        loop.append(time.perf_counter() - start)

    b, s = float(numpy.median(shard)), float(numpy.median(loop))
    print(f"{units} units x {particles} particles (blocks of {batch.block_units} units), one update+resample "
          f"step, median of {repeats} "
          f"({resampled} of {units * repeats} unit-steps resampled in the shard)")
    print(f"  BatchParticleFilter, one shard: {b * 1e3:8.1f} ms")
    print(f"  {units} x ParticleFilter:        {s * 1e3:8.1f} ms")
    print(f"  speed-up: {s / b:.1f}x")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
