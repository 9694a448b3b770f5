"""The LabelJob planner: pods per step, model and dataset references, status from summaries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cogwork.api.labeljob import LabelJob
from cogwork.api.trainjob import DEFAULT_IMAGE, TrainJob
from cogwork.plan import trainjob_reconcile
from cogwork.plan.labeljob_observe import LabelPod, observe_pod
from cogwork.plan.labeljob_reconcile import reconcile
from cogwork.plan.labeljob_refs import (
    ModelResolution,
    resolve_dataset,
    resolve_model,
)
from cogwork.plan.labeljob_steps import ModelRef
from cogwork.plan.lifecycle import waiting_status
from cogwork.plan.settings import RenderSettings
from cogwork.plan.trainjob_observe import PodObservation
from cogwork.plan.trainjob_render import worker_pod

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
SETTINGS = RenderSettings()
MODEL = ModelResolution(ModelRef("/cogwork/model/model.pt", "digits-g1", "digits-ckpt"))
CERTIFIED = {"total": 1797, "predicted": 1797, "autoAccepted": 970, "routedToReview": 100,
             "humanLabeled": 400, "flaggedErrors": 12, "coverage": 0.54, "round": 0,
             "itemsPerSecond": 150000.0, "modelVersion": "digits-g1", "certified": True,
             "threshold": 0.91, "lowerBound": 0.953, "reason": "certified"}


def labeljob(name: str = "lj", status: dict[str, Any] | None = None, **spec: Any) -> LabelJob:
    body: dict[str, Any] = {
        "model": {"fromTrainJob": "digits"}, "pool": {"dataset": "digits"},
        "seed": {"count": 300}, "inference": {"replicas": 3},
        "autoAccept": {"targetPrecision": "0.95", "validation": {"humanBudget": 400}},
    }
    body.update(spec)
    return LabelJob.model_validate({
        "apiVersion": "cogwork.dev/v1alpha1", "kind": "LabelJob",
        "metadata": {"name": name, "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": body, "status": status or {}})


def done(name: str, message: dict[str, Any] | str | None = None, code: int = 0,
         finished: datetime = NOW) -> LabelPod:
    text = json.dumps(message) if isinstance(message, dict) else message
    return LabelPod(name, "Succeeded" if code == 0 else "Failed", code, text,
                    finished_at=finished.strftime("%Y-%m-%dT%H:%M:%SZ"))


def shard(i: int, items: int = 599) -> LabelPod:
    return done(f"lj-score-{i}", {"shard": i, "shards": 3, "items": items, "total": 1797,
                                  "seconds": 0.01})


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status["conditions"] if c["type"] == kind), {})


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom"))
            for e in pod["spec"]["containers"][0]["env"]}


def test_first_pass_creates_claim_and_one_pod_per_shard() -> None:
    actions = reconcile(labeljob(), [], MODEL, NOW, SETTINGS)
    kinds = [o["kind"] for o in actions.create]
    assert kinds == ["PersistentVolumeClaim", "Pod", "Pod", "Pod"]
    assert actions.create[0]["metadata"]["name"] == "lj-labels"
    pods = actions.create[1:]
    assert [p["metadata"]["name"] for p in pods] == ["lj-score-0", "lj-score-1", "lj-score-2"]
    for index, pod in enumerate(pods):
        labels = pod["metadata"]["labels"]
        assert labels["cogwork.dev/job-name"] == "lj" and labels["cogwork.dev/kind"] == "LabelJob"
        assert labels["cogwork.dev/node-index"] == str(index)
        container = pod["spec"]["containers"][0]
        assert container["command"][-6:] == ["--shard-index", str(index), "--shard-count", "3",
                                             "--summary-to", "/dev/termination-log"]
        assert container["terminationMessagePath"] == "/dev/termination-log"
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        scratch = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        empty = {v["name"] for v in pod["spec"]["volumes"] if v.get("emptyDir") == {}}
        assert {scratch["/tmp"], scratch["/cogwork/home"]} <= empty
        assert env_of(pod)["HOME"] == "/cogwork/home"
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"]["restartPolicy"] == "Never"
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v}
        assert claims == {"output": "lj-labels", "model": "digits-ckpt"}
        config = json.loads(env_of(pod)["COGWORK_LABELJOB"])
        assert config["output"] == "/cogwork/output/labels"
        assert config["model"] == {"path": "/cogwork/model/model.pt"}
        assert config["seed"] == {"count": 300}
    assert actions.status["phase"] == "Running"
    assert actions.status["startTime"]
    assert condition(actions.status, "Created")["status"] == "True"


def test_waiting_for_the_trainjob_creates_nothing_and_says_why() -> None:
    waiting = resolve_model(labeljob(), {"status": {"phase": "Running", "conditions": []}})
    assert waiting.model is None and waiting.waiting
    actions = reconcile(labeljob(), [], waiting, NOW, SETTINGS)
    assert actions.create == []
    created = condition(actions.status, "Created")
    assert created["status"] == "False" and created["reason"] == "WaitingForModel"
    assert "spec.model.fromTrainJob=digits" in created["message"]
    assert resolve_model(labeljob(), None).waiting


def test_failed_trainjob_fails_the_labeljob() -> None:
    failed = resolve_model(labeljob(), {"status": {"conditions": [
        {"type": "Failed", "status": "True", "message": "node-0 exited 2"}]}})
    actions = reconcile(labeljob(), [], failed, NOW, SETTINGS)
    assert actions.status["phase"] == "Failed"
    assert condition(actions.status, "Failed")["reason"] == "ModelUnavailable"
    assert "node-0 exited 2" in condition(actions.status, "Failed")["message"]


def test_succeeded_trainjob_resolves_to_its_checkpoint_claim() -> None:
    trainjob = {"metadata": {"generation": 4}, "spec": {"checkpoint": {"claimName": "ckpts"}},
                "status": {"conditions": [{"type": "Succeeded", "status": "True"}]}}
    model = resolve_model(labeljob(), trainjob).model
    assert model == ModelRef("/cogwork/model/model.pt", "digits-g4", "ckpts")
    by_path = resolve_model(labeljob(model={"path": "m/model.pt", "claimName": "models"}), None)
    assert by_path.model == ModelRef("/cogwork/model/m/model.pt", "model", "models")


def test_merge_starts_only_when_every_shard_succeeded() -> None:
    two = reconcile(labeljob(), [shard(0), shard(1), LabelPod("lj-score-2", "Running")], MODEL,
                    NOW, SETTINGS)
    assert two.create == []
    assert two.status["predictedText"] == "1198/1797"
    assert two.status["counts"] == {"total": 1797, "predicted": 1198}
    three = reconcile(labeljob(), [shard(0), shard(1), shard(2)], MODEL, NOW, SETTINGS)
    names = [o["metadata"]["name"] for o in three.create if o["kind"] == "Pod"]
    assert names == ["lj-merge"]
    command = three.create[-1]["spec"]["containers"][0]["command"]
    assert command[-4:] == ["--shard-count", "3", "--summary-to", "/dev/termination-log"]


def test_merge_summary_becomes_status_and_success() -> None:
    pods = [shard(0), shard(1), shard(2), done("lj-merge", CERTIFIED)]
    actions = reconcile(labeljob(), pods, MODEL, NOW, SETTINGS)
    status = actions.status
    assert status["phase"] == "Succeeded"
    assert status["counts"] == {"total": 1797, "predicted": 1797, "autoAccepted": 970,
                                "routedToReview": 100, "humanLabeled": 400, "flaggedErrors": 12}
    assert (status["threshold"], status["certifiedLowerBound"], status["coverage"]) == \
        (0.91, 0.953, 0.54)
    assert status["outputs"]["dataset"] == "lj-labels:labels/dataset.npz"
    assert condition(status, "Certified")["status"] == "True"
    assert status["completionTime"]


def test_uncertifiable_target_reports_the_bound_reached() -> None:
    summary = {**CERTIFIED, "certified": False, "threshold": None, "lowerBound": 0.9704,
               "autoAccepted": 0, "coverage": 0.0, "humanLabeled": 100}
    job = labeljob(autoAccept={"targetPrecision": "0.999", "validation": {"humanBudget": 100}})
    pods = [shard(0), shard(1), shard(2), done("lj-merge", summary)]
    actions = reconcile(job, pods, MODEL, NOW, SETTINGS)
    certified = condition(actions.status, "Certified")
    assert certified["status"] == "False" and certified["reason"] == "TargetNotCertified"
    assert "0.9704" in certified["message"] and "0.999" in certified["message"]
    assert actions.status["counts"]["autoAccepted"] == 0
    assert any(e[1] == "NotCertified" for e in actions.events)


def test_a_failed_shard_fails_the_job_naming_pod_and_exit_code() -> None:
    pods = [shard(0), done("lj-score-1", "cannot pre-label: model.pt missing", code=2),
            LabelPod("lj-score-2", "Running")]
    actions = reconcile(labeljob(), pods, MODEL, NOW, SETTINGS)
    failed = condition(actions.status, "Failed")
    assert failed["reason"] == "ExitCode2"
    assert "lj-score-1" in failed["message"] and "model.pt missing" in failed["message"]
    assert actions.create == [] and actions.delete_pods == ["lj-score-2"]


def test_finished_jobs_never_recreate_pods() -> None:
    finished = reconcile(labeljob(), [shard(0), shard(1), shard(2), done("lj-merge", CERTIFIED)],
                         MODEL, NOW, SETTINGS)
    again = reconcile(labeljob(status=finished.status), [], MODEL, NOW + timedelta(minutes=1),
                      SETTINGS)
    assert again.create == [] and again.status["phase"] == "Succeeded"


def test_suspend_keeps_finished_shards_and_stops_the_rest() -> None:
    pods = [shard(0), LabelPod("lj-score-1", "Running"), LabelPod("lj-score-2", "Pending")]
    actions = reconcile(labeljob(suspend=True), pods, MODEL, NOW, SETTINGS)
    assert actions.delete_pods == ["lj-score-1", "lj-score-2"]
    assert actions.status["phase"] == "Suspended" and actions.create == []


SINK = {"labelStudio": {"url": "http://ls:8080", "secretRef": {"name": "ls"}, "project": 3}}


def test_sink_pushes_with_the_secret_and_reports_a_missing_one() -> None:
    job = labeljob(sink=SINK)
    merged = [shard(0), shard(1), shard(2), done("lj-merge", CERTIFIED)]
    first = reconcile(job, merged, MODEL, NOW, SETTINGS)
    push = next(o for o in first.create if o["metadata"]["name"] == "lj-push")
    env = env_of(push)
    assert env["LABEL_STUDIO_API_KEY"] == {"secretKeyRef": {"name": "ls", "key": "api-key"}}
    assert env["LABEL_STUDIO_PROJECT"] == "3" and env["LABEL_STUDIO_URL"] == "http://ls:8080"
    assert first.status["phase"] == "Running"
    stuck = LabelPod("lj-push", "Pending", waiting_reason="CreateContainerConfigError",
                     waiting_message='secret "ls" not found')
    waiting = reconcile(job, [*merged, stuck], MODEL, NOW, SETTINGS)
    sink = condition(waiting.status, "SinkReady")
    assert sink["status"] == "False" and sink["reason"] == "SecretNotFound"
    assert "spec.sink.labelStudio.secretRef" in sink["message"] and "not found" in sink["message"]
    pushed = reconcile(job, [*merged, done("lj-push")], MODEL, NOW, SETTINGS)
    assert pushed.status["phase"] == "Succeeded"
    assert condition(pushed.status, "SinkReady")["status"] == "True"


def test_unreachable_label_studio_is_retried_not_failed() -> None:
    job = labeljob(sink=SINK)
    merged = [shard(0), shard(1), shard(2), done("lj-merge", CERTIFIED)]
    refused = done("lj-push", "HTTP 401 (check the API token in the Secret)", code=3)
    soon = reconcile(job, [*merged, refused], MODEL, NOW + timedelta(seconds=5), SETTINGS)
    assert soon.status["phase"] == "Running" and soon.delete_pods == []
    assert "HTTP 401" in condition(soon.status, "SinkReady")["message"]
    later = reconcile(job, [*merged, refused], MODEL, NOW + timedelta(seconds=40), SETTINGS)
    assert later.delete_pods == ["lj-push"]


def test_observe_pod_reads_the_termination_message() -> None:
    pod = observe_pod({"metadata": {"name": "lj-merge"}, "status": {
        "phase": "Succeeded", "containerStatuses": [{"state": {"terminated": {
            "exitCode": 0, "message": '{"total": 3}', "finishedAt": "2025-01-01T00:00:00Z"}}}]}})
    assert (pod.phase, pod.exit_code, pod.message) == ("Succeeded", 0, '{"total": 3}')


def trainjob_observe_pod(name: str, role: str) -> PodObservation:
    return PodObservation(name=name, role=role, index=0 if role == "worker" else None,
                          phase="Running", created="2025-01-01T11:59:00Z")


def trainjob_on(labeljob_name: str) -> TrainJob:
    return TrainJob.model_validate({
        "apiVersion": "cogwork.dev/v1alpha1", "kind": "TrainJob",
        "metadata": {"name": "tj", "namespace": "ns", "uid": "u-2", "generation": 1},
        "spec": {"task": {"name": "image-classification", "epochs": 2},
                 "data": {"fromLabelJob": labeljob_name}, "nodes": {"min": 1, "max": 1}}})


def test_trainjob_waits_for_the_labeljob_then_trains_on_its_dataset() -> None:
    train = trainjob_on("lj")
    running = {"status": {"phase": "Running", "conditions": []}}
    waiting = resolve_dataset(train, running)
    assert waiting.location is None and "spec.data.fromLabelJob=lj" in (waiting.waiting or "")
    status = waiting_status(train, "WaitingForData", waiting.waiting or "", NOW)
    assert status["conditions"][0]["reason"] == "WaitingForData"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Stalled"] == "False"
    finished = labeljob(status={"conditions": [{"type": "Succeeded", "status": "True"}]})
    location = resolve_dataset(train, finished.model_dump(mode="json", by_alias=True)).location
    assert location is not None
    assert (location.path, location.claim_name) == ("labels/dataset.npz", "lj-labels")
    pod = worker_pod(train, 0, SETTINGS, resolved_data=location)
    task = json.loads(env_of(pod)["COGWORK_TASK"])
    assert task["dataset"] == "/cogwork/data/labels/dataset.npz"
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "lj-labels",
                                                      "readOnly": True}} in pod["spec"]["volumes"]
    actions = trainjob_reconcile.reconcile(train, [], NOW, SETTINGS, location)
    assert [o["metadata"]["name"] for o in actions.create if o["kind"] == "Pod"] == \
        ["tj-rdzv", "tj-node-0"]


def test_a_labeljob_deleted_under_a_running_trainjob_leaves_it_its_dataset() -> None:
    """The dataset is kept in status.dataFrom once resolved: the LabelJob's deletion (or a new
    one of that name) cannot move it; the job says what the deletion means and runs on."""
    finished = labeljob(status={"conditions": [{"type": "Succeeded", "status": "True"}]})
    resolved = resolve_dataset(trainjob_on("lj"), finished.model_dump(mode="json", by_alias=True))
    assert resolved.kept is not None and resolved.gone is None
    assert (resolved.kept.kind, resolved.kept.name, resolved.kept.uid) == ("LabelJob", "lj", "u-1")
    started = trainjob_on("lj").model_copy(deep=True)
    started.status.data_from = resolved.kept
    started.status.active_nodes = [0]
    for source in (None, {"metadata": {"uid": "u-other"}, "status": {"phase": "Running"}}):
        after = resolve_dataset(started, source)
        assert after.location == resolved.location and after.waiting is None
        assert after.gone is not None and "spec.data.fromLabelJob=lj" in after.gone
        assert "labels/dataset.npz on claim lj-labels" in after.gone
    running = [trainjob_observe_pod("tj-rdzv", "rdzv"), trainjob_observe_pod("tj-node-0", "worker")]
    gone = resolve_dataset(started, None).gone
    actions = trainjob_reconcile.reconcile(started, running, NOW, SETTINGS,
                                           resolved.location, gone)
    available = condition(actions.status, "InputAvailable")
    assert (available["status"], available["reason"]) == ("False", "SourceDeleted")
    assert actions.status["phase"] == "Running" and actions.delete_pods == []
    assert [e.reason for e in actions.events].count("SourceDeleted") == 1
    body = started.model_dump(mode="json", by_alias=True, exclude_none=True)
    again = TrainJob.model_validate({**body, "status": {**body["status"], **actions.status}})
    repeat = trainjob_reconcile.reconcile(again, running, NOW, SETTINGS, resolved.location, gone)
    assert "SourceDeleted" not in [e.reason for e in repeat.events]  # said once
    kept = trainjob_reconcile.reconcile(started, running, NOW, SETTINGS, resolved.location)
    assert all(c["type"] != "InputAvailable" for c in kept.status["conditions"])


def test_a_trainjob_deleted_under_a_running_labeljob_leaves_it_its_model() -> None:
    trainjob = {"metadata": {"generation": 4, "uid": "t-1"},
                "spec": {"checkpoint": {"claimName": "ckpts"}},
                "status": {"conditions": [{"type": "Succeeded", "status": "True"}]}}
    resolved = resolve_model(labeljob(), trainjob)
    assert resolved.kept is not None and resolved.gone is None
    started = labeljob(status={"modelFrom": resolved.kept.model_dump(mode="json",
                                                                     by_alias=True)})
    after = resolve_model(started, None)
    assert after.model == resolved.model == ModelRef("/cogwork/model/model.pt", "digits-g4",
                                                     "ckpts")
    assert after.gone is not None and "spec.model.fromTrainJob=digits" in after.gone
    actions = reconcile(started, [LabelPod("lj-score-0", "Running")], after, NOW, SETTINGS)
    assert condition(actions.status, "InputAvailable")["reason"] == "SourceDeleted"
    assert actions.status["phase"] != "Failed"
    assert resolve_model(started, trainjob).gone is None  # the same TrainJob: nothing to say


def test_local_run_refuses_what_needs_a_cluster(tmp_path: Any) -> None:
    import io

    from cogwork.local.dispatch import run_document

    out = io.StringIO()
    doc = labeljob(seed=None).model_dump(mode="json", by_alias=True, exclude_none=True)
    assert run_document(doc, workdir=tmp_path, out=out) == 2
    assert "spec.model.fromTrainJob='digits'" in out.getvalue()
    bad = {**doc, "spec": {**doc["spec"], "autoAccept": {"targetPrecision": "1.2",
                                                          "validation": {"humanBudget": 10}}}}
    out = io.StringIO()
    assert run_document(bad, workdir=tmp_path, out=out) == 2
    assert "spec.autoAccept.targetPrecision" in out.getvalue()


def test_merge_summary_fits_a_termination_message() -> None:
    from cogwork_trainer.labeling.merge import TERMINATION_MESSAGE_LIMIT, compact_summary

    per_class = {str(c): {"threshold": 0.123456789, "lowerBound": 0.987654321}
                 for c in range(200)}
    text = compact_summary({**CERTIFIED, "perClass": per_class})
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    assert json.loads(text)["autoAccepted"] == 970 and "perClass" not in json.loads(text)
    small = json.loads(compact_summary({**CERTIFIED, "perClass": {"0": {"threshold": 0.5}}}))
    assert small["perClass"] == {"0": {"threshold": 0.5}}


# ---- the user's model (spec.model.format, spec.model.entrypoint) ----------------------------

OWN_POOL = {"pool": {"path": "pool.npz", "claimName": "team-data"}, "seed": {"path": "seed.csv"},
            "autoAccept": {"validation": {"path": "val.csv"}}}
ENTRYPOINT = {"entrypoint": "label_model:predict", "image": "registry.example/team:7",
              "outputs": "probabilities", "classes": ["cat", "dog"]}


def test_entrypoint_scores_in_the_users_image_with_the_scorer_from_an_init_container() -> None:
    job = labeljob(model=ENTRYPOINT, **OWN_POOL)
    resolved = resolve_model(job, None)
    assert resolved.model == ModelRef(None, "label_model:predict",
                                      entrypoint="label_model:predict",
                                      image="registry.example/team:7")
    actions = reconcile(job, [], resolved, NOW, SETTINGS)
    pods = [o for o in actions.create if o["kind"] == "Pod"]
    assert [p["metadata"]["name"] for p in pods] == ["lj-score-0", "lj-score-1", "lj-score-2"]
    for index, pod in enumerate(pods):
        container = pod["spec"]["containers"][0]
        assert container["image"] == "registry.example/team:7"
        # The same `-m` step, through the copied scorer's bootstrap (scorer dir first on
        # sys.path; the image's PYTHONPATH and working directory stay).
        assert container["command"][:4] == ["python", "/cogwork/scorer/run.py", "-m",
                                            "cogwork_trainer.labeling.prelabel"]
        assert container["command"][-6:-2] == ["--shard-index", str(index), "--shard-count",
                                               "3"]
        assert "PYTHONPATH" not in env_of(pod)
        (init,) = pod["spec"]["initContainers"]
        assert init["image"] == DEFAULT_IMAGE  # the labeling image: the scorer's code is ours
        assert init["command"] == ["python", "-m", "cogwork_trainer.labeling.install_scorer",
                                   "/cogwork/scorer"]
        assert init["securityContext"]["readOnlyRootFilesystem"] is True
        assert init["resources"]["requests"] == init["resources"]["limits"]
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["cogwork-scorer"] == {"name": "cogwork-scorer", "emptyDir": {}}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/cogwork/scorer"] == {"name": "cogwork-scorer",
                                             "mountPath": "/cogwork/scorer", "readOnly": True}
        assert init["volumeMounts"] == [{"name": "cogwork-scorer",
                                         "mountPath": "/cogwork/scorer"}]
        assert "model" not in volumes  # no model file: the function is the model
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        config = json.loads(env_of(pod)["COGWORK_LABELJOB"])
        assert config["model"] == {"entrypoint": "label_model:predict",
                                   "outputs": "probabilities", "classes": ["cat", "dog"]}
    # Merge (and every other step) stays on the labeling image: it never loads the model.
    merged = reconcile(job, [shard(0), shard(1), shard(2)], resolved, NOW, SETTINGS)
    (merge,) = [o for o in merged.create if o["kind"] == "Pod"]
    assert merge["spec"]["containers"][0]["image"] == DEFAULT_IMAGE
    assert "initContainers" not in merge["spec"]


def test_scorer_init_container_comes_from_the_labeling_image() -> None:
    job = labeljob(model=ENTRYPOINT, image="mirror.example/cogwork-trainer:1", **OWN_POOL)
    actions = reconcile(job, [], resolve_model(job, None), NOW, SETTINGS)
    pod = next(o for o in actions.create if o["kind"] == "Pod")
    assert pod["spec"]["initContainers"][0]["image"] == "mirror.example/cogwork-trainer:1"


def test_user_model_file_from_a_script_trainjob_checkpoint() -> None:
    job = labeljob(model={"fromTrainJob": "script", "format": "torchscript",
                          "path": "export/model.ts"}, **OWN_POOL)
    trainjob = {"metadata": {"generation": 2}, "spec": {"script": {"command": ["python"]}},
                "status": {"conditions": [{"type": "Succeeded", "status": "True"}]}}
    model = resolve_model(job, trainjob).model
    assert model == ModelRef("/cogwork/model/export/model.ts", "script-g2", "script-ckpt",
                             "torchscript")
    pod = next(o for o in reconcile(job, [], ModelResolution(model), NOW, SETTINGS).create
               if o["kind"] == "Pod")
    # A model file is self-contained: it runs in the labeling image, no init container.
    assert pod["spec"]["containers"][0]["image"] == DEFAULT_IMAGE
    assert "initContainers" not in pod["spec"]
    config = json.loads(env_of(pod)["COGWORK_LABELJOB"])
    assert config["model"] == {"path": "/cogwork/model/export/model.ts",
                               "format": "torchscript", "outputs": "logits"}
    assert {"name": "model", "persistentVolumeClaim": {"claimName": "script-ckpt",
                                                       "readOnly": True}} in pod["spec"]["volumes"]
    own = labeljob(model={"path": "m/digits.pt2", "claimName": "models", "format": "export"},
                   **OWN_POOL)
    assert resolve_model(own, None).model == ModelRef("/cogwork/model/m/digits.pt2", "digits",
                                                      "models", "export")


def test_retrains_score_with_the_same_file_of_their_own_checkpoints() -> None:
    from cogwork.plan.labeljob_rounds import retrained_model

    job = labeljob(model={"fromTrainJob": "script", "format": "export", "path": "model.pt2"},
                   review={"maxRounds": 2}, sink=SINK, **OWN_POOL)
    retrain = {"metadata": {"generation": 1}, "spec": {},
               "status": {"conditions": [{"type": "Succeeded", "status": "True"}]}}
    assert retrained_model(job, 1, retrain).model == ModelRef(
        "/cogwork/model/model.pt2", "lj-r1-g1", "lj-r1-ckpt", "export")


def test_a_model_that_does_not_fit_the_pool_fails_the_job_naming_spec_model() -> None:
    job = labeljob(model=ENTRYPOINT, **OWN_POOL)
    log_tail = ("2025-01-01 12:00:00,000 ERROR cogwork_trainer.labeling: cannot pre-label: "
                "spec.model: entrypoint label_model:predict returns 10 outputs per item but "
                "there are 2 classes (the pool file's `classes`, else spec.model.classes): they "
                "must agree")
    pods = [done("lj-score-0", log_tail, code=2), LabelPod("lj-score-1", "Running"), shard(2)]
    actions = reconcile(job, pods, resolve_model(job, None), NOW, SETTINGS)
    failed = condition(actions.status, "Failed")
    assert actions.status["phase"] == "Failed" and failed["reason"] == "ExitCode2"
    assert "spec.model: entrypoint label_model:predict returns 10 outputs" in failed["message"]
    # Failed is sticky: nothing is recreated, so a model that cannot fit never hot-loops.
    again = reconcile(labeljob(model=ENTRYPOINT, status=actions.status, **OWN_POOL), [],
                      resolve_model(job, None), NOW + timedelta(minutes=5), SETTINGS)
    assert again.create == [] and again.status["phase"] == "Failed"


def test_a_failed_labeljob_fails_the_trainjob_and_a_cycle_is_refused() -> None:
    train = trainjob_on("lj")
    failed = labeljob(status={"conditions": [{"type": "Failed", "status": "True",
                                              "message": "no model"}]})
    resolution = resolve_dataset(train, failed.model_dump(mode="json", by_alias=True))
    assert resolution.failed == "spec.data.fromLabelJob=lj: the LabelJob failed: no model"
    assert resolution.waiting is None and resolution.location is None
    # tj trains on lj's labels and lj labels with tj's model: neither could ever start.
    cycle = labeljob(model={"fromTrainJob": "tj"}).model_dump(mode="json", by_alias=True)
    assert "reference cycle" in (resolve_dataset(train, cycle).failed or "")
    back = resolve_model(labeljob(model={"fromTrainJob": "tj"}), train.model_dump(
        mode="json", by_alias=True))
    assert back.failed is not None and "reference cycle" in back.failed
