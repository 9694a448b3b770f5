"""CMA-ES for the stateless builtin engine: Optuna's CmaEsSampler, its state replayed from trials.

Optuna's CmaEsSampler keeps its state in trial system attrs: each asked trial records the CMA
generation it was sampled in, and the trial that triggers an update stores the pickled
optimizer. A study rebuilt from observed trials has neither, so the stock sampler starts over at
generation 0 on every pass and never learns (every proposal comes from the initial
distribution). This subclass rebuilds the optimizer instead: it skips the first `startupTrials`
completed trials (sampled at random, as Optuna does), cuts the remaining completed trials, in
trial-index order, into generations of `population_size`, and tells each full generation in
turn. Sequential searches replay exactly the updates native Optuna makes; with parallel trials
a generation is the next `population_size` completions by index. The ask is seeded from the
sampler's seed and the trial number, so the same trials give the same proposal.

Uses CmaEsSampler's private helpers (`_init_optimizer`, `_get_trials`) and Optuna's
`_SearchSpaceTransform`, exactly as the sampler itself does; optuna is pinned in pyproject.toml.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import optuna
from optuna._transform import _SearchSpaceTransform
from optuna.distributions import BaseDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial


class ReplayedCmaEsSampler(optuna.samplers.CmaEsSampler):
    """CmaEsSampler whose optimizer is rebuilt from the study's completed trials on each ask."""

    def __init__(self, seed: int, startup_trials: int) -> None:
        # Optuna imports `cmaes` lazily, at the first ask: fail here, as an EngineError.
        if importlib.util.find_spec("cmaes") is None:
            raise ValueError("spec.search.algorithm cmaes needs the cmaes package, which this "
                             "operator image lacks")
        # Categorical parameters go to the independent sampler; seed it so they replay too.
        super().__init__(seed=seed, n_startup_trials=startup_trials,
                         independent_sampler=optuna.samplers.RandomSampler(seed=seed),
                         warn_independent_sampling=False)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        completed = self._get_trials(study)
        if len(completed) < self._n_startup_trials:
            return {}
        optimizer, transform = self.replay(study, search_space)
        # Same seed derivation as CmaEsSampler.sample_relative: a fresh per-trial stream.
        optimizer._rng.seed(self._cma_rng.rng.randint(1, 2**16) + trial.number)
        return dict(transform.untransform(optimizer.ask()))

    def replay(self, study: optuna.Study, search_space: dict[str, BaseDistribution]
               ) -> tuple[Any, _SearchSpaceTransform]:
        """The optimizer after telling every full generation of completed trials, in order."""
        transform = _SearchSpaceTransform(search_space, transform_step=True,
                                          transform_0_1=True)
        optimizer = self._init_optimizer(transform, study.direction)
        sign = 1.0 if study.direction == StudyDirection.MINIMIZE else -1.0  # cmaes minimizes
        solutions: list[tuple[np.ndarray, float]] = []
        for frozen in self._get_trials(study)[self._n_startup_trials:]:
            if frozen.value is None or not all(name in frozen.params for name in search_space):
                continue  # a trial from before a space change: not a sample of this space
            solutions.append((transform.transform(frozen.params), sign * frozen.value))
        size = optimizer.population_size
        for start in range(0, len(solutions) - size + 1, size):
            optimizer.tell(solutions[start:start + size])
        return optimizer, transform
