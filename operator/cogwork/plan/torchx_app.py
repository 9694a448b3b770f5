"""TrainJob -> torchx AppDef: the one intermediate representation of a job.

The operator renders the AppDef's roles into pods (`cogwork.plan.trainjob`); `cogwork run` hands
the same AppDef to torchx's local scheduler with a local rendezvous endpoint.

Why not `torchx.components.dist.ddp`? Its output (torchx 0.7) cannot be bent to the pod
contract: it wraps torchrun in `bash -c` (torchrun would not be PID 1 and would miss SIGTERM),
derives the endpoint from a rank-0 host macro (the contract's store lives in its own pod),
uses `macros.app_id` as rdzv id and `localhost:0` when max nodes is 1, and has no way to pass
`--rdzv-conf`, `--max-restarts`, `--monitor-interval` or `--local-addr`. So the roles are built
here with `torchx.specs`, keeping ddp's conventions (min_replicas/num_replicas = MIN/MAX nodes,
a "c10d" port_map entry, max_retries = retry budget).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from cogwork_sdk import contract as pod_contract
from cogwork_sdk.stdout_metrics import DEFAULT_FORMATS
from torchx import specs

from cogwork.api import contract
from cogwork.api.common import parse_quantity
from cogwork.api.trainjob import DEFAULT_IMAGE, TrainJob, TrainJobSpec
from cogwork.plan.settings import RenderSettings

WORKER_ROLE = "worker"
RDZV_ROLE = "rdzv"
# `exec`-style: the container's PID 1 is python running torchrun, wrapped so the pod exits with
# the failing worker's exit code (see sdk/cogwork_sdk/launch.py). In the trainer image it is a
# module; a user's image gets the same package from the launcher init container (torch-only).
TORCHRUN = ("-m", pod_contract.LAUNCH_MODULE)
TORCHRUN_FROM_INIT = (f"{pod_contract.LAUNCHER_DIR}/{pod_contract.LAUNCHER_FILE}",)
POD_IP_REF = f"$({pod_contract.ENV_POD_IP})"  # the kubelet expands the downward-API var


class PlanError(ValueError):
    """The job cannot be planned as given (e.g. an unresolved data reference)."""


def rdzv_endpoint(job_name: str, namespace: str, settings: RenderSettings) -> str:
    # The store pod's name under the job's headless Service: <job>-rdzv.<job>.<ns>.svc
    return (f"{job_name}-rdzv.{job_name}.{namespace}.{settings.service_domain}:"
            f"{pod_contract.RDZV_PORT}")


def trainer_image(spec: TrainJobSpec, settings: RenderSettings) -> str:
    """spec.image, unless it is the built-in default and the operator configures a mirror."""
    if settings.image and spec.image == DEFAULT_IMAGE:
        return settings.image
    return spec.image


def store_image(settings: RenderSettings) -> str:
    """The operator's own trainer image (a chart value): the store and the launcher init
    container run it, never spec.image, so a user's image needs nothing of Cogwork."""
    return settings.image or DEFAULT_IMAGE


def runs_user_image(spec: TrainJobSpec, settings: RenderSettings) -> bool:
    """Whether the workers run an image other than the trainer image (no cogwork_trainer)."""
    return trainer_image(spec, settings) != store_image(settings)


def omp_threads(spec: TrainJobSpec) -> int:
    """CPU limit / processes per node, at least 1: oversubscription cut throughput 4x."""
    cores = parse_quantity(spec.resources.cpu)
    return max(1, math.floor(cores / spec.nproc_per_node))


def backend(spec: TrainJobSpec) -> str:
    return "nccl" if spec.resources.gpu > 0 else "gloo"


@dataclass(frozen=True)
class DataLocation:
    """A data file: `path` relative to the mount of `claim_name`, or a path in the image."""

    path: str
    claim_name: str | None = None


