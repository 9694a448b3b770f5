"""The builtin engine: stateless rebuilds, deterministic asks, pruning from curves."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import replace
from typing import Any

import numpy as np
import optuna
import pytest
from cogwork.api.tunejob import TuneJob
from cogwork.plan.tunejob_observe import TrialObservation
from cogwork.tuning import builtin, space
from cogwork.tuning.builtin import build_study, curve_rungs, decide, prune_decisions, suggest
from cogwork.tuning.cma_replay import ReplayedCmaEsSampler
from tuning_helpers import BATCH, WIDTH, trial, tunejob

ASHA = {"algorithm": "asha", "minResource": 1, "reductionFactor": 3}


def good_curve(final: float) -> dict[int, float]:
    return {1: final - 0.2, 2: final - 0.1, 3: final - 0.05, 9: final}


def test_rebuild_maps_states_params_curves_and_rungs() -> None:
    job = tunejob(pruner=ASHA)
    trials = [trial(0, "COMPLETE", 0.9, good_curve(0.9)),
              trial(1, "PRUNED", curve={1: 0.3}, rungs=[0.3]),
              trial(2, "FAIL"),
              trial(3, "RUNNING", curve={1: 0.5})]
    study = build_study(job, trials, optuna.samplers.RandomSampler(seed=0),
                        builtin.make_pruner(job.spec.pruner, 2))
    states = [t.state.name for t in study.get_trials()]
    assert states == ["COMPLETE", "PRUNED", "FAIL", "RUNNING"]
    done = study.get_trials()[0]
    assert done.value == 0.9 and done.params["batch"] == "64"
    assert done.intermediate_values == good_curve(0.9)
    # A completed trial's rungs come from its curve: first point at or past 1, 3, 9 epochs.
    assert [done.system_attrs[f"completed_rung_{k}"] for k in range(3)] == [0.7, 0.85, 0.9]
    assert study.get_trials()[1].system_attrs == {"completed_rung_0": 0.3}


def test_asks_are_deterministic_per_trial_index() -> None:
    job = tunejob()
    history = [trial(0, "COMPLETE", 0.8, params={"lr": 0.02, "width": 64, "batch": "32"}),
               trial(1, "COMPLETE", 0.6, params={"lr": 0.2, "width": 16, "batch": "128"}),
               trial(2, "RUNNING", params={"lr": 0.05, "width": 48, "batch": "64"})]
    first = suggest(job, history, 3)
    assert first == suggest(job, history, 3)
    assert first != suggest(job, history, 4)
    other_seed = tunejob(search={"algorithm": "tpe", "seed": 12, "startupTrials": 2})
    assert suggest(other_seed, history, 3) != first
    assert first is not None and set(first) == {"lr", "width", "batch"}
    assert 1e-3 <= float(first["lr"]) <= 0.5 and first["width"] in range(16, 129, 16)


def test_restart_between_creates_gives_the_same_second_trial() -> None:
    """Pass 1 proposes t0 and t1; an operator that died after creating t0 proposes the same t1."""
    job = tunejob()
    both = decide(job, [])
    assert [p.index for p in both.proposals] == [0, 1]
    t0 = both.proposals[0]
    after_restart = decide(job, [trial(0, "RUNNING", params=t0.params)])
    assert [p.index for p in after_restart.proposals] == [1]
    assert after_restart.proposals[0].params == both.proposals[1].params


def test_parallel_asks_in_one_pass_differ() -> None:
    job = tunejob(budget={"maxTrials": 8, "parallelTrials": 4})
    proposals = decide(job, []).proposals
    assert len(proposals) == 4
    assert len({tuple(sorted(p.params.items())) for p in proposals}) == 4


def test_asha_prunes_a_running_trial_below_the_rung() -> None:
    job = tunejob(pruner=ASHA)
    done = [trial(i, "COMPLETE", v, good_curve(v)) for i, v in enumerate([0.9, 0.85, 0.8])]
    weak = trial(3, "RUNNING", curve={1: 0.2})
    strong = trial(4, "RUNNING", curve={1: 0.75})
    prune, promoted = prune_decisions(job, [*done, weak, strong])
    assert set(prune) == {"search-t3"}
    assert prune["search-t3"].resource == 1 and prune["search-t3"].rungs == [0.2]
    assert promoted == {"search-t4": [0.75]}


def test_asha_without_rebuilt_rungs_would_prune_nothing() -> None:
    """The reason rung records are rebuilt: with bare curves every trial is the first at its
    rung, so ASHA lets it through (measured in the design, kept here as a guard)."""
    job = tunejob(pruner=ASHA)
    done = [trial(i, "COMPLETE", v, good_curve(v)) for i, v in enumerate([0.9, 0.85, 0.8])]
    assert curve_rungs(job.spec.pruner, good_curve(0.9), 0, 0) == pytest.approx([0.7, 0.85, 0.9])
    weak = trial(3, "RUNNING", curve={1: 0.2})
    stripped = [replace(t, curve={}) for t in done]  # no curves -> no records
    prune, _ = prune_decisions(job, [*stripped, weak])
    assert prune == {}


def test_a_promoted_trial_is_not_judged_again_at_the_same_rung() -> None:
    job = tunejob(pruner=ASHA)
    early = trial(0, "RUNNING", curve={1: 0.4}, rungs=[0.4])  # passed rung 0 when it was alone
    later = [trial(i, "COMPLETE", v, good_curve(v)) for i, v in [(1, 0.9), (2, 0.95)]]
    prune, _ = prune_decisions(job, [early, *later])
    assert prune == {}  # rung 1 (3 epochs) not reached yet; rung 0 decided once
    prune, _ = prune_decisions(job, [replace(early, curve={1: 0.4, 3: 0.45}), *later])
    assert set(prune) == {"search-t0"}


def test_median_pruner() -> None:
    job = tunejob(pruner={"algorithm": "median", "minResource": 1})
    done = [trial(i, "COMPLETE", v, good_curve(v)) for i, v in enumerate([0.9, 0.85, 0.8])]
    prune, promoted = prune_decisions(job, [*done, trial(3, "RUNNING", curve={2: 0.3}),
                                            trial(4, "RUNNING", curve={2: 0.9})])
    assert set(prune) == {"search-t3"} and promoted == {}


def test_hyperband_rebuilds_records_in_each_trials_bracket() -> None:
    job = tunejob(pruner={"algorithm": "hyperband", "minResource": 1, "maxResource": 9})
    done = [trial(i, "COMPLETE", 0.9 - 0.01 * i, good_curve(0.9 - 0.01 * i)) for i in range(6)]
    study = build_study(job, done, optuna.samplers.RandomSampler(seed=0),
                        builtin.make_pruner(job.spec.pruner, 2))
    for frozen in study.get_trials():
        bracket = builtin._bracket(study.pruner, study, frozen.number)
        first_rung = 1 * 3 ** bracket  # rungs of bracket b start at minResource * rf^b
        curve = good_curve(0.9 - 0.01 * frozen.number)
        reached = min(r for r in curve if r >= first_rung)
        assert frozen.system_attrs["completed_rung_0"] == curve[reached]


def test_grid_enumerates_every_point_once_then_is_exhausted() -> None:
    job = tunejob(WIDTH, BATCH, search={"algorithm": "grid", "seed": 3},
                  budget={"maxTrials": 100, "parallelTrials": 30})
    decision = decide(job, [])
    points = {(p.params["width"], p.params["batch"]) for p in decision.proposals}
    assert len(points) == 24 == len(decision.proposals)  # 8 widths x 3 batch sizes
    assert decision.exhausted
    again = decide(job, [])
    assert [p.params for p in again.proposals] == [p.params for p in decision.proposals]


def test_qmc_points_are_stateless_and_in_bounds() -> None:
    job = tunejob(search={"algorithm": "qmc", "seed": 5})
    dists = space.distributions(job.spec.parameters)
    points = [space.qmc_point(dists, 5, i) for i in range(16)]
    assert points[7] == space.qmc_point(dists, 5, 7)
    assert all(1e-3 <= float(p["lr"]) <= 0.5 and p["batch"] in ("32", "64", "128")
               for p in points)
    assert len({p["lr"] for p in points}) == 16


# -- CMA-ES: the optimizer is replayed from the trials (tuning/cma_replay.py) -------------------

CMAES = {"algorithm": "cmaes", "seed": 11, "startupTrials": 2}


def native_params(t: optuna.Trial) -> dict[str, Any]:
    """The helpers' LR/WIDTH/BATCH space, asked natively."""
    return {"lr": t.suggest_float("lr", 1e-3, 0.5, log=True),
            "width": t.suggest_int("width", 16, 128, step=16),
            "batch": t.suggest_categorical("batch", ["32", "64", "128"])}


