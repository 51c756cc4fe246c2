"""convergence_analysis's exact standard deviation equals statistics.pstdev bit for bit."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from diffai.analyses.convergence import _median, population_stdev
from diffai.change import RelativeChange

EDGES = [
    [1.0, 1.0],
    [0.0, -0.0],
    [1e300, -1e300],
    [5e-324, 0.0],
    [1e-300, 1e300, 3.5],
    [float(2**60), 1.0, -2.0],
    [1.0, 1.0 + 2**-52, 1.0 - 2**-53],
    [1.7e308, 1.7e308],
]


@pytest.mark.parametrize("values", EDGES)
def test_the_edges_equal_pstdev(values: list[float]) -> None:
    assert population_stdev(values) == statistics.pstdev(values)


def _sample(rng: random.Random) -> list[float]:
    count = rng.randint(2, 60)
    kind = rng.randrange(4)
    if kind == 0:
        return [rng.gauss(0.0, 1.0) for _ in range(count)]
    if kind == 1:  # decades of relative changes, as the analysis takes them
        decades = (rng.random() * 10.0 ** rng.randint(-20, 5) for _ in range(count))
        return [math.log10(value + 5e-324) for value in decades]
    if kind == 2:
        return [rng.uniform(-1.0, 1.0) * 2.0 ** rng.randint(-1074, 1020) for _ in range(count)]
    return [rng.choice([1.0, 1.0 + 2**-52, -3.0, 0.1]) for _ in range(count)]


def test_random_values_equal_pstdev() -> None:
    rng = random.Random(16)
    for _ in range(2000):
        values = _sample(rng)
        assert population_stdev(values) == statistics.pstdev(values), values


def test_the_median_is_statistics_median_zeros_signs_included() -> None:
    rng = random.Random(5)
    pool = [0.0, -0.0, 1.0, 2.5, None, 1e-300, 5e-324, 0.75]
    for _ in range(2000):
        values = [rng.choice(pool) for _ in range(rng.randint(1, 40))]
        changes = {str(i): RelativeChange(value, "self") for i, value in enumerate(values)}
        known = [value for value in values if value is not None]
        expected = statistics.median(known) if known else None
        assert repr(_median(changes)) == repr(expected), values