def _data_file(spec: TrainJobSpec, resolved: DataLocation | None) -> DataLocation | None:
    data = spec.data
    if data is None or data.dataset is not None:
        return None
    if data.path is not None:
        return DataLocation(data.path, data.claim_name)
    if resolved is None:  # the controller resolves fromLabelJob before rendering
        raise PlanError(f"spec.data.fromLabelJob={data.from_label_job!r} is not resolved yet")
    return resolved


def dataset_value(spec: TrainJobSpec, resolved: DataLocation | None = None) -> str | None:
    """The trainer's `dataset` key: a bundled name or an .npz path inside the pod."""
    if spec.data is not None and spec.data.dataset is not None:
        return spec.data.dataset
    location = _data_file(spec, resolved)
    if location is None:
        return None
    return f"{pod_contract.DATA_DIR}/{location.path}" if location.claim_name else location.path


def data_claim(spec: TrainJobSpec, resolved: DataLocation | None = None) -> str | None:
    """The claim to mount read-only at pod_contract.DATA_DIR, if the data lives in one."""
    location = _data_file(spec, resolved)
    return location.claim_name if location else None


def task_document(spec: TrainJobSpec, resolved_data: DataLocation | None = None
                  ) -> dict[str, Any]:
    """COGWORK_TASK (docs/pod-contract.md): the built-in task, or {"script": ...}."""
    doc: dict[str, Any] = {}
    if spec.task is not None:
        doc.update(spec.task.model_dump(mode="json", by_alias=True, exclude_none=True))
    elif spec.script is not None:
        doc["script"] = spec.script.model_dump(mode="json", by_alias=True, exclude_none=True)
    dataset = dataset_value(spec, resolved_data)
    if dataset is not None and spec.data is not None:
        doc["dataset"] = dataset
        doc["testFraction"] = spec.data.test_percent / 100
    return doc


def contract_env(job: TrainJob, *, job_uid: str, namespace: str, settings: RenderSettings,
                 resolved_data: DataLocation | None = None) -> dict[str, str]:
    """Every env var of the contract that is a plain value (POD_* come from the downward API)."""
    spec = job.spec
    env = {
        pod_contract.ENV_JOB_NAME: job.metadata.name,
        pod_contract.ENV_JOB_NAMESPACE: namespace,
        pod_contract.ENV_JOB_UID: job_uid,
        pod_contract.ENV_TASK: json.dumps(task_document(spec, resolved_data),
                                          separators=(",", ":")),
        pod_contract.ENV_CHECKPOINT_DIR: pod_contract.CHECKPOINT_DIR,
        pod_contract.ENV_CHECKPOINT_EVERY: str(spec.checkpoint.every_steps),
        pod_contract.ENV_CHECKPOINT_KEEP: str(spec.checkpoint.keep),
        pod_contract.ENV_CONTROL_DIR: pod_contract.CONTROL_DIR,
        pod_contract.ENV_REPORT_URL: settings.report_url(namespace, job.metadata.name),
        pod_contract.ENV_REPORT_TOKEN_FILE:
            f"{pod_contract.REPORT_TOKEN_DIR}/{pod_contract.REPORT_TOKEN_FILE}",
        pod_contract.ENV_REPORT_CA: settings.report_ca_pem,
        pod_contract.ENV_BACKEND: backend(spec),
        "OMP_NUM_THREADS": str(omp_threads(spec)),
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",  # pytorch#135712: hangs in init_process_group
        "PYTHONUNBUFFERED": "1",
    }
    if spec.script is not None:
        formats = spec.script.metrics_format
        env[pod_contract.ENV_METRICS_FORMAT] = json.dumps(
            list(DEFAULT_FORMATS) if formats is None else formats)
    env.update(settings.extra_env)
    # The API already rejects reserved names; this keeps a hand-built object from overriding us.
    # valueFrom (a Secret or ConfigMap key) is Kubernetes-only: plan.trainjob adds it to the pod.
    env.update({e.name: e.value for e in spec.env
                if e.value_from is None and not contract.is_reserved_env_name(e.name)})
    return env


