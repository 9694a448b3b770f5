"""LabelJob end to end on the real control plane: the data flywheel TrainJob -> LabelJob ->
TrainJob, declared all at once (references wait for what they name), plus an uncertifiable
target and a missing Label Studio secret."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness.jobs import Jobs, digits_job

pytestmark = pytest.mark.cluster

API = "cogwork.dev/v1alpha1"


def labeljob(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"fromTrainJob": "digits"},
        "pool": {"dataset": "digits"},
        "seed": {"count": 300},
        "inference": {"replicas": 3, "cpu": "1", "memory": "1Gi"},
        "autoAccept": {"targetPrecision": "0.95", "confidence": "0.95",
                       "validation": {"humanBudget": 400}},
        "review": {"strategy": "margin", "batchSize": 100},
        "labelErrors": {"enabled": True, "folds": 3},
    }
    body.update(spec)
    return {"apiVersion": API, "kind": "LabelJob", "metadata": {"name": name}, "spec": body}


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def label_status(jobs: Jobs, name: str) -> dict[str, Any]:
    return jobs.get(name, kind="labeljob").get("status") or {}


def claim_dir(jobs: Jobs, claim: str) -> Path:
    """The host directory behind a claim (the harness provisions hostPath volumes)."""
    pvc = jobs.cluster.kubectl_json("get", "pvc", claim, "-n", jobs.namespace)
    pv = jobs.cluster.kubectl_json("get", "pv", str(pvc["spec"]["volumeName"]))  # type: ignore[index]
    return Path(pv["spec"]["hostPath"]["path"])  # type: ignore[index]


def test_trainjob_labeljob_trainjob_flywheel(jobs: Jobs) -> None:
    # Declared at once, in reverse order: each reference waits for what it names.
    jobs.apply(digits_job("from-labels", data={"fromLabelJob": "digits-labels"},
                          nodes={"min": 1, "max": 1},
                          task={"name": "image-classification", "epochs": 4, "batchSize": 64,
                                "learningRate": "0.05"}))
    jobs.apply(labeljob("digits-labels"))
    jobs.apply(digits_job("digits", nodes={"min": 1, "max": 1},
                          task={"name": "image-classification", "epochs": 10, "batchSize": 64,
                                "learningRate": "0.05"}))

    def waiting(name: str, kind: str, reason: str) -> bool:
        created = condition(jobs.get(name, kind=kind).get("status") or {}, "Created")
        return created.get("status") == "False" and created.get("reason") == reason

    jobs.wait_for("LabelJob waiting for its model",
                  lambda: waiting("digits-labels", "labeljob", "WaitingForModel"), timeout=60)
    jobs.wait_for("TrainJob waiting for its data",
                  lambda: waiting("from-labels", "trainjob", "WaitingForData"), timeout=60)
    assert "spec.data.fromLabelJob=digits-labels" in \
        condition(jobs.status("from-labels"), "Created")["message"]
    assert jobs.wait_phase("digits", "Succeeded", "Failed", timeout=300)["phase"] == "Succeeded"

    status = jobs.wait_for("LabelJob finished", lambda: (
        s if (s := label_status(jobs, "digits-labels")).get("phase") in ("Succeeded", "Failed")
        else None), timeout=420)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)[:3000]
    counts = status["counts"]
    assert counts["total"] == counts["predicted"] == 1797
    assert counts["humanLabeled"] == 400 and counts["autoAccepted"] > 0
    # Review takes the most doubtful of what is neither labeled nor accepted, up to batchSize.
    routed = counts["routedToReview"]
    assert routed == min(100, 1797 - 300 - 400 - counts["autoAccepted"])
    assert status["predictedText"] == "1797/1797"
    assert 0 < status["threshold"] < 1 and status["certifiedLowerBound"] >= 0.95
    assert status["coverage"] == pytest.approx(counts["autoAccepted"] / 1797, abs=1e-6)
    assert status["itemsPerSecond"] > 0 and status["modelVersion"].startswith("digits-g")
    assert condition(status, "Certified")["status"] == "True"
    pods = {p["metadata"]["name"]: p for p in jobs.pods("cogwork.dev/job-name=digits-labels")}
    assert {f"digits-labels-score-{i}" for i in range(3)} | {"digits-labels-merge"} <= set(pods)
    for pod in pods.values():
        assert pod["metadata"]["labels"]["cogwork.dev/kind"] == "LabelJob"
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    # The outputs are on the claim, and agree with the status.
    output = claim_dir(jobs, "digits-labels-labels") / "labels"
    with open(output / "labels.csv", newline="") as f:
        sources = [row["source"] for row in csv.DictReader(f)]
    assert sources.count("auto") == counts["autoAccepted"]
    assert sources.count("seed") == 300 and sources.count("human") == 400
    assert len(json.loads((output / "review-tasks.json").read_text())) == routed
    with np.load(output / "dataset.npz") as data:
        assert len(data["x"]) == len(data["y"]) == len(sources)

    # The TrainJob that waited trains on the LabelJob's dataset.
    trained = jobs.wait_phase("from-labels", "Succeeded", "Failed", timeout=300)
    assert trained["phase"] == "Succeeded", trained.get("conditions")
    assert trained["evaluation"]["accuracy"] >= 0.8
    samples = trained["evaluation"]["samples"]
    assert samples == pytest.approx(0.2 * len(sources), abs=2)  # the labeled set, not all digits

    # An uncertifiable target (0.999 on 100 labels) accepts nothing and says so; a missing
    # Label Studio secret is a condition naming the field, not a crash.
    jobs.apply(labeljob(
        "strict", model={"path": "model.pt", "claimName": "digits-ckpt"},
        inference={"replicas": 1, "cpu": "1", "memory": "1Gi"},
        autoAccept={"targetPrecision": "0.999", "confidence": "0.95",
                    "validation": {"humanBudget": 100}},
        sink={"labelStudio": {"url": "http://label-studio:8080",
                              "secretRef": {"name": "no-such-secret"}, "project": 1}}))
    strict = jobs.wait_for("strict job's sink condition", lambda: (
        s if condition(s := label_status(jobs, "strict"), "SinkReady").get("status") == "False"
        else None), timeout=300)
    certified = condition(strict, "Certified")
    assert certified["status"] == "False" and certified["reason"] == "TargetNotCertified"
    assert "0.999" in certified["message"]
    assert strict["counts"]["autoAccepted"] == 0 and strict["coverage"] == 0
    sink = condition(strict, "SinkReady")
    assert "spec.sink.labelStudio.secretRef" in sink["message"]
    assert "no-such-secret" in sink["message"]
    assert strict["phase"] == "Running"


def test_review_rounds_collect_retrain_and_relabel(jobs: Jobs) -> None:
    # Two review rounds: round 0 routes up to 50 items, the demo's annotators (the dataset's
    # hidden labels) answer, TrainJob <job>-r1 retrains a copy of `first` on the labels so far,
    # round 1 relabels the pool with it. A 0.99 target leaves doubtful items to route (at 0.95
    # this model auto-accepts all but one).
    jobs.apply(digits_job("first", nodes={"min": 1, "max": 1},
                          task={"name": "image-classification", "epochs": 4, "batchSize": 64,
                                "learningRate": "0.05"}))
    jobs.apply(labeljob("rounds", model={"fromTrainJob": "first"},
                        inference={"replicas": 2, "cpu": "1", "memory": "1Gi"},
                        autoAccept={"targetPrecision": "0.99", "confidence": "0.95",
                                    "validation": {"humanBudget": 400}},
                        review={"strategy": "margin", "batchSize": 50, "maxRounds": 2,
                                "maxHumanLabels": 100},
                        labelErrors={"enabled": False}))
    status = jobs.wait_for("LabelJob finished", lambda: (
        s if (s := label_status(jobs, "rounds")).get("phase") in ("Succeeded", "Failed")
        else None), timeout=600)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)[:3000]
    assert status["round"] == 1 and status["modelVersion"].startswith("rounds-r1-g")
    assert "after 2 round(s)" in condition(status, "Succeeded")["message"]
    counts = status["counts"]

    # The retrain is an owned TrainJob on the LabelJob's claim, and it succeeded.
    retrain = jobs.get("rounds-r1")
    assert retrain["spec"]["data"] == {"path": "labels/train-r1.npz",
                                       "claimName": "rounds-labels", "testPercent": 20}
    owner = retrain["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "LabelJob" and owner["name"] == "rounds"
    assert retrain["status"]["phase"] == "Succeeded"
    # About the source's optimizer steps on a smaller set, so the new model is no worse off.
    source_steps = jobs.status("first")["progress"]["totalSteps"]
    assert retrain["spec"]["task"]["epochs"] >= 4
    assert retrain["status"]["progress"]["totalSteps"] >= 0.8 * source_steps
    assert retrain["status"]["evaluation"]["accuracy"] >= 0.8
    pods = {p["metadata"]["name"]: p for p in jobs.pods("cogwork.dev/job-name=rounds")}
    assert pods["rounds-collect"]["status"]["phase"] == "Succeeded"
    assert {"rounds-r1-score-0", "rounds-r1-score-1", "rounds-r1-merge"} <= set(pods)

    def summary(pod: str) -> dict[str, Any]:  # a step's termination message
        state = pods[pod]["status"]["containerStatuses"][0]["state"]
        return json.loads(state["terminated"]["message"])  # type: ignore[no-any-return]

    round0 = summary("rounds-merge")
    routed0, auto_round0 = round0["routedToReview"], round0["autoAccepted"]
    assert 0 < routed0 <= 50
    collected = summary("rounds-collect")
    assert collected["collected"] == routed0 and collected["round"] == 0
    assert counts["humanLabeled"] == 400 + routed0  # validation labels + round 0's batch
    assert counts["routedToReview"] <= 100 - routed0  # round 1's batch, within the budget left

    # What came back is exactly round 0's batch, and the tables agree with the status.
    output = claim_dir(jobs, "rounds-labels") / "labels"
    with open(output / "human-labels.csv", newline="") as f:
        human = {row["item_id"] for row in csv.DictReader(f)}
    assert len(human) == routed0
    with open(output / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sum(r["source"] == "human" for r in rows) == 400 + routed0
    assert sum(r["source"] == "auto" for r in rows) == counts["autoAccepted"]
    assert {r["item_id"] for r in rows if r["source"] == "human"} >= human
    round1_batch = {t["data"]["item_id"] for t in
                    json.loads((output / "review-tasks.json").read_text())}
    assert not round1_batch & human  # nobody is asked twice
    with np.load(output / "train-r1.npz") as data:
        # seeds + reviewed + round 0's auto-accepted labels, never the 400 validation items
        assert len(data["x"]) == len(data["y"]) == collected["trainingItems"] \
            == 300 + routed0 + auto_round0


def own_claim(jobs: Jobs, name: str) -> Path:
    """A claim of the team's own, bound, as a host directory the test writes into."""
    jobs.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
                "spec": {"accessModes": ["ReadWriteMany"],
                         "resources": {"requests": {"storage": "1Gi"}}}})
    jobs.wait_for(f"claim {name} bound", lambda: jobs.cluster.kubectl_json(
        "get", "pvc", name, "-n", jobs.namespace).get("status", {}).get("phase") == "Bound",
        timeout=60)
    return claim_dir(jobs, name)


