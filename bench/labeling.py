"""LabelJob benchmarks on digits, every ratio against a baseline measured in the same run.

    .venv/bin/python bench/labeling.py [--only honesty,active,errors,throughput] [--quick]

honesty     certified auto-accept over >= 20 seeds: fraction of seeds whose REALIZED precision
            of auto-accepted pool labels is >= the target (goal >= 0.95), next to the naive
            rule "lowest threshold whose validation precision >= target"; and an uncertifiable
            target (0.999 with 100 validation labels) must give "not certified" every time.
active      human labels needed to reach 90% / 95% test accuracy, margin vs random sampling,
            over >= 10 seeds (goal: >= 30% fewer with margin).
errors      label-error precision/recall at 5/10/20% injected noise: ours (K-fold MLP + cleanlab
            batched inspector) vs cleanlab's own CleanLearning(LogisticRegression) vs
            "out-of-sample prediction != label".
throughput  items/s of the sharded pre-label worker (n processes, `prelabel score`) vs raw
            batched inference in one process, per worker, same threads (1) and batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "trainer-image"))
from cogwork_trainer.labeling.active import select_batch  # noqa: E402
from cogwork_trainer.labeling.certify import accept_mask, certify_threshold  # noqa: E402
from cogwork_trainer.labeling.label_errors import (  # noqa: E402
    find_issue_indices,
    out_of_sample_probs,
)
from cogwork_trainer.labeling.learner import fit_classifier  # noqa: E402
from cogwork_trainer.labeling.pool import load_pool  # noqa: E402
from cogwork_trainer.labeling.prelabel import read_shards  # noqa: E402

CLASSES = tuple(str(c) for c in range(10))


def digits() -> tuple[np.ndarray, np.ndarray]:
    pool = load_pool("digits")
    assert pool.truth is not None
    return pool.x, pool.truth


# --------------------------------------------------------------------------------------------
# (a) certified precision honesty
# --------------------------------------------------------------------------------------------

def naive_threshold(scores: np.ndarray, correct: np.ndarray, target: float) -> float | None:
    """Lowest threshold whose plain validation precision meets the target (no bound)."""
    order = np.argsort(-scores, kind="stable")
    precision = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(precision >= target)
    return float(scores[order][ok[-1]]) if len(ok) else None


def bench_honesty(seeds: int, train_labels: int, validation: int, target: float,
                  confidence: float) -> dict[str, Any]:
    x, y = digits()
    rows = []
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(len(y))
        train, val, pool = (order[:train_labels], order[train_labels:train_labels + validation],
                            order[train_labels + validation:])
        model = fit_classifier(x[train], y[train], CLASSES, seed)
        pv, pp = model.predict_proba(x[val]), model.predict_proba(x[pool])
        sv, sp = pv.max(axis=1), pp.max(axis=1)
        correct_v = pv.argmax(axis=1) == y[val]
        correct_p = pp.argmax(axis=1) == y[pool]
        cert = certify_threshold(sv, correct_v, target, confidence)
        accepted = accept_mask(sp, pp.argmax(axis=1), cert)
        naive = naive_threshold(sv, correct_v, target)
        naive_accepted = sp >= naive if naive is not None else np.zeros(len(sp), bool)
        rows.append({
            "certified": cert.certified,
            "realized": float(correct_p[accepted].mean()) if accepted.any() else None,
            "coverage": float(accepted.mean()),
            "naive_realized": (float(correct_p[naive_accepted].mean())
                               if naive_accepted.any() else None),
            "naive_coverage": float(naive_accepted.mean()),
            "accuracy": float(correct_p.mean()),
        })
        # Uncertifiable: 0.999 on 100 validation labels must never certify.
        hard = certify_threshold(sv[:100], correct_v[:100], 0.999, confidence)
        rows[-1]["hard_certified"] = hard.certified
    honest = [r["realized"] is None or r["realized"] >= target for r in rows]
    naive_honest = [r["naive_realized"] is None or r["naive_realized"] >= target for r in rows]
    certified = [r for r in rows if r["certified"]]
    return {
        "seeds": seeds, "target": target, "confidence": confidence,
        "train_labels": train_labels, "validation_labels": validation,
        "model_accuracy_median": statistics.median(r["accuracy"] for r in rows),
        "certified_seeds": len(certified),
        "honest_fraction": sum(honest) / seeds,
        "honest_fraction_certified_only": (sum(r["realized"] >= target for r in certified)
                                           / len(certified)) if certified else None,
        "coverage_median": statistics.median(r["coverage"] for r in rows),
        "realized_min": min((r["realized"] for r in certified), default=None),
        "naive_honest_fraction": sum(naive_honest) / seeds,
        "naive_coverage_median": statistics.median(r["naive_coverage"] for r in rows),
        "uncertifiable_target_certified_seeds": sum(r["hard_certified"] for r in rows),
    }


# --------------------------------------------------------------------------------------------
# (b) active learning: labels to reach an accuracy
# --------------------------------------------------------------------------------------------

def labels_to_reach(strategy: str, seed: int, goals: tuple[float, ...], start: int, batch: int,
                    cap: int, x: np.ndarray, y: np.ndarray) -> dict[float, int | None]:
    order = np.random.default_rng(1000 + seed).permutation(len(y))
    test, pool = order[:500], order[500:]
    labeled = list(pool[:start])
    reached: dict[float, int | None] = dict.fromkeys(goals)
    while True:
        model = fit_classifier(x[labeled], y[labeled], CLASSES, seed)
        accuracy = float((model.predict_proba(x[test]).argmax(axis=1) == y[test]).mean())
        for goal in goals:
            if reached[goal] is None and accuracy >= goal:
                reached[goal] = len(labeled)
        if all(v is not None for v in reached.values()) or len(labeled) >= cap:
            return reached
        unlabeled = np.setdiff1d(pool, labeled)
        probs = model.predict_proba(x[unlabeled])
        picked = select_batch(strategy, probs, batch, seed + len(labeled))  # type: ignore[arg-type]
        labeled += unlabeled[picked].tolist()


def bench_active(seeds: int, start: int, batch: int, cap: int) -> dict[str, Any]:
    x, y = digits()
    goals = (0.90, 0.95)
    runs: dict[str, list[dict[float, int | None]]] = {"margin": [], "random": []}
    for seed in range(seeds):
        for strategy in runs:
            runs[strategy].append(labels_to_reach(strategy, seed, goals, start, batch, cap, x, y))
    out: dict[str, Any] = {"seeds": seeds, "start": start, "batch": batch, "cap": cap}
    for goal in goals:
        # A run that never reached the goal counts as `cap` (favours random, the baseline).
        need = {s: [r[goal] or cap for r in rs] for s, rs in runs.items()}
        missed = {s: sum(r[goal] is None for r in rs) for s, rs in runs.items()}
        mean = {s: statistics.mean(v) for s, v in need.items()}
        out[f"acc{int(goal * 100)}"] = {
            "margin_mean": mean["margin"], "random_mean": mean["random"],
            "margin_median": statistics.median(need["margin"]),
            "random_median": statistics.median(need["random"]),
            "saved_fraction": 1 - mean["margin"] / mean["random"],
            "runs_capped": missed,
        }
    return out


# --------------------------------------------------------------------------------------------
# (c) label errors
# --------------------------------------------------------------------------------------------

def precision_recall(found: set[int], truth: set[int]) -> tuple[float, float]:
    hits = len(found & truth)
    return (hits / len(found) if found else 0.0), (hits / len(truth) if truth else 0.0)


def bench_errors(noise_levels: tuple[float, ...], seeds: int, folds: int,
                 workers: int) -> dict[str, Any]:
    from cleanlab.classification import CleanLearning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = digits()
    flat = x.reshape(len(x), -1)
    out: dict[str, Any] = {}
    for noise in noise_levels:
        scores: dict[str, list[tuple[float, float]]] = {"ours": [], "cleanlab": [], "naive": []}
        seconds: dict[str, list[float]] = {"ours": [], "cleanlab": []}
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            noisy = y.copy()
            flipped = rng.choice(len(y), int(noise * len(y)), replace=False)
            noisy[flipped] = (y[flipped] + rng.integers(1, 10, len(flipped))) % 10
            truth = set(flipped.tolist())
            t0 = time.perf_counter()
            probs = out_of_sample_probs(x, noisy, 10, folds=folds, seed=seed, workers=workers)
            ours = set(find_issue_indices(noisy, probs).tolist())
            seconds["ours"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            learner = CleanLearning(make_pipeline(StandardScaler(),
                                                  LogisticRegression(max_iter=2000)),
                                    cv_n_folds=folds, seed=seed, verbose=False)
            issues = learner.find_label_issues(flat, noisy)
            direct = set(np.flatnonzero(issues["is_label_issue"].to_numpy()).tolist())
            seconds["cleanlab"].append(time.perf_counter() - t0)
            naive = set(np.flatnonzero(probs.argmax(axis=1) != noisy).tolist())
            for name, found in (("ours", ours), ("cleanlab", direct), ("naive", naive)):
                scores[name].append(precision_recall(found, truth))
        level: dict[str, Any] = {}
        for name, values in scores.items():
            p = statistics.mean(v[0] for v in values)
            r = statistics.mean(v[1] for v in values)
            level[name] = {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0}
        level["seconds"] = {k: statistics.median(v) for k, v in seconds.items()}
        out[f"noise{int(noise * 100)}"] = level
    return out


# --------------------------------------------------------------------------------------------
# (d) throughput
# --------------------------------------------------------------------------------------------

def raw_inference_rate(model_path: Path, x: np.ndarray, batch: int, repeats: int) -> float:
    """The baseline: load the weights, normalize, forward, softmax, in batches; nothing else."""
    from cogwork_trainer.models import load_model

    net, meta = load_model(model_path)
    mean, std = meta["mean"].numpy(), meta["std"].numpy()
    best = 0.0
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            for start in range(0, len(x), batch):
                chunk = torch.from_numpy((x[start:start + batch] - mean) / std)
                torch.softmax(net(chunk), dim=1).numpy()
            best = max(best, len(x) / (time.perf_counter() - t0))
    return best


def bench_throughput(items: int, workers: tuple[int, ...], batch: int,
                     repeats: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    x, y = digits()
    reps = -(-items // len(x))
    big = np.tile(x, (reps, 1, 1))[:items]
    out: dict[str, Any] = {"items": items, "batch": batch, "threads_per_process": 1,
                           "cpus": os.cpu_count(), "load_average": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = fit_classifier(x, y, CLASSES, 0)
        model.save(root / "model.pt")
        np.savez(root / "pool.npz", x=big, id=np.asarray([f"i{i}" for i in range(items)]),
                 classes=np.asarray(CLASSES))
        raw = raw_inference_rate(root / "model.pt", big, batch, repeats)
        out["raw_items_per_s"] = raw
        for n in workers:
            per_worker, walls = [], []
            for rep in range(repeats):
                output = root / f"out-{n}-{rep}"
                cfg = {"pool": {"path": str(root / "pool.npz")},
                       "model": {"path": str(root / "model.pt")}, "output": str(output),
                       "inference": {"batchSize": batch}}
                env = {**os.environ, "COGWORK_LABELJOB": json.dumps(cfg), "OMP_NUM_THREADS": "1",
                       "PYTHONPATH": str(REPO / "trainer-image")}
                t0 = time.perf_counter()
                procs = [subprocess.Popen(
                    [sys.executable, "-m", "cogwork_trainer.labeling.prelabel", "score",
                     "--shard-index", str(i), "--shard-count", str(n)], env=env,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(n)]
                if any(p.wait() != 0 for p in procs):
                    raise RuntimeError(f"a pre-label worker failed (n={n})")
                walls.append(time.perf_counter() - t0)
                _, shards = read_shards(output, n, items)
                per_worker.append(statistics.mean(s.items_per_second for s in shards))
            rate = max(per_worker)
            out[f"workers{n}"] = {
                "per_worker_items_per_s": rate,
                "per_worker_ratio_vs_raw": rate / raw,
                "aggregate_ratio_vs_raw": rate * n / raw,  # n shards scored side by side
                "end_to_end_items_per_s": items / min(walls),
                "end_to_end_ratio_vs_raw": items / min(walls) / raw,
            }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="honesty,active,errors,throughput")
    parser.add_argument("--quick", action="store_true", help="fewer seeds (smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sections = set(args.only.split(","))
    quick = args.quick
    results: dict[str, Any] = {}
    if "honesty" in sections:
        for target in (0.95, 0.98):  # 0.98 sits above most models' plain accuracy: it bites
            key = f"honesty{int(target * 100)}"
            results[key] = bench_honesty(5 if quick else 40, 300, 400, target, 0.95)
            print(key.upper(), json.dumps(results[key]), flush=True)
    if "active" in sections:
        results["active"] = bench_active(2 if quick else 10, 20, 20, 1000)
        print("ACTIVE", json.dumps(results["active"]), flush=True)
    if "errors" in sections:
        results["errors"] = bench_errors((0.05, 0.10, 0.20), 1 if quick else 3, 5, 1)
        print("ERRORS", json.dumps(results["errors"]), flush=True)
    if "throughput" in sections:
        results["throughput"] = bench_throughput(50_000 if quick else 400_000, (1, 2), 1024,
                                                 1 if quick else 3)
        print("THROUGHPUT", json.dumps(results["throughput"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