def torchrun_args(job: TrainJob, *, job_uid: str, endpoint: str,
                  local_addr: str | None = POD_IP_REF, user_image: bool = False) -> list[str]:
    """torchrun's arguments per the contract, followed by the program and its arguments.

    On a user's image (`user_image`) the launcher comes from the init container and a
    spec.script.module runs as torchrun runs any module, since the trainer's harness is not
    there."""
    spec = job.spec
    rdzv = spec.rendezvous
    args = [
        *(TORCHRUN_FROM_INIT if user_image else TORCHRUN),
        f"--nnodes={spec.nodes.min}:{spec.nodes.max}",
        f"--nproc-per-node={spec.nproc_per_node}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={endpoint}",
        f"--rdzv-id={job_uid}",  # never a constant: a recreated job must not join old state
        f"--rdzv-conf=is_host=false,join_timeout={rdzv.join_timeout_seconds},"
        # A 1 s keep-alive notices a lost node in ~3 s instead of the default ~25 s.
        f"last_call_timeout={rdzv.last_call_timeout_seconds},"
        "keep_alive_interval=1,keep_alive_max_attempt=3",
        f"--max-restarts={rdzv.max_restarts}",
        "--monitor-interval=1",
    ]
    if local_addr is not None:
        args.append(f"--local-addr={local_addr}")  # else agents publish unresolvable hostnames
    script = spec.script
    if script is not None and script.command is not None:
        args += ["--no-python", *script.command, *script.args]
    elif script is not None and script.module is not None and user_image:
        args += ["-m", script.module, *script.args]
    else:  # built-in task, or a user module run under the trainer's harness (COGWORK_TASK)
        args += ["-m", pod_contract.TRAIN_MODULE]
    return args


def _resource(cpu: str, memory: str, gpu: int) -> specs.Resource:
    # torchx counts whole CPUs and MiB; the exact quantities stay in the spec for the pods.
    return specs.Resource(cpu=math.ceil(parse_quantity(cpu)), gpu=gpu,
                          memMB=int(parse_quantity(memory) / Decimal(2**20)))


def build_app(
    job: TrainJob,
    *,
    job_uid: str,
    namespace: str,
    settings: RenderSettings,
    endpoint: str | None = None,
    local_addr: str | None = POD_IP_REF,
    resolved_data: DataLocation | None = None,
) -> specs.AppDef:
    """The job as a torchx AppDef with two roles: "rdzv" (the store) and "worker" (torchrun).

    `endpoint` defaults to the rendezvous Service of the job; `cogwork run` passes a local one
    and `local_addr=None`.
    """
    spec = job.spec
    name = job.metadata.name
    endpoint = endpoint or rdzv_endpoint(name, namespace, settings)
    image = trainer_image(spec, settings)
    rdzv = specs.Role(
        name=RDZV_ROLE,
        image=store_image(settings),
        entrypoint=settings.python,
        args=["-m", pod_contract.RDZV_STORE_MODULE, "--port", str(pod_contract.RDZV_PORT)],
        env={"PYTHONUNBUFFERED": "1"},
        num_replicas=1,
        resource=_resource(settings.rdzv_cpu, settings.rdzv_memory, 0),
        port_map={"c10d": pod_contract.RDZV_PORT},
    )
    worker = specs.Role(
        name=WORKER_ROLE,
        image=image,
        entrypoint=settings.python,
        args=torchrun_args(job, job_uid=job_uid, endpoint=endpoint, local_addr=local_addr,
                           user_image=runs_user_image(spec, settings)),
        env=contract_env(job, job_uid=job_uid, namespace=namespace, settings=settings,
                         resolved_data=resolved_data),
        min_replicas=spec.nodes.min,
        num_replicas=spec.nodes.max,
        max_retries=spec.failure_policy.backoff_limit,
        resource=_resource(spec.resources.cpu, spec.resources.memory, spec.resources.gpu),
    )
    return specs.AppDef(name=name, roles=[rdzv, worker])


def role(app: specs.AppDef, role_name: str) -> specs.Role:
    """The named role of an AppDef built by `build_app`."""
    for candidate in app.roles:
        if candidate.name == role_name:
            return candidate
    raise KeyError(role_name)
