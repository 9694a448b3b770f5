"""The builtin search engine: Optuna ask/tell over a study rebuilt from the trials on each pass.

Stateless on purpose: each pass creates an in-memory study, adds every observed trial with
`optuna.trial.create_trial` (running -> RUNNING so TPE's constant liar sees it, failed -> FAIL,
pruned -> PRUNED, with the learning curve as intermediate values and the pruner's rung records
as system attrs), then asks for the next parameters with a sampler seeded from the TuneJob and
the trial index. No database, nothing in memory that a restart could lose; the same trials give
the same proposal. CMA-ES keeps its state in trial attrs a rebuild lacks, so its optimizer is
replayed from the completed trials (cma_replay.py).

ASHA/Hyperband keep per-trial rung records (`completed_rung_<k>`) in Optuna's system attrs. A
rebuilt study without them prunes nothing, so they are rebuilt: from the records the pruner
persisted on the trial when it evaluated it (exact), and for rungs a trial crossed after that
(it completed) from its curve.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState

from cogwork.api.tunejob import TuneJob
from cogwork.api.tunejob_spec import Pruner, Search
from cogwork.plan.tunejob_observe import (
    ParamValue,
    TrialObservation,
    objective_values,
    with_objectives,
)
from cogwork.plan.tunejob_reconcile import (
    EngineDecision,
    Proposal,
    Prune,
    is_terminal,
    next_indices,
)
from cogwork.plan.tunejob_seeds import base_seed, trial_seed
from cogwork.tuning import space
from cogwork.tuning.cma_replay import ReplayedCmaEsSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

_STATES = {"RUNNING": OptunaState.RUNNING, "COMPLETE": OptunaState.COMPLETE,
           "PRUNED": OptunaState.PRUNED, "FAIL": OptunaState.FAIL}


# -- seeds, samplers, pruners -----------------------------------------------------------------

def make_sampler(search: Search, seed: int) -> BaseSampler:
    if search.algorithm == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=search.startup_trials,
                                          multivariate=True, constant_liar=True)
    if search.algorithm == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=search.startup_trials)
    if search.algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if search.algorithm == "cmaes":
        return ReplayedCmaEsSampler(seed=seed, startup_trials=search.startup_trials)
    raise ValueError(f"spec.search.algorithm {search.algorithm} is not supported by the "
                     "builtin engine yet")


def make_pruner(spec: Pruner, startup_trials: int) -> BasePruner:
    if spec.algorithm == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=max(1, startup_trials),
                                           n_warmup_steps=spec.min_resource)
    if spec.algorithm == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec.min_resource, reduction_factor=spec.reduction_factor)
    if spec.algorithm == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=spec.min_resource, max_resource=spec.max_resource or "auto",
            reduction_factor=spec.reduction_factor)
    return optuna.pruners.NopPruner()


def _bracket(pruner: BasePruner, study: optuna.Study, number: int) -> int:
    """Hyperband's bracket of trial `number` (0 for ASHA): its rungs start higher up.

    Uses Hyperband's own (private) assignment so rebuilt records land in the bracket the pruner
    will compare them in; it depends only on the study name and trial number.
    """
    if not isinstance(pruner, optuna.pruners.HyperbandPruner):
        return 0
    if not pruner._pruners:
        pruner._try_initialization(study)
    probe = optuna.trial.create_trial(state=OptunaState.RUNNING)
    probe.number = number
    return int(pruner._get_bracket_id(study, probe))


def curve_rungs(spec: Pruner, curve: dict[int, float], start: int, bracket: int) -> list[float]:
    """Rung records from rung `start` on: the value at the first point at or past each rung."""
    out: list[float] = []
    points = sorted(curve)
    rung = start
    while True:
        step = spec.min_resource * spec.reduction_factor ** (bracket + rung)
        reached = [r for r in points if r >= step]
        if not reached:
            return out
        out.append(curve[reached[0]])
        rung += 1


# -- the study ----------------------------------------------------------------------------------

def build_study(job: TuneJob, trials: list[TrialObservation], sampler: BaseSampler,
                pruner: BasePruner) -> optuna.Study:
    """An in-memory study holding `trials` (ordered by index: trial number = position)."""
    dists = space.distributions(job.spec.parameters)
    objective = job.spec.objective
    study = optuna.create_study(study_name=job.metadata.name,
                                directions=list(objective.directions),
                                sampler=sampler, pruner=pruner)
    frozen = []
    rung_pruner = isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner
                             | optuna.pruners.HyperbandPruner)
    observed = with_objectives(trials, objective.metrics)
    for number, trial in enumerate(sorted(observed, key=lambda t: t.index)):
        params = {k: v for k, v in trial.params.items() if k in dists
                  and space.contains(dists[k], v)}
        rungs = list(trial.rungs)
        if rung_pruner and trial.state == "COMPLETE":
            bracket = _bracket(pruner, study, number)
            rungs += curve_rungs(job.spec.pruner, trial.curve, len(rungs), bracket)
        frozen.append(optuna.trial.create_trial(
            state=_STATES[trial.state],
            values=(objective_values(trial, objective.metrics)
                    if trial.state == "COMPLETE" else None),
            params=params, distributions={k: dists[k] for k in params},
            intermediate_values=dict(trial.curve),
            system_attrs={f"completed_rung_{k}": v for k, v in enumerate(rungs)},
            user_attrs={"name": trial.name},
        ))
    study.add_trials(frozen)
    return study


def suggest(job: TuneJob, trials: list[TrialObservation], index: int,
            study: optuna.Study | None = None) -> dict[str, ParamValue] | None:
    """Parameters of trial `index`; None when the sampler has nothing left (grid).

    With `study`, ask on it (the asked trial stays RUNNING there, so a second ask in the same
    pass sees the first as running, exactly as a rebuilt study would on the next pass).
    """
    search = job.spec.search
    dists = space.distributions(job.spec.parameters)
    seed = trial_seed(base_seed(job), index)
    if search.algorithm == "grid":
        return space.grid_point(dists, base_seed(job), index)
    if search.algorithm == "qmc":
        return space.qmc_point(dists, base_seed(job), index)
    sampler = make_sampler(search, seed)
    if study is None:
        study = build_study(job, trials, sampler, optuna.pruners.NopPruner())
    else:
        study.sampler = sampler
    return dict(study.ask(dists).params)


def prune_decisions(job: TuneJob, trials: list[TrialObservation]
                    ) -> tuple[dict[str, Prune], dict[str, list[float]]]:
    """Running trials to stop, and new rung records of the ones the pruner let through."""
    spec = job.spec.pruner
    if spec.algorithm == "none":
        return {}, {}
    pruner = make_pruner(spec, job.spec.search.startup_trials)
    study = build_study(job, trials, optuna.samplers.RandomSampler(seed=0), pruner)
    stored = {t.user_attrs["name"]: t for t in study.get_trials(deepcopy=False)}
    prune: dict[str, Prune] = {}
    promoted: dict[str, list[float]] = {}
    for trial in sorted(trials, key=lambda t: t.index):
        if trial.state != "RUNNING" or trial.stop_requested or not trial.curve:
            continue
        frozen: FrozenTrial = stored[trial.name]
        decided = pruner.prune(study, frozen)
        records = _rung_records(study, frozen)
        if decided:
            prune[trial.name] = Prune(resource=max(trial.curve), rungs=records)
        elif len(records) > len(trial.rungs):
            promoted[trial.name] = records
    return prune, promoted


def _rung_records(study: optuna.Study, trial: FrozenTrial) -> list[float]:
    attrs: dict[str, Any] = study._storage.get_trial(trial._trial_id).system_attrs
    out: list[float] = []
    while f"completed_rung_{len(out)}" in attrs:
        out.append(float(attrs[f"completed_rung_{len(out)}"]))
    return out


def decide(job: TuneJob, trials: list[TrialObservation]) -> EngineDecision:
    """One pass of the search: which running trials to prune, which new trials to start."""
    if is_terminal(job):
        return EngineDecision()
    try:
        prune, rungs = prune_decisions(job, trials)
        after = [replace(t, state="PRUNED") if t.name in prune else t for t in trials]
        decision = EngineDecision(prune=prune, rungs=rungs)
        study = None
        if job.spec.search.algorithm not in ("grid", "qmc"):
            study = build_study(job, after, make_sampler(job.spec.search, 0),
                                optuna.pruners.NopPruner())
        for index in next_indices(job, after):
            params = suggest(job, after, index, study)
            if params is None:
                decision.exhausted = True
                break
            decision.proposals.append(Proposal(index=index, params=params))
        if job.spec.search.algorithm == "grid":
            start = max((t.index for t in trials), default=-1) + 1 + len(decision.proposals)
            grid = space.grid_size(space.distributions(job.spec.parameters))
            decision.exhausted = decision.exhausted or start >= grid
        return decision
    except ValueError as err:
        return EngineDecision(error=str(err))
