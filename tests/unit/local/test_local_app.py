"""The local AppDefs are the cluster's AppDef with only the Kubernetes-provided parts replaced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cogwork.api.trainjob import TrainJob
from cogwork.local.console import evaluation_lines, parse_report, progress_line
from cogwork.local.local_app import LocalPlanError, local_apps
from cogwork.plan.settings import RenderSettings
from cogwork.plan.torchx_app import WORKER_ROLE, build_app, role
from cogwork_sdk import contract
from torchx.specs import macros

UID = "0b7c4a52-0000-4000-8000-00000000beef"


def make_job(**spec: Any) -> TrainJob:
    doc: dict[str, Any] = {"task": {"name": "image-classification", "epochs": 1},
                           "data": {"dataset": "digits"}, "nodes": {"min": 1, "max": 3}}
    doc.update(spec)
    return TrainJob.model_validate({"metadata": {"name": "digits"}, "spec": doc})


def test_store_listens_on_the_given_loopback_port(tmp_path: Path) -> None:
    apps = local_apps(make_job(), workdir=tmp_path, port=41234, python="/x/python", job_uid=UID)
    (store,) = apps.store.roles
    assert store.entrypoint == "/x/python"
    assert store.args == ["-m", contract.RDZV_STORE_MODULE, "--host", "127.0.0.1",
                          "--port", "41234"]
    assert store.num_replicas == 1


@pytest.mark.parametrize(("nodes", "expected"), [
    ({"min": 1, "max": 3}, 3),  # count unset: max, as the operator does
    ({"min": 1, "max": 3, "count": 2}, 2),
    ({"min": 2, "max": 2}, 2),
])
def test_one_worker_replica_per_desired_node(tmp_path: Path, nodes: dict[str, int],
                                             expected: int) -> None:
    apps = local_apps(make_job(nodes=nodes), workdir=tmp_path, port=1, python="py", job_uid=UID)
    (worker,) = apps.workers.roles
    assert apps.nodes == worker.num_replicas == expected
    assert f"--nnodes={nodes['min']}:{nodes['max']}" in worker.args


def test_worker_command_is_the_clusters_but_for_the_endpoint(tmp_path: Path) -> None:
    job = make_job(nprocPerNode=2)
    apps = local_apps(job, workdir=tmp_path, port=5555, python="py", job_uid=UID)
    (worker,) = apps.workers.roles
    cluster = role(build_app(job, job_uid=UID, namespace="local",
                             settings=RenderSettings(python="py")), WORKER_ROLE)
    differ = [(a, b) for a, b in zip(worker.args, cluster.args, strict=True) if a != b]
    assert differ == [("--rdzv-endpoint=127.0.0.1:5555",
                       "--rdzv-endpoint=digits-rdzv.digits.local.svc:29400"),
                      ("--local-addr=127.0.0.1", "--local-addr=$(POD_IP)")]
    assert f"--rdzv-id={UID}" in worker.args


def test_worker_env_points_at_the_work_dir_and_prints_progress(tmp_path: Path) -> None:
    apps = local_apps(make_job(), workdir=tmp_path, port=1, python="py", job_uid=UID)
    env = apps.workers.roles[0].env
    assert env["COGWORK_CHECKPOINT_DIR"] == str(tmp_path / "checkpoints") == str(
        apps.checkpoint_dir)
    assert env["COGWORK_REPORT_URL"] == ""  # -> COGWORK_PROGRESS lines on stdout
    assert env["COGWORK_CONTROL_DIR"] == ""
    assert env["COGWORK_HEARTBEAT_FILE"] == str(tmp_path / "nodes" / macros.replica_id
                                                / "heartbeat")
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["COGWORK_JOB_UID"] == UID


@pytest.mark.parametrize(("data", "field"), [
    ({"claimName": "datasets", "path": "d.npz"}, "spec.data.claimName"),
    ({"fromLabelJob": "labels"}, "spec.data.fromLabelJob"),
])
def test_cluster_only_data_is_refused(tmp_path: Path, data: dict[str, str], field: str) -> None:
    with pytest.raises(LocalPlanError, match=field):
        local_apps(make_job(data=data), workdir=tmp_path, port=1, python="py")


@pytest.mark.parametrize(("spec", "field"), [
    ({"env": [{"name": "A", "value": "1"},
              {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
     r"spec\.env\[1\]\.valueFrom \(KEY\)"),
    ({"envFrom": [{"configMapRef": {"name": "team"}}]}, r"spec\.envFrom\[0\]"),
])
def test_secrets_and_config_maps_are_refused(tmp_path: Path, spec: dict[str, Any],
                                             field: str) -> None:
    with pytest.raises(LocalPlanError, match=field):
        local_apps(make_job(**spec), workdir=tmp_path, port=1, python="py")


def test_pod_only_fields_are_ignored_locally(tmp_path: Path) -> None:
    job = make_job(podTemplate={"readOnlyRootFilesystem": True, "shmSize": "1Gi",
                                "securityContext": {"runAsUser": 1000}})
    apps = local_apps(job, workdir=tmp_path, port=1, python="py", job_uid=UID)
    assert "HOME" not in role(apps.workers, WORKER_ROLE).env


def test_progress_lines_are_parsed_with_the_operators_model() -> None:
    line = ('[rank0]: COGWORK_PROGRESS {"event":"progress","progressPercentage":45,'
            '"estimatedRemainingSeconds":75,"step":120,"totalSteps":264,"epoch":5,'
            '"samplesPerSecond":1800.5,"metrics":[{"name":"loss","value":"0.12"}]}')
    report = parse_report(line)
    assert report is not None and report.step == 120
    assert progress_line(report) == ("step 120/264   45%  epoch 5  loss 0.12  1800 samples/s"
                                     "  ETA 1m15s")
    assert parse_report("INFO torchrun: starting") is None
    assert parse_report("COGWORK_PROGRESS {not json") is None
    resumed = parse_report('COGWORK_PROGRESS {"event":"resumed","resumedFromStep":40}')
    assert resumed is not None and progress_line(resumed) == "resumed from checkpoint at step 40"


def test_evaluation_lines_show_accuracy_f1_and_the_matrix() -> None:
    lines = evaluation_lines({"accuracy": 0.75, "macroF1": 0.7, "samples": 4,
                              "confusionMatrix": [[2, 0], [1, 1]], "classes": ["a", "b"]})
    assert lines[:3] == ["accuracy  0.7500", "macro F1  0.7000", "samples   4"]
    assert lines[-3:] == ["true\\pred   a   b", "        a   2   0", "        b   1   1"]
