"""LabelJob review rounds in the planner: collect -> retrain TrainJob -> rescore -> stop."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from cogwork.api.trainjob import TrainJob
from cogwork.plan.labeljob_reconcile import Retraining, reconcile
from cogwork.plan.labeljob_rounds import retrain_name, retrain_round
from test_labeljob_reconcile import (
    CERTIFIED,
    MODEL,
    NOW,
    SETTINGS,
    condition,
    done,
    env_of,
    labeljob,
)

SOURCE = {  # the TrainJob spec.model.fromTrainJob names, as the controller read it
    "apiVersion": "cogwork.dev/v1alpha1", "kind": "TrainJob",
    "metadata": {"name": "digits", "namespace": "ns", "generation": 1},
    "spec": {"task": {"name": "image-classification", "epochs": 3},
             "data": {"dataset": "digits", "testPercent": 25},
             "nodes": {"min": 1, "max": 2, "count": 2},
             "checkpoint": {"everySteps": 10, "claimName": "shared-ckpt"},
             "ttlSecondsAfterFinished": 60, "suspend": False},
    "status": {"conditions": [{"type": "Succeeded", "status": "True"}],
               "progress": {"totalSteps": 66}},  # 3 epochs x 22 steps (1797 digits, 25% test)
}
ROUND0 = [done(f"lj-score-{i}", {"items": 599, "total": 1797, "seconds": 0.01})
          for i in range(3)] + [done("lj-merge", CERTIFIED)]


def rounds_job(**review: Any) -> Any:
    return labeljob(review={"maxRounds": 2, "batchSize": 100, **review})


def trainjob_at(phase: str, generation: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": "lj-r1", "generation": generation},
            "spec": {}, "status": {"phase": phase, "conditions": [
                {"type": phase, "status": "True", "message": "exit code 1"}]}}


def config_of(pod: dict[str, Any]) -> dict[str, Any]:
    return json.loads(env_of(pod)["COGWORK_LABELJOB"])  # type: ignore[no-any-return]


def test_a_round_that_routed_items_waits_for_people_in_a_collect_pod() -> None:
    actions = reconcile(rounds_job(maxHumanLabels=300), ROUND0, MODEL, NOW, SETTINGS,
                        Retraining(SOURCE))
    [collect] = [o for o in actions.create if o["kind"] == "Pod"]
    assert collect["metadata"]["name"] == "lj-collect"
    assert collect["metadata"]["labels"]["cogwork.dev/round"] == "0"
    assert collect["spec"]["containers"][0]["command"][1:6] == [
        "-m", "cogwork_trainer.labeling.review", "collect", "--round", "0"]
    config = config_of(collect)
    assert config["round"] == 0
    assert config["review"] == {"strategy": "margin", "batchSize": 100, "maxRounds": 2,
                                "maxHumanLabels": 300}
    status = actions.status
    assert status["phase"] == "Running" and status["round"] == 0
    assert "round 1 of 2: waiting for people to label the 100 item(s)" in condition(
        status, "Running")["message"]
    assert "Succeeded" not in {c["type"] for c in status["conditions"]}


def test_labels_back_create_the_retrain_trainjob_from_the_model_trainjob() -> None:
    pods = [*ROUND0, done("lj-collect", {"round": 0, "humanLabeled": 500, "collected": 100,
                                         "trainingItems": 400})]
    actions = reconcile(rounds_job(), pods, MODEL, NOW, SETTINGS, Retraining(SOURCE))
    [retrain] = actions.create
    assert retrain["kind"] == "TrainJob" and retrain["metadata"]["name"] == "lj-r1"
    assert retrain["metadata"]["labels"] == {"cogwork.dev/labeljob": "lj"}
    spec = retrain["spec"]
    # Trained on the labels gathered so far, from the LabelJob's claim; its own checkpoints.
    assert spec["data"] == {"path": "labels/train-r1.npz", "claimName": "lj-labels",
                            "testPercent": 25}
    assert spec["checkpoint"] == {"everySteps": 10}
    assert "ttlSecondsAfterFinished" not in spec and "suspend" not in spec
    # 400 labels, 25% held out: 300 // 64 = 4 steps an epoch; the source's 66 steps -> 17 epochs.
    assert spec["task"] == {**SOURCE["spec"]["task"], "epochs": 17}
    assert spec["nodes"] == SOURCE["spec"]["nodes"]
    TrainJob.model_validate(retrain)  # what the apiserver gets is a valid TrainJob
    assert SOURCE["spec"]["checkpoint"]["claimName"] == "shared-ckpt"  # the source is untouched
    assert actions.status["round"] == 1
    assert actions.status["counts"]["humanLabeled"] == 500
    assert ("Normal", "Retraining") in {(t, r) for t, r, _ in actions.events}
    assert "retraining: TrainJob lj-r1" in condition(actions.status, "Running")["message"]


def test_while_the_retrain_runs_nothing_else_starts() -> None:
    pods = [*ROUND0, done("lj-collect", {"round": 0, "humanLabeled": 500})]
    actions = reconcile(rounds_job(), pods, MODEL, NOW, SETTINGS,
                        Retraining(SOURCE, {1: trainjob_at("Running")}))
    assert actions.create == []
    assert "waiting for the TrainJob to succeed" in condition(actions.status, "Running")["message"]


def test_the_next_round_scores_with_the_retrained_model_then_succeeds() -> None:
    pods = [*ROUND0, done("lj-collect", {"round": 0, "humanLabeled": 500})]
    retraining = Retraining(SOURCE, {1: trainjob_at("Succeeded", generation=2)})
    actions = reconcile(rounds_job(), pods, MODEL, NOW, SETTINGS, retraining)
    scores = [o for o in actions.create if o["kind"] == "Pod"]
    assert [p["metadata"]["name"] for p in scores] == ["lj-r1-score-0", "lj-r1-score-1",
                                                         "lj-r1-score-2"]
    config = config_of(scores[0])
    assert config["round"] == 1 and config["modelVersion"] == "lj-r1-g2"
    claims = [v["persistentVolumeClaim"]["claimName"] for v in scores[0]["spec"]["volumes"]
              if "persistentVolumeClaim" in v]
    assert claims == ["lj-labels", "lj-r1-ckpt"]

    round1 = [done(f"lj-r1-score-{i}", {"items": 599, "total": 1797, "seconds": 0.01})
              for i in range(3)]
    round1.append(done("lj-r1-merge", {**CERTIFIED, "round": 1, "autoAccepted": 1200,
                                        "modelVersion": "lj-r1-g2"}))
    final = reconcile(rounds_job(), pods + round1, MODEL, NOW, SETTINGS, retraining)
    assert final.create == []
    status = final.status
    assert status["phase"] == "Succeeded" and status["round"] == 1
    assert status["counts"]["autoAccepted"] == 1200 and status["modelVersion"] == "lj-r1-g2"
    assert "after 2 round(s)" in condition(status, "Succeeded")["message"]


def test_a_round_that_routes_nothing_is_the_last() -> None:
    nothing = [*ROUND0[:3], done("lj-merge", {**CERTIFIED, "routedToReview": 0})]
    actions = reconcile(rounds_job(), nothing, MODEL, NOW, SETTINGS, Retraining(SOURCE))
    assert actions.create == []
    assert actions.status["phase"] == "Succeeded"


def test_a_failed_retrain_fails_the_job_naming_it() -> None:
    pods = [*ROUND0, done("lj-collect", {"round": 0, "humanLabeled": 500})]
    actions = reconcile(rounds_job(), pods, MODEL, NOW, SETTINGS,
                        Retraining(SOURCE, {1: trainjob_at("Failed")}))
    failed = condition(actions.status, "Failed")
    assert actions.status["phase"] == "Failed" and failed["reason"] == "RetrainFailed"
    assert "round 1: TrainJob lj-r1" in failed["message"]


def test_label_studio_errors_while_collecting_are_retried() -> None:
    sink = {"labelStudio": {"url": "http://ls:8080", "project": 7,
                            "secretRef": {"name": "ls", "key": "token"}}}
    pods = [*ROUND0, done("lj-push"), done("lj-collect", "cannot reach http://ls:8080", code=3,
                                           finished=NOW - timedelta(seconds=40))]
    actions = reconcile(rounds_job(), pods, MODEL, NOW, SETTINGS,
                        Retraining(SOURCE))
    assert actions.status["phase"] == "Failed"  # without a sink, exit 3 is just a failure
    job = labeljob(review={"maxRounds": 2}, sink=sink)
    actions = reconcile(job, pods, MODEL, NOW, SETTINGS, Retraining(SOURCE))
    assert actions.status["phase"] == "Running"
    assert condition(actions.status, "SinkReady")["status"] == "False"
    assert actions.delete_pods == ["lj-collect"]  # recreated on a later pass


def test_the_collect_pod_gets_the_label_studio_key_from_the_secret() -> None:
    sink = {"labelStudio": {"url": "http://ls:8080", "project": 7,
                            "secretRef": {"name": "ls", "key": "token"}}}
    job = labeljob(review={"maxRounds": 2}, sink=sink)
    actions = reconcile(job, [*ROUND0, done("lj-push")], MODEL, NOW, SETTINGS,
                        Retraining(SOURCE))
    [collect] = [o for o in actions.create if o["kind"] == "Pod"]
    env = env_of(collect)
    assert env["LABEL_STUDIO_API_KEY"] == {"secretKeyRef": {"name": "ls", "key": "token"}}
    assert env["LABEL_STUDIO_URL"] == "http://ls:8080" and env["LABEL_STUDIO_PROJECT"] == "7"


def test_a_retrain_keeps_the_sources_step_budget_never_fewer_epochs() -> None:
    from cogwork.plan.labeljob_rounds import retrain_epochs

    assert retrain_epochs(SOURCE, 400) == 17
    assert retrain_epochs(SOURCE, 100_000) == 3  # more data than the source: its own epochs
    assert retrain_epochs(SOURCE, 50) is None  # not one batch: left to the trainer to refuse
    assert retrain_epochs(SOURCE, None) is None
    unfinished = {**SOURCE, "status": {}}
    assert retrain_epochs(unfinished, 400) is None  # no step count to size it by
    script = {**SOURCE, "spec": {k: v for k, v in SOURCE["spec"].items() if k != "task"}}
    assert retrain_epochs(script, 400) is None  # script mode has no epochs to size


def test_retrain_names_and_rounds_are_inverses() -> None:
    job = rounds_job()
    assert job.metadata.name == "lj"
    assert [retrain_round(job, retrain_name(job, r)) for r in (1, 2, 12)] == [1, 2, 12]
    for other in ("lj", "lj-r", "lj-rx", "lj-best", "lj2-r1", "lj-r1-copy", "other-r1"):
        assert retrain_round(job, other) is None, other
