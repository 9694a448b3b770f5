"""TrainJob -> the torchx AppDefs `cogwork run` submits to the local scheduler. Pure, no I/O.

The roles come from `cogwork.plan.torchx_app.build_app`, exactly as for the cluster; only what a
pod gets from Kubernetes is replaced by local equivalents: a loopback rendezvous endpoint on a
free port, directories under the work dir instead of volumes, progress printed to stdout instead
of POSTed to the operator. The store and the workers are submitted as two apps: the store never
exits on its own (like its pod), so the workers' app alone tells when the job is done.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cogwork_sdk import contract as pod_contract
from torchx import specs

from cogwork.api.trainjob import TrainJob
from cogwork.local.processes import RUN_MARKER_ENV
from cogwork.plan.settings import RenderSettings
from cogwork.plan.torchx_app import RDZV_ROLE, WORKER_ROLE, build_app, role
from cogwork.plan.trainjob_render import UNSET_UID, desired_node_count

LOOPBACK = "127.0.0.1"
LOCAL_NAMESPACE = "local"
CHECKPOINTS = "checkpoints"
NODES = "nodes"
LOGS = "logs"


class LocalPlanError(ValueError):
    """The manifest is valid but cannot run on this machine (e.g. data in a cluster volume)."""


@dataclass(frozen=True)
class LocalApps:
    store: specs.AppDef  # one replica: the c10d TCPStore on `port`
    workers: specs.AppDef  # one replica per node: torchrun
    port: int
    nodes: int
    checkpoint_dir: Path


def check_runnable(job: TrainJob) -> None:
    data = job.spec.data
    if data is not None and data.claim_name is not None:
        raise LocalPlanError(
            f"spec.data.claimName={data.claim_name!r}: a PersistentVolumeClaim exists only in a "
            "cluster; locally give spec.data.path as a path on this machine")
    if data is not None and data.from_label_job is not None:
        raise LocalPlanError(
            f"spec.data.fromLabelJob={data.from_label_job!r} is resolved by the operator; "
            "locally give spec.data.path (the LabelJob's output .npz)")
    if job.spec.from_tune_job is not None:
        raise LocalPlanError(
            f"spec.fromTuneJob={job.spec.from_tune_job!r} is resolved by the operator; locally "
            "write the TuneJob's best parameters (its status.bestTrial.params) into the spec")
    for i, env in enumerate(job.spec.env):
        if env.value_from is not None:
            raise LocalPlanError(
                f"spec.env[{i}].valueFrom ({env.name}): Secrets and ConfigMaps exist only in a "
                f"cluster; locally give spec.env[{i}].value")
    if job.spec.env_from:
        raise LocalPlanError(
            "spec.envFrom[0]: Secrets and ConfigMaps exist only in a cluster; locally give the "
            "variables in spec.env")


def local_env(workdir: Path) -> dict[str, str]:
    """Contract env that points at Kubernetes things, replaced by their local equivalents."""
    node_dir = workdir / NODES / str(specs.macros.replica_id)
    return {
        pod_contract.ENV_CHECKPOINT_DIR: str(workdir / CHECKPOINTS),
        # No operator writes control annotations here; unset, the ranks skip the per-step poll.
        pod_contract.ENV_CONTROL_DIR: "",
        # No report endpoint: rank 0 prints `COGWORK_PROGRESS {json}` lines that we parse.
        pod_contract.ENV_REPORT_URL: "",
        pod_contract.ENV_REPORT_TOKEN_FILE: "",
        pod_contract.ENV_REPORT_CA: "",
        # One heartbeat per node, as each pod has its own /tmp.
        pod_contract.ENV_HEARTBEAT_FILE: str(node_dir / "heartbeat"),
    }


_REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


def expand_references(text: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion of args: `$$` escapes, unknown references stay."""
    return _REFERENCE.sub(lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), text)


def local_apps(job: TrainJob, *, workdir: Path, port: int, python: str,
               job_uid: str | None = None, path: str = "") -> LocalApps:
    """The store and worker apps for `job`, with the worker count at the desired node count."""
    check_runnable(job)
    uid = job_uid or job.metadata.uid or UNSET_UID
    # Every image is this machine's Python, which has cogwork_trainer: the job's image counts
    # as the trainer image, so workers start the launcher module, not the init container's copy.
    settings = RenderSettings(python=python, image=job.spec.image)
    app = build_app(job, job_uid=uid, namespace=job.metadata.namespace or LOCAL_NAMESPACE,
                    settings=settings, endpoint=f"{LOOPBACK}:{port}", local_addr=LOOPBACK)
    store_role = role(app, RDZV_ROLE)
    marker = {RUN_MARKER_ENV: str(workdir)}  # what this run's processes are known by
    store_role = dataclasses.replace(
        store_role,
        args=["-m", pod_contract.RDZV_STORE_MODULE, "--host", LOOPBACK, "--port", str(port)],
        port_map={"c10d": port},
        env={**store_role.env, **marker},
    )
    worker_role = role(app, WORKER_ROLE)
    nodes = desired_node_count(job.spec)
    env = {**worker_role.env, **local_env(workdir), **marker}
    # The "image" is this Python environment: a script's `python` is this one, and args may
    # use $(VAR) as in a pod (e.g. --checkpoint-dir $(COGWORK_CHECKPOINT_DIR)).
    env["PATH"] = os.pathsep.join(p for p in (str(Path(python).parent), path) if p)
    worker_role = dataclasses.replace(
        worker_role,
        num_replicas=nodes,
        args=[expand_references(a, env) for a in worker_role.args],
        env=env,
    )
    name = job.metadata.name
    return LocalApps(
        store=specs.AppDef(name=f"{name}-{RDZV_ROLE}", roles=[store_role]),
        workers=specs.AppDef(name=name, roles=[worker_role]),
        port=port,
        nodes=nodes,
        checkpoint_dir=workdir / CHECKPOINTS,
    )