def write_label_csv(path: Path, ids: list[str], labels: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["item_id", "label"])
        writer.writerows(zip(ids, labels, strict=True))


NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def test_users_model_from_a_script_trainjob_and_as_an_entrypoint_on_its_image(
        jobs: Jobs) -> None:
    """The team brings everything: a pool (.npz with class names) and label CSVs in a claim of
    theirs, a script TrainJob on their image (torch + numpy, nothing of Cogwork) that writes a
    TorchScript model into its checkpoints, and the same model's `predict(x)` in that image.
    A LabelJob scores with the TorchScript file (fromTrainJob + format torchscript + path) and
    another with the entrypoint (score pods on the bare image, the scorer copied in by an init
    container); both certify and auto-accept as with the built-in model."""
    from harness.images import BARE_IMAGE
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, truth = digits.images.astype(np.float32), digits.target
    ids = [f"img-{i:04d}" for i in range(len(x))]
    order = np.random.default_rng(7).permutation(len(x))
    seed, val = order[:300], order[300:700]
    data = own_claim(jobs, "team-data")
    np.savez(data / "pool.npz", x=x, id=np.asarray(ids), classes=np.asarray(NAMES))
    np.savez(data / "train.npz", x=x[seed], y=truth[seed])
    write_label_csv(data / "seed.csv", [ids[i] for i in seed], [NAMES[truth[i]] for i in seed])
    write_label_csv(data / "val.csv", [ids[i] for i in val], [NAMES[truth[i]] for i in val])
    own_pool = {"pool": {"path": "pool.npz", "claimName": "team-data"},
                "seed": {"path": "seed.csv"},
                "autoAccept": {"targetPrecision": "0.95", "confidence": "0.95",
                               "validation": {"path": "val.csv"}},
                "inference": {"replicas": 2, "cpu": "1", "memory": "1Gi"},
                "labelErrors": {"enabled": False}}

    # The script TrainJob and the LabelJob that waits for its TorchScript file, at once.
    jobs.apply({"apiVersion": API, "kind": "TrainJob", "metadata": {"name": "team-train"},
                "spec": {"image": BARE_IMAGE, "nodes": {"min": 1, "max": 1},
                         "resources": {"cpu": "1", "memory": "1Gi"},
                         "data": {"path": "train.npz", "claimName": "team-data"},
                         # Data and output from the TrainJob's environment (COGWORK_TASK's
                         # dataset, COGWORK_CHECKPOINT_DIR).
                         "script": {"command": ["python", "label_model.py"]}}})
    jobs.apply(labeljob("team-ts", model={"fromTrainJob": "team-train", "format": "torchscript",
                                          "path": "label_model.ts"}, **own_pool))
    trained = jobs.wait_phase("team-train", "Succeeded", "Failed", timeout=300)
    assert trained["phase"] == "Succeeded", trained.get("conditions")

    # The entrypoint loads the weights the script saved next to it; the team puts them in the
    # pool's claim (mounted at /cogwork/data in the score pods).
    ckpt = claim_dir(jobs, "team-train-ckpt")
    (data / "label_model.pt").write_bytes((ckpt / "label_model.pt").read_bytes())
    jobs.apply(labeljob("team-fn", model={"entrypoint": "label_model:predict",
                                          "image": BARE_IMAGE}, **own_pool))

    def finished(name: str) -> dict[str, Any] | None:
        status = label_status(jobs, name)
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    def score_pods(name: str) -> dict[str, Any] | None:
        pods = jobs.pods(f"cogwork.dev/job-name={name},cogwork.dev/role=score")
        return {p["metadata"]["name"]: p for p in pods} if len(pods) == 2 else None

    fn_pods = jobs.wait_for("entrypoint score pods", lambda: score_pods("team-fn"), timeout=120)
    results = {}
    for name in ("team-ts", "team-fn"):
        status = jobs.wait_for(f"{name} finished", lambda n=name: finished(n), timeout=420)
        assert status["phase"] == "Succeeded", json.dumps(status, indent=1)[:3000]
        counts = status["counts"]
        assert counts["total"] == counts["predicted"] == len(x)
        assert counts["humanLabeled"] == 400 and counts["autoAccepted"] > 0
        assert condition(status, "Certified")["status"] == "True"
        assert status["certifiedLowerBound"] >= 0.95
        with open(claim_dir(jobs, f"{name}-labels") / "labels" / "labels.csv", newline="") as f:
            auto = [r for r in csv.DictReader(f) if r["source"] == "auto"]
        assert len(auto) == counts["autoAccepted"]
        by_id = dict(zip(ids, truth.tolist(), strict=True))
        precision = float(np.mean([NAMES[by_id[r["item_id"]]] == r["label"] for r in auto]))
        results[name] = (counts["autoAccepted"], status["certifiedLowerBound"],
                         status["threshold"], precision, status["modelVersion"])
        print(f"{name}: auto-accepted {counts['autoAccepted']} of {len(x)}, certified "
              f"precision >= {status['certifiedLowerBound']:.4f} (target 0.95), threshold "
              f"{status['threshold']:.4f}, realized precision {precision:.4f}")
        assert precision >= 0.95
    assert results["team-ts"][4].startswith("team-train-g")
    assert results["team-fn"][4] == "label_model:predict"
    # Same weights, same inputs (TorchScript vs eager may differ in the last bits).
    assert abs(results["team-ts"][0] - results["team-fn"][0]) <= 5

    # The entrypoint's score pods ran the team's image, the scorer came from ours.
    for pod in fn_pods.values():
        container = pod["spec"]["containers"][0]
        assert container["image"] == BARE_IMAGE
        assert container["command"][1] == "/cogwork/scorer/run.py"
        (init,) = pod["spec"]["initContainers"]
        assert init["image"] != BARE_IMAGE
        assert "cogwork_trainer.labeling.install_scorer" in init["command"]
    log = jobs.cluster.pod_log(jobs.namespace, "team-fn-score-0", "labeler")
    assert "scoring with entrypoint label_model:predict" in log
    merge = {p["metadata"]["name"]: p for p in jobs.pods("cogwork.dev/job-name=team-fn")}
    assert merge["team-fn-merge"]["spec"]["containers"][0]["image"] != BARE_IMAGE
