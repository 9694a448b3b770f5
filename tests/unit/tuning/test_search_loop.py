"""The whole search loop without a cluster: observe -> engine -> planner -> a fake API that
applies the actions and advances the trials' training. Checks pruning, promotion and that an
operator dying between its writes changes nothing in the outcome."""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime
from typing import Any

from cogwork.api.tunejob import TuneJob
from cogwork.plan.tunejob_observe import ANNOTATION_PRUNED_AT, observe_trial
from cogwork.plan.tunejob_reconcile import Actions, reconcile
from cogwork.tuning.builtin import decide
from tuning_helpers import BATCH, LR, WIDTH

EPOCHS, STEPS_PER_EPOCH = 6, 10
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def accuracy(spec: dict[str, Any], epoch: int) -> float:
    task = spec["task"]
    quality = math.exp(-((math.log10(float(task["learningRate"])) + 1.3) ** 2) / 0.5)
    quality *= 0.6 + 0.4 * min(1.0, task["hiddenSize"] / 128)
    final = 0.1 + 0.88 * quality * (1.0 if task["batchSize"] == 32 else 0.95)
    return round(final * (1 - math.exp(-epoch / (1 + 4 * (1 - quality)))), 4)


class FakeCluster:
    """TrainJobs and one TuneJob as dicts; `tick` trains every running trial one epoch."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.tunejob = doc
        self.trainjobs: dict[str, dict[str, Any]] = {}
        self.created: list[str] = []

    def job(self) -> TuneJob:
        return TuneJob.model_validate(self.tunejob)

    def apply(self, actions: Actions, crash_after_creates: int | None = None) -> None:
        for n, child in enumerate(actions.create):
            if crash_after_creates is not None and n >= crash_after_creates:
                return  # the operator died here: nothing else of this pass was written
            name = child["metadata"]["name"]
            if name not in self.trainjobs:  # a repeated create gets 409
                self.trainjobs[name] = {**copy.deepcopy(child), "status": {}}
                self.created.append(name)
        for name, patch in actions.patches("TrainJob").items():
            body = self.trainjobs[name]
            body["spec"].update(patch.get("spec", {}))
            annotations = patch.get("metadata", {}).get("annotations", {})
            body["metadata"].setdefault("annotations", {}).update(annotations)
        self.tunejob.setdefault("status", {}).update(copy.deepcopy(actions.status))

    def tick(self) -> None:
        for body in self.trainjobs.values():
            status = body["status"]
            if status.get("conditions") or "cogwork.dev/tunejob" not in body["metadata"]["labels"]:
                continue
            if body["spec"]["stop"]:
                status["conditions"] = [{"type": "Succeeded", "status": "True",
                                         "reason": "Stopped"}]
                continue
            epoch = status.get("progress", {}).get("epoch", 0) + 1
            value = str(accuracy(body["spec"], epoch))
            step = epoch * STEPS_PER_EPOCH
            history = status.setdefault("metrics", {}).setdefault("history", [])
            history.append({"step": step, "values": {"val_accuracy": value}})
            status["metrics"]["latest"] = [{"name": "val_accuracy", "value": value}]
            status["progress"] = {"step": step, "epoch": epoch,
                                  "totalSteps": EPOCHS * STEPS_PER_EPOCH}
            if epoch == EPOCHS:
                status["conditions"] = [{"type": "Succeeded", "status": "True",
                                         "reason": "Completed"}]

    def reconcile(self, crash_after_creates: int | None = None) -> None:
        job = self.job()
        trials = [t for t in (observe_trial(b, "val_accuracy", "epoch")
                              for b in self.trainjobs.values()) if t is not None]
        actions = reconcile(job, trials, decide(job, trials), NOW)
        self.apply(actions, crash_after_creates)


def search_doc() -> dict[str, Any]:
    return {
        "metadata": {"name": "search", "namespace": "ml", "uid": "u-1", "generation": 1},
        "spec": {
            "parameters": [LR, WIDTH, BATCH],
            "search": {"algorithm": "tpe", "seed": 3, "startupTrials": 3},
            "pruner": {"algorithm": "asha", "minResource": 1, "reductionFactor": 3},
            "budget": {"maxTrials": 8, "parallelTrials": 2},
            "promote": {"enabled": True},
            "trialTemplate": {"task": {"name": "image-classification", "epochs": EPOCHS},
                              "data": {"dataset": "digits"}},
        },
    }


def run(crash_on_pass: set[int] | None = None) -> FakeCluster:
    cluster = FakeCluster(search_doc())
    for number in range(200):
        if (cluster.tunejob.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            break
        if crash_on_pass and number in crash_on_pass:
            cluster.reconcile(crash_after_creates=1)  # died after the first create
            cluster.reconcile()  # the restarted operator's first pass, same observed state
        else:
            cluster.reconcile()
        cluster.tick()
    cluster.reconcile()  # the pass after success creates the promoted job if not yet done
    return cluster


def test_search_prunes_finds_the_best_and_promotes() -> None:
    cluster = run()
    status = cluster.tunejob["status"]
    assert status["phase"] == "Succeeded", status
    trials = {n: b for n, b in cluster.trainjobs.items() if n != "search-best"}
    assert sorted(trials) == [f"search-t{i}" for i in range(8)]
    pruned = [n for n, b in trials.items() if ANNOTATION_PRUNED_AT in b["metadata"]["annotations"]]
    assert pruned and status["trials"]["pruned"] == len(pruned)
    finals = {n: float(b["status"]["metrics"]["latest"][0]["value"]) for n, b in trials.items()
              if n not in pruned}
    best = max(finals, key=lambda n: (finals[n], -int(n.rsplit("t", 1)[1])))
    assert status["bestTrial"]["name"] == best
    promoted = cluster.trainjobs["search-best"]
    params = json.loads(trials[best]["metadata"]["annotations"]["cogwork.dev/trial-params"])
    assert promoted["spec"]["task"]["hiddenSize"] == params["width"]
    assert status["promotedTrainJob"] == "search-best"


def test_operator_dying_between_creates_changes_nothing() -> None:
    calm = run()
    crashed = run(crash_on_pass={0, 3, 7, 11})
    assert crashed.created == calm.created  # no duplicates, nothing lost, same order
    for name, body in calm.trainjobs.items():
        assert crashed.trainjobs[name]["spec"] == body["spec"], name
    assert crashed.tunejob["status"]["bestTrial"] == calm.tunejob["status"]["bestTrial"]
