"""The AppDef carries the pod contract's torchrun command and environment."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cogwork.api.trainjob import TrainJob
from cogwork.api.trainjob_spec import EnvVar
from cogwork.plan.settings import RenderSettings
from cogwork.plan.torchx_app import (
    RDZV_ROLE,
    WORKER_ROLE,
    DataLocation,
    PlanError,
    build_app,
    contract_env,
    role,
    task_document,
)

UID = "6f1c2d9e-0000-4000-8000-000000000001"
SETTINGS = RenderSettings(report_base_url="https://10.0.0.1:8443", report_ca_pem="PEM")


def make_job(name: str = "digits", **spec: Any) -> TrainJob:
    doc: dict[str, Any] = {"task": {"name": "image-classification"}, "data": {"dataset": "digits"},
                           "nodes": {"min": 2, "max": 4}, "nprocPerNode": 2,
                           "rendezvous": {"joinTimeoutSeconds": 30, "maxRestarts": 5}}
    doc.update(spec)
    return TrainJob.model_validate({"metadata": {"name": name, "namespace": "ml"}, "spec": doc})


def worker_args(job: TrainJob, **kwargs: Any) -> list[str]:
    app = build_app(job, job_uid=UID, namespace="ml", settings=SETTINGS, **kwargs)
    return list(role(app, WORKER_ROLE).args)


def test_torchrun_command_follows_the_contract() -> None:
    assert worker_args(make_job()) == [
        "-m", "cogwork_sdk.launch",
        "--nnodes=2:4",
        "--nproc-per-node=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=digits-rdzv.digits.ml.svc:29400",
        f"--rdzv-id={UID}",
        "--rdzv-conf=is_host=false,join_timeout=30,last_call_timeout=3,"
        "keep_alive_interval=1,keep_alive_max_attempt=3",
        "--max-restarts=5",
        "--monitor-interval=1",
        "--local-addr=$(POD_IP)",
        "-m", "cogwork_trainer.train",
    ]


def test_rdzv_id_is_the_uid_never_a_constant() -> None:
    other = "6f1c2d9e-0000-4000-8000-000000000002"
    first = build_app(make_job(), job_uid=UID, namespace="ml", settings=SETTINGS)
    second = build_app(make_job(), job_uid=other, namespace="ml", settings=SETTINGS)
    assert f"--rdzv-id={UID}" in role(first, WORKER_ROLE).args
    assert f"--rdzv-id={other}" in role(second, WORKER_ROLE).args


def test_local_runs_can_override_endpoint_and_drop_local_addr() -> None:
    args = worker_args(make_job(), endpoint="127.0.0.1:29400", local_addr=None)
    assert "--rdzv-endpoint=127.0.0.1:29400" in args
    assert not any(a.startswith("--local-addr") for a in args)


def test_roles_keep_ddp_conventions() -> None:
    app = build_app(make_job(), job_uid=UID, namespace="ml", settings=SETTINGS)
    assert [r.name for r in app.roles] == [RDZV_ROLE, WORKER_ROLE]
    worker, store = role(app, WORKER_ROLE), role(app, RDZV_ROLE)
    assert (worker.min_replicas, worker.num_replicas, worker.max_retries) == (2, 4, 3)
    assert worker.entrypoint == "python" and worker.image == "ghcr.io/cogwork/trainer:0.1.0"
    assert (worker.resource.cpu, worker.resource.memMB, worker.resource.gpu) == (1, 2048, 0)
    assert store.args == ["-m", "cogwork_trainer.rdzv_store", "--port", "29400"]
    assert store.port_map == {"c10d": 29400} and store.num_replicas == 1


def test_python_executable_is_configurable() -> None:
    settings = RenderSettings(python="/opt/venv/bin/python")
    app = build_app(make_job(), job_uid=UID, namespace="ml", settings=settings)
    assert {r.entrypoint for r in app.roles} == {"/opt/venv/bin/python"}


def test_script_module_runs_under_the_trainer_harness() -> None:
    job = make_job(task=None, data=None, script={"module": "my.pkg.train", "args": ["--lr", "1"]})
    assert worker_args(job)[-2:] == ["-m", "cogwork_trainer.train"]
    # failOnNonFiniteLoss travels too: the harness's SDK session reads it from COGWORK_TASK.
    assert task_document(job.spec) == {"script": {"module": "my.pkg.train",
                                                  "args": ["--lr", "1"],
                                                  "failOnNonFiniteLoss": True}}


def test_script_command_is_started_directly_by_torchrun() -> None:
    job = make_job(task=None, data=None,
                   script={"command": ["/usr/bin/trainer", "--fast"], "args": ["x"]})
    assert worker_args(job)[-4:] == ["--no-python", "/usr/bin/trainer", "--fast", "x"]


def test_contract_env() -> None:
    job = make_job(resources={"cpu": "3", "memory": "4Gi"},
                   checkpoint={"everySteps": 7, "keep": 2},
                   env=[{"name": "NCCL_DEBUG", "value": "INFO"}])
    env = contract_env(job, job_uid=UID, namespace="ml", settings=SETTINGS)
    assert env["COGWORK_JOB_NAME"] == "digits" and env["COGWORK_JOB_NAMESPACE"] == "ml"
    assert env["COGWORK_JOB_UID"] == UID
    assert env["COGWORK_CHECKPOINT_DIR"] == "/cogwork/checkpoints"
    assert (env["COGWORK_CHECKPOINT_EVERY"], env["COGWORK_CHECKPOINT_KEEP"]) == ("7", "2")
    assert env["COGWORK_CONTROL_DIR"] == "/etc/cogwork/control"
    assert env["COGWORK_REPORT_URL"] == "https://10.0.0.1:8443/v1/namespaces/ml/trainjobs/digits/report"
    assert env["COGWORK_REPORT_TOKEN_FILE"] == "/var/run/cogwork/report/token"
    assert env["COGWORK_REPORT_CA"] == "PEM" and env["COGWORK_BACKEND"] == "gloo"
    assert env["OMP_NUM_THREADS"] == "1"  # 3 CPUs / 2 processes, rounded down
    assert env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert env["NCCL_DEBUG"] == "INFO"
    task = json.loads(env["COGWORK_TASK"])
    assert task["name"] == "image-classification" and task["dataset"] == "digits"
    assert task["batchSize"] == 64 and task["learningRate"] == "0.05"
    assert task["testFraction"] == 0.2


@pytest.mark.parametrize(("cpu", "nproc", "threads"), [("500m", 1, "1"), ("8", 2, "4"),
                                                        (16, 3, "5")])
def test_omp_threads_divide_the_cpu_limit(cpu: str | int, nproc: int, threads: str) -> None:
    job = make_job(resources={"cpu": cpu}, nprocPerNode=nproc)
    assert contract_env(job, job_uid=UID, namespace="ml",
                        settings=SETTINGS)["OMP_NUM_THREADS"] == threads


def test_gpu_selects_nccl() -> None:
    job = make_job(resources={"gpu": 2})
    assert contract_env(job, job_uid=UID, namespace="ml", settings=SETTINGS)[
        "COGWORK_BACKEND"] == "nccl"


def test_user_env_cannot_override_injected_names_even_when_built_by_hand() -> None:
    job = make_job()
    job.spec.env.append(EnvVar.model_construct(name="COGWORK_BACKEND", value="mpi"))
    env = contract_env(job, job_uid=UID, namespace="ml", settings=SETTINGS)
    assert env["COGWORK_BACKEND"] == "gloo"


def test_operator_extra_env_and_image_mirror() -> None:
    settings = RenderSettings(extra_env={"COGWORK_STEP_DELAY_SECONDS": "0.2"},
                              image="mirror.local/trainer:0.1.0")
    app = build_app(make_job(), job_uid=UID, namespace="ml", settings=settings)
    assert role(app, WORKER_ROLE).env["COGWORK_STEP_DELAY_SECONDS"] == "0.2"
    assert role(app, WORKER_ROLE).image == "mirror.local/trainer:0.1.0"
    custom = build_app(make_job(image="me/mine:1"), job_uid=UID, namespace="ml",
                       settings=settings)
    assert role(custom, WORKER_ROLE).image == "me/mine:1"  # an explicit image is kept


def test_data_paths() -> None:
    in_claim = make_job(data={"path": "sets/a.npz", "claimName": "datasets", "testPercent": 10})
    assert task_document(in_claim.spec)["dataset"] == "/cogwork/data/sets/a.npz"
    assert task_document(in_claim.spec)["testFraction"] == 0.1
    in_image = make_job(data={"path": "/data/b.npz"})
    assert task_document(in_image.spec)["dataset"] == "/data/b.npz"
    labeled = make_job(data={"fromLabelJob": "pool"})
    with pytest.raises(PlanError, match="fromLabelJob"):
        task_document(labeled.spec)
    resolved = DataLocation(path="labels/out.npz", claim_name="pool-out")
    assert task_document(labeled.spec, resolved)["dataset"] == "/cogwork/data/labels/out.npz"