def toy_objective(p: dict[str, Any]) -> float:
    return -(math.log10(float(p["lr"])) + 1.5) ** 2 + int(p["width"]) / 128


def native_cmaes_history(n: int) -> tuple[optuna.Study, optuna.samplers.CmaEsSampler]:
    sampler = optuna.samplers.CmaEsSampler(
        seed=5, n_startup_trials=2, warn_independent_sampling=False,
        independent_sampler=optuna.samplers.RandomSampler(seed=5))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: toy_objective(native_params(t)), n_trials=n)
    return study, sampler


def as_observations(study: optuna.Study) -> list[TrialObservation]:
    return [trial(t.number, "COMPLETE", t.value, params=dict(t.params))
            for t in study.get_trials() if t.value is not None]


def replayed_optimizer(job: TuneJob, trials: list[TrialObservation]) -> Any:
    sampler = builtin.make_sampler(job.spec.search, 0)
    assert isinstance(sampler, ReplayedCmaEsSampler)
    study = build_study(job, trials, sampler, optuna.pruners.NopPruner())
    optimizer, _ = sampler.replay(study, sampler.infer_relative_search_space(study, None))
    return optimizer


def test_cmaes_replay_matches_native_optuna_in_a_sequential_search() -> None:
    """The rebuilt optimizer has made exactly the updates a native CmaEsSampler made."""
    study, native = native_cmaes_history(21)  # 2 random + 19 CMA trials (popsize 6 in 2-d)
    native_params(study.ask())  # the ask that tells the third full generation natively
    expected = native._restore_optimizer(study.get_trials(deepcopy=False))
    job = tunejob(search=CMAES, budget={"maxTrials": 40, "parallelTrials": 1})
    replayed = replayed_optimizer(job, as_observations(study))
    assert replayed.generation == expected.generation == 3
    assert np.allclose(replayed._mean, expected._mean)
    assert np.allclose(replayed._C, expected._C)
    assert replayed._sigma == pytest.approx(expected._sigma)


