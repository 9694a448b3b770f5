"""The TuneJob search space as Optuna distributions, and the samplers Optuna lacks statelessly.

Grid and QMC points are a pure function of (space, seed, trial index): trial i always gets
point i, so these samplers need no history at all (Optuna's own GridSampler and QMCSampler keep
their position in study storage, which a rebuilt study does not have).
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from scipy.stats import qmc

from cogwork.api.tunejob_spec import Parameter
from cogwork.plan.tunejob_observe import ParamValue

MAX_GRID_POINTS = 1_000_000


def distribution(parameter: Parameter) -> BaseDistribution:
    if parameter.uniform is not None:
        return FloatDistribution(float(parameter.uniform.min), float(parameter.uniform.max))
    if parameter.log_uniform is not None:
        return FloatDistribution(float(parameter.log_uniform.min),
                                 float(parameter.log_uniform.max), log=True)
    if parameter.int_range is not None:
        r = parameter.int_range
        high = r.min + (r.max - r.min) // r.step * r.step  # Optuna wants max on the step grid
        return IntDistribution(r.min, high, step=r.step, log=r.log)
    assert parameter.categorical is not None  # the model guarantees exactly one distribution
    return CategoricalDistribution(list(parameter.categorical.values))


def distributions(parameters: list[Parameter]) -> dict[str, BaseDistribution]:
    return {p.name: distribution(p) for p in parameters}


def contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether a stored parameter value still belongs to the space (else it is left out)."""
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError, IndexError):
        return False


def _choices(dist: BaseDistribution) -> list[ParamValue]:
    if isinstance(dist, CategoricalDistribution):
        return [str(c) for c in dist.choices]
    assert isinstance(dist, IntDistribution)
    return list(range(dist.low, dist.high + 1, dist.step))


def grid_size(space: dict[str, BaseDistribution]) -> int:
    return math.prod(len(_choices(d)) for d in space.values())


def grid_point(space: dict[str, BaseDistribution], seed: int,
               index: int) -> dict[str, ParamValue] | None:
    """Point `index` of the grid in a seeded shuffled order; None once the grid is exhausted."""
    size = grid_size(space)
    if size > MAX_GRID_POINTS:
        raise ValueError(f"the grid has {size} points, more than {MAX_GRID_POINTS}")
    if index >= size:
        return None
    order = np.random.default_rng(seed).permutation(size)
    axes = [_choices(d) for d in space.values()]
    chosen = next(itertools.islice(itertools.product(*axes), int(order[index]), None))
    return dict(zip(space, chosen, strict=True))


def qmc_point(space: dict[str, BaseDistribution], seed: int, index: int) -> dict[str, ParamValue]:
    """Point `index` of a scrambled Sobol sequence, mapped onto each distribution."""
    with warnings.catch_warnings():  # single points break Sobol's power-of-two balance warning
        warnings.simplefilter("ignore", UserWarning)
        sobol = qmc.Sobol(d=len(space), scramble=True, seed=seed)
        if index:
            sobol.fast_forward(index)
        unit = sobol.random(1)[0]
    return {name: _from_unit(dist, float(u)) for (name, dist), u in zip(space.items(), unit,
                                                                        strict=True)}


def _from_unit(dist: BaseDistribution, u: float) -> ParamValue:
    if isinstance(dist, FloatDistribution):
        if dist.log:
            return math.exp(math.log(dist.low) + u * (math.log(dist.high) - math.log(dist.low)))
        return dist.low + u * (dist.high - dist.low)
    if isinstance(dist, IntDistribution) and dist.log:
        value = math.exp(math.log(dist.low) + u * (math.log(dist.high + 1) - math.log(dist.low)))
        return min(dist.high, int(value))
    choices = _choices(dist)
    return choices[min(len(choices) - 1, int(u * len(choices)))]
