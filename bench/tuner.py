"""Builtin TuneJob engine vs native Optuna on synthetic objectives with learning curves.

    .venv/bin/python bench/tuner.py [--seeds 5] [--trials 40] [--quick]

Three measurements, each with its baseline measured in this process:
1. regret at equal trials: our stateless engine (study rebuilt from the trials before every
   ask, per-index seeds) vs a native Optuna study with the same sampler settings;
2. ASHA time-to-target: simulated training epochs until a trial reaches the target, our engine
   with ASHA (pruning decided from rebuilt rung records, as the operator does) vs full-budget
   random search; native Optuna + ASHA shown for reference;
3. ask latency with 100/1,000/2,000 past trials: one whole operator pass (rebuild + ask) vs a
   native ask on a study that already holds the trials.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import zlib
from typing import Any

import optuna
from cogwork.api.tunejob import TuneJob
from cogwork.plan.tunejob_observe import TrialObservation
from cogwork.tuning import builtin

optuna.logging.set_verbosity(optuna.logging.WARNING)
MAX_EPOCHS = 27  # ASHA rungs at 1, 3, 9, 27 epochs (minResource 1, reductionFactor 3)
BATCH_FACTOR = {"32": 1.0, "64": 0.97, "128": 0.9}


# -- the synthetic problem --------------------------------------------------------------------

def quality(p: dict[str, Any]) -> float:
    """In [0, 1]: best at lr = 0.05, wide, small batch."""
    lr_term = math.exp(-((math.log10(float(p["lr"])) + 1.3) ** 2) / 0.5)
    return lr_term * (0.6 + 0.4 * min(1.0, int(p["width"]) / 128)) * BATCH_FACTOR[str(p["batch"])]


def final_accuracy(p: dict[str, Any]) -> float:
    return 0.1 + 0.88 * quality(p)


def curve_point(p: dict[str, Any], epoch: int) -> float:
    """Accuracy after `epoch` epochs: good configurations also learn faster; small noise."""
    tau = 1.0 + 6.0 * (1.0 - quality(p))
    key = f"{float(p['lr']):.6g}/{p['width']}/{p['batch']}/{epoch}".encode()
    noise = ((zlib.crc32(key) % 1000) / 1000 - 0.5) * 0.01
    return final_accuracy(p) * (1 - math.exp(-epoch / tau)) + noise


OPTIMUM = 0.1 + 0.88  # quality 1 at lr 10^-1.3, width >= 128, batch 32


def job_doc(algorithm: str, seed: int, pruner: str = "none", trials: int = 100) -> TuneJob:
    return TuneJob.model_validate({
        "metadata": {"name": "bench", "namespace": "bench", "uid": "bench"},
        "spec": {
            "parameters": [
                {"name": "lr", "field": "task.learningRate",
                 "logUniform": {"min": "0.001", "max": "1"}},
                {"name": "width", "field": "task.hiddenSize", "int": {"min": 8, "max": 256}},
                {"name": "batch", "field": "task.batchSize",
                 "categorical": {"values": ["32", "64", "128"]}},
            ],
            "search": {"algorithm": algorithm, "seed": seed, "startupTrials": 4},
            "pruner": {"algorithm": pruner, "minResource": 1, "reductionFactor": 3},
            "budget": {"maxTrials": trials, "parallelTrials": 1, "maxFailedTrials": trials},
            "trialTemplate": {"task": {"name": "image-classification", "epochs": MAX_EPOCHS},
                              "data": {"dataset": "digits"}},
        }})


def native_sampler(algorithm: str, seed: int) -> optuna.samplers.BaseSampler:
    if algorithm == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, multivariate=True,
                                          constant_liar=True)
    if algorithm == "cmaes":
        return optuna.samplers.CmaEsSampler(
            seed=seed, n_startup_trials=4, warn_independent_sampling=False,
            independent_sampler=optuna.samplers.RandomSampler(seed=seed))
    return optuna.samplers.RandomSampler(seed=seed)


def native_space(trial: optuna.Trial) -> dict[str, Any]:
    return {"lr": trial.suggest_float("lr", 0.001, 1, log=True),
            "width": trial.suggest_int("width", 8, 256),
            "batch": trial.suggest_categorical("batch", ["32", "64", "128"])}


def complete(index: int, params: dict[str, Any], curve: dict[int, float]) -> TrialObservation:
    return TrialObservation(name=f"bench-t{index}", index=index, state="COMPLETE", params=params,
                            value=curve[max(curve)], curve=curve, finished=True)


# -- 1. regret at equal trials ----------------------------------------------------------------

def regret_native(algorithm: str, seed: int, n: int) -> float:
    study = optuna.create_study(direction="maximize", sampler=native_sampler(algorithm, seed))
    study.optimize(lambda t: final_accuracy(native_space(t)), n_trials=n)
    return OPTIMUM - study.best_value


def regret_builtin(algorithm: str, seed: int, n: int) -> float:
    job = job_doc(algorithm, seed, trials=n)
    trials: list[TrialObservation] = []
    for index in range(n):
        params = builtin.suggest(job, trials, index)
        assert params is not None
        value = final_accuracy(params)
        trials.append(complete(index, params, {MAX_EPOCHS: value}))
    return OPTIMUM - max(t.value or 0.0 for t in trials)


# -- 2. ASHA time-to-target ---------------------------------------------------------------------

def epochs_to_target_random(seed: int, target: float, limit: int) -> int:
    """Full-budget random search: every trial trains MAX_EPOCHS epochs."""
    sampler = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    spent = 0
    for _ in range(limit):
        trial = study.ask()
        params = native_space(trial)
        spent += MAX_EPOCHS
        value = curve_point(params, MAX_EPOCHS)
        study.tell(trial, value)
        if value >= target:
            return spent
    return spent


def epochs_to_target_builtin_asha(seed: int, target: float, limit: int) -> int:
    """Our engine, random sampler + ASHA, pruning decided after every epoch from a rebuild."""
    job = job_doc("random", seed, pruner="asha", trials=limit)
    trials: list[TrialObservation] = []
    spent = 0
    for index in range(limit):
        params = builtin.suggest(job, trials, index)
        assert params is not None
        running = TrialObservation(name=f"bench-t{index}", index=index, state="RUNNING",
                                   params=params)
        for epoch in range(1, MAX_EPOCHS + 1):
            spent += 1
            running.curve[epoch] = curve_point(params, epoch)
            prune, promoted = builtin.prune_decisions(job, [*trials, running])
            if running.name in prune:
                running.state, running.rungs = "PRUNED", prune[running.name].rungs
                running.finished = True
                break
            running.rungs = promoted.get(running.name, running.rungs)
        if running.state == "RUNNING":
            value = running.curve[MAX_EPOCHS]
            running.state, running.value, running.finished = "COMPLETE", value, True
            if value >= target:
                trials.append(running)
                return spent
        trials.append(running)
    return spent


def epochs_to_target_native_asha(seed: int, target: float, limit: int) -> int:
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=seed), pruner=pruner)
    spent = 0
    for _ in range(limit):
        trial = study.ask()
        params = native_space(trial)
        pruned = False
        for epoch in range(1, MAX_EPOCHS + 1):
            spent += 1
            trial.report(curve_point(params, epoch), epoch)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                pruned = True
                break
        if not pruned:
            value = curve_point(params, MAX_EPOCHS)
            study.tell(trial, value)
            if value >= target:
                return spent
    return spent


# -- 3. ask latency -----------------------------------------------------------------------------

def history(n: int, seed: int) -> list[TrialObservation]:
    sampler = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    out = []
    for index in range(n):
        trial = study.ask()
        params = native_space(trial)
        value = final_accuracy(params)
        study.tell(trial, value)
        out.append(complete(index, params, {MAX_EPOCHS: value}))
    return out


def ask_latency(n: int, repeats: int) -> tuple[float, float]:
    """Median seconds of one operator pass (rebuild + ask) and of one native ask, at n trials."""
    trials = history(n, seed=1)
    job = job_doc("tpe", 7, trials=n + repeats + 1)
    ours = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        decision = builtin.decide(job, trials)
        ours.append(time.perf_counter() - t0)
        assert len(decision.proposals) == 1, decision
    study = optuna.create_study(direction="maximize", sampler=native_sampler("tpe", 7))
    study.add_trials(builtin.build_study(job, trials, native_sampler("tpe", 7),
                                         optuna.pruners.NopPruner()).get_trials())
    native = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        trial = study.ask()
        native_space(trial)
        native.append(time.perf_counter() - t0)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return statistics.median(ours), statistics.median(native)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="fewer seeds and sizes")
    args = parser.parse_args()
    seeds = list(range(2 if args.quick else args.seeds))

    print(f"1. regret at {args.trials} trials (optimum {OPTIMUM:.3f}), mean over "
          f"{len(seeds)} seeds")
    for algorithm in ("tpe", "cmaes", "random"):
        native = [regret_native(algorithm, s, args.trials) for s in seeds]
        ours = [regret_builtin(algorithm, s, args.trials) for s in seeds]
        spread = statistics.pstdev(native) if len(native) > 1 else 0.0
        print(f"   {algorithm:6s} native {statistics.mean(native):.4f} (sd {spread:.4f})  "
              f"builtin {statistics.mean(ours):.4f}  ratio builtin/native "
              f"{statistics.mean(ours) / max(statistics.mean(native), 1e-9):.2f}")

    target = 0.93
    limit = 200
    print(f"2. epochs until a trial reaches val {target} (max {MAX_EPOCHS} epochs/trial), "
          f"median over {len(seeds)} seeds")
    full = [epochs_to_target_random(s, target, limit) for s in seeds]
    asha = [epochs_to_target_builtin_asha(s, target, limit) for s in seeds]
    native_asha = [epochs_to_target_native_asha(s, target, limit) for s in seeds]
    print(f"   full-budget random {statistics.median(full):.0f}  builtin ASHA "
          f"{statistics.median(asha):.0f}  native ASHA {statistics.median(native_asha):.0f}")
    vs_full = statistics.median(asha) / statistics.median(full)
    vs_native = statistics.median(asha) / statistics.median(native_asha)
    print(f"   ratio builtin-ASHA/full-budget-random {vs_full:.2f} (goal <= 0.5); "
          f"builtin/native ASHA {vs_native:.2f}")

    print("3. ask latency, TPE (median seconds; builtin = whole pass: rebuild study + ask)")
    for n in (100, 1000) if args.quick else (100, 1000, 2000):
        ours, native = ask_latency(n, repeats=3 if n > 500 else 5)
        print(f"   {n:5d} trials: builtin {ours:.3f} s  native {native:.3f} s  "
              f"ratio {ours / native:.2f}" + ("  (goal <= 0.5 s)" if n == 2000 else ""))


if __name__ == "__main__":
    main()