def test_cmaes_asks_are_deterministic_under_rebuild() -> None:
    """Same observed trials + same seed -> same point, categorical (fallback sampler) included."""
    study, _ = native_cmaes_history(14)
    history = [*as_observations(study), trial(14, "RUNNING", params={"lr": 0.03, "width": 64,
                                                                     "batch": "32"})]
    job = tunejob(search=CMAES)
    assert replayed_optimizer(job, history).generation == 2  # past start-up: a learned state
    first = suggest(job, history, 15)
    assert first == suggest(job, history, 15)
    assert first != suggest(job, history, 16)
    assert suggest(tunejob(search={**CMAES, "seed": 12}), history, 15) != first
    assert first is not None and set(first) == {"lr", "width", "batch"}
    assert 1e-3 <= float(first["lr"]) <= 0.5 and first["width"] in range(16, 129, 16)
    assert first["batch"] in ("32", "64", "128")


def test_cmaes_restart_between_creates_gives_the_same_second_trial() -> None:
    study, _ = native_cmaes_history(10)
    done = as_observations(study)
    job = tunejob(search=CMAES, budget={"maxTrials": 20, "parallelTrials": 2})
    both = decide(job, done)
    assert not both.error and [p.index for p in both.proposals] == [10, 11]
    first = both.proposals[0]
    after_restart = decide(job, [*done, trial(10, "RUNNING", params=first.params)])
    assert [p.params for p in after_restart.proposals] == [both.proposals[1].params]
    assert first.params != both.proposals[1].params


def test_ask_latency_scales_to_thousands_of_trials() -> None:
    """Functional check at 2,000 trials (bench/tuner.py measures the time)."""
    job = tunejob(budget={"maxTrials": 3000, "parallelTrials": 1})
    trials = [trial(i, "COMPLETE", (i % 97) / 97, params={"lr": 0.001 + i * 1e-4,
                                                          "width": 16, "batch": "32"})
              for i in range(2000)]
    params = suggest(job, trials, 2000)
    assert params is not None and set(params) == {"lr", "width", "batch"}


def test_cmaes_without_its_package_is_an_engine_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator image pins its packages: a missing cmaes fails the TuneJob, not the pass."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "cmaes" else real(name, *a))
    assert "cmaes package" in (decide(tunejob(search=CMAES), []).error or "")
