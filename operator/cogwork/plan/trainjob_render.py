"""TrainJob -> child objects (docs/pod-contract.md). Pure: dicts in, dicts out, no I/O.

The torchx AppDef (`cogwork.plan.torchx_app`) decides what runs (command, env, image); this
module decides how it runs on Kubernetes (pods, volumes, security, services, claim). Owner
references are not set here: the controller adopts what it creates.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cogwork_sdk import contract as pod_contract
from torchx import specs

from cogwork.api import contract
from cogwork.api.common import to_wire
from cogwork.api.trainjob import TrainJob, TrainJobSpec
from cogwork.api.trainjob_spec import PodTemplate
from cogwork.plan.pods import (
    CONTAINER_SECURITY_CONTEXT,
    POD_SECURITY_CONTEXT,
    READ_ONLY_CONTAINER_SECURITY_CONTEXT,
    hardened_pod,
    read_only_root_container,
)
from cogwork.plan.settings import RenderSettings
from cogwork.plan.torchx_app import (
    RDZV_ROLE,
    WORKER_ROLE,
    DataLocation,
    build_app,
    data_claim,
    role,
    runs_user_image,
    store_image,
)

# Used for `cogwork render` of a manifest the apiserver has not seen (no uid yet).
UNSET_UID = "00000000-0000-0000-0000-000000000000"
TRAINER_CONTAINER = "trainer"
RDZV_CONTAINER = "rdzv"
LAUNCHER_CONTAINER = "cogwork-launcher"
LAUNCHER_VOLUME = "cogwork-launcher"
DOWNWARD_ENV = (("POD_IP", "status.podIP"), ("POD_NAME", "metadata.name"),
                ("POD_NAMESPACE", "metadata.namespace"))


# ---- names, labels, numbers ------------------------------------------------------------------

def job_namespace(job: TrainJob, settings: RenderSettings) -> str:
    return job.metadata.namespace or settings.default_namespace


def rdzv_name(job: TrainJob) -> str:
    return f"{job.metadata.name}-rdzv"


def worker_name(job: TrainJob, index: int) -> str:
    return f"{job.metadata.name}-node-{index}"


def job_service_name(job: TrainJob) -> str:
    return job.metadata.name


def checkpoint_claim_name(job: TrainJob) -> str:
    return job.spec.checkpoint.claim_name or f"{job.metadata.name}-ckpt"


def job_labels(job: TrainJob) -> dict[str, str]:
    """Labels on everything the job owns; as a selector, all its pods (store and workers)."""
    return {contract.LABEL_JOB_NAME: job.metadata.name, contract.LABEL_KIND: "TrainJob"}


def child_labels(job: TrainJob, role_name: str, index: int | None = None) -> dict[str, str]:
    labels = {**job_labels(job), contract.LABEL_ROLE: role_name}
    if index is not None:
        labels[contract.LABEL_NODE_INDEX] = str(index)
    return labels


def expected_pod_names(job: TrainJob) -> set[str]:
    """Pods the job's status says exist: the store and each active node's worker."""
    active = job.status.active_nodes
    return {rdzv_name(job), *(worker_name(job, i) for i in active)} if active else set()


def worker_selector(job: TrainJob) -> str:
    """status.selector: the worker pods, for the scale subresource and HPAs."""
    return (f"{contract.LABEL_JOB_NAME}={job.metadata.name},"
            f"{contract.LABEL_ROLE}={contract.ROLE_WORKER}")


def desired_node_count(spec: TrainJobSpec) -> int:
    """spec.nodes.count, defaulting to max, kept within [min, max]."""
    nodes = spec.nodes
    wanted = nodes.max if nodes.count is None else nodes.count
    return max(nodes.min, min(nodes.max, wanted))


def control_annotations(job: TrainJob) -> dict[str, str]:
    """Annotations new worker pods start with; the ranks read them via the downward API."""
    return {pod_contract.ANNOTATION_STOP: "true"} if job.spec.stop else {}


# ---- pods ------------------------------------------------------------------------------------

def _app(job: TrainJob, settings: RenderSettings, resolved_data: DataLocation | None) -> Any:
    return build_app(job, job_uid=job.metadata.uid or UNSET_UID,
                     namespace=job_namespace(job, settings), settings=settings,
                     resolved_data=resolved_data)


def _env(role_def: specs.Role, downward: bool) -> list[dict[str, Any]]:
    # Downward-API entries first, so user values may reference $(POD_IP) and friends.
    env: list[dict[str, Any]] = []
    if downward:
        env += [{"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
                for name, path in DOWNWARD_ENV]
    env += [{"name": name, "value": value} for name, value in role_def.env.items()]
    return env


def _user_env_sources(job: TrainJob, container: dict[str, Any]) -> None:
    """spec.env valueFrom and spec.envFrom: Secrets and ConfigMaps the kubelet reads. They
    exist only on Kubernetes, so they are not in the torchx AppDef; after the plain values."""
    spec = job.spec
    container["env"] += [{"name": e.name, "valueFrom": to_wire(e.value_from)} for e in spec.env
                         if e.value_from is not None
                         and not contract.is_reserved_env_name(e.name)]
    if spec.env_from:
        container["envFrom"] = [to_wire(e) for e in spec.env_from]


def read_only_root(spec: TrainJobSpec, settings: RenderSettings) -> bool:
    """Whether the trainer container's root filesystem is read-only: always on the trainer
    image, on a user's image when spec.podTemplate.readOnlyRootFilesystem asks for it."""
    template = spec.pod_template
    return not runs_user_image(spec, settings) or bool(
        template and template.read_only_root_filesystem)


def _container(name: str, role_def: specs.Role, job: TrainJob, *, downward: bool,
               resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "image": role_def.image,
        "imagePullPolicy": job.spec.image_pull_policy,
        "command": [role_def.entrypoint, *role_def.args],  # PID 1 is torchrun itself
        "env": _env(role_def, downward),
        "resources": resources,
        "securityContext": dict(CONTAINER_SECURITY_CONTEXT),
    }


def _pod(job: TrainJob, settings: RenderSettings, name: str, labels: dict[str, str],
         annotations: dict[str, str], pod_spec: dict[str, Any]) -> dict[str, Any]:
    template = job.spec.pod_template
    # Ours first and winning (the API already rejects user keys under cogwork.dev/).
    all_labels = {**labels, **{k: v for k, v in ((template.labels or {}) if template else {})
                               .items() if k not in labels}}
    all_annotations = {**annotations, **((template.annotations or {}) if template else {})}
    service_account = (template.service_account_name if template else None) or \
        settings.service_account_name
    spec = dict(pod_spec)
    if template and template.priority_class_name:
        spec["priorityClassName"] = template.priority_class_name
    if template and template.scheduler_name:
        spec["schedulerName"] = template.scheduler_name
    if template and template.tolerations:
        spec["tolerations"] = [to_wire(t) for t in template.tolerations]
    return hardened_pod(name, job_namespace(job, settings), all_labels, all_annotations, spec,
                        service_account)


def _quantities(cpu: str, memory: str, gpu: int = 0) -> dict[str, Any]:
    amounts: dict[str, str] = {"cpu": cpu, "memory": memory}
    if gpu > 0:
        amounts["nvidia.com/gpu"] = str(gpu)
    # requests = limits: Guaranteed QoS, and OMP_NUM_THREADS matches what the pod may use.
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _worker_volumes(job: TrainJob, resolved_data: DataLocation | None
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    template = job.spec.pod_template
    shm: dict[str, Any] = {"medium": "Memory"}  # DataLoader workers, NCCL
    if template and template.shm_size:
        shm["sizeLimit"] = template.shm_size
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": shm},
        {"name": "checkpoints",
         "persistentVolumeClaim": {"claimName": checkpoint_claim_name(job)}},
        {"name": "control", "downwardAPI": {"items": [
            {"path": pod_contract.CONTROL_FILE,
             "fieldRef": {"fieldPath": "metadata.annotations"}}]}},
        {"name": "report-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": contract.REPORT_AUDIENCE,
            "expirationSeconds": contract.REPORT_TOKEN_EXPIRATION_SECONDS,
            "path": pod_contract.REPORT_TOKEN_FILE}}]}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": pod_contract.SHM_DIR},
        {"name": "checkpoints", "mountPath": pod_contract.CHECKPOINT_DIR},
        {"name": "control", "mountPath": pod_contract.CONTROL_DIR, "readOnly": True},
        {"name": "report-token", "mountPath": pod_contract.REPORT_TOKEN_DIR, "readOnly": True},
    ]
    claim = data_claim(job.spec, resolved_data)
    if claim is not None:
        volumes.append({"name": "data",
                        "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": "data", "mountPath": pod_contract.DATA_DIR, "readOnly": True})
    return volumes, mounts


def _worker_template(template: PodTemplate, pod_spec: dict[str, Any],
                     container: dict[str, Any], volumes: list[dict[str, Any]]) -> None:
    """The worker-only parts of spec.podTemplate (the API already refused what would grant
    privilege: host namespaces, hostPath, tokens, root, capabilities)."""
    volumes += [to_wire(v) for v in template.volumes or []]
    container["volumeMounts"] += [to_wire(m) for m in template.volume_mounts or []]
    if template.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [to_wire(s) for s in template.image_pull_secrets]
    if template.affinity:
        pod_spec["affinity"] = to_wire(template.affinity)
    if template.topology_spread_constraints:
        pod_spec["topologySpreadConstraints"] = [
            to_wire(c) for c in template.topology_spread_constraints]
    security = template.security_context
    if security is not None:  # only who the processes run as: the rest stays restricted
        chosen = {"runAsUser": security.run_as_user, "runAsGroup": security.run_as_group,
                  "fsGroup": security.fs_group,
                  "fsGroupChangePolicy": security.fs_group_change_policy}
        pod_spec["securityContext"] = {**POD_SECURITY_CONTEXT,
                                       **{k: v for k, v in chosen.items() if v is not None}}


def launcher_init_container(job: TrainJob, settings: RenderSettings) -> dict[str, Any]:
    """Copies the SDK and its torch-only launcher from the trainer image into the launcher
    volume, for workers on a user's image (the pattern of Tekton's entrypoint and Katib's
    collectors)."""
    return {
        "name": LAUNCHER_CONTAINER,
        "image": store_image(settings),
        "imagePullPolicy": job.spec.image_pull_policy,
        "command": [settings.python, "-m", pod_contract.INSTALL_SDK_MODULE,
                    pod_contract.LAUNCHER_DIR],
        "resources": _quantities(settings.rdzv_cpu, settings.rdzv_memory),
        "securityContext": dict(READ_ONLY_CONTAINER_SECURITY_CONTEXT),  # our image
        "volumeMounts": [{"name": LAUNCHER_VOLUME, "mountPath": pod_contract.LAUNCHER_DIR}],
    }


def worker_pod(job: TrainJob, index: int, settings: RenderSettings, *,
               resolved_data: DataLocation | None = None, app: Any = None) -> dict[str, Any]:
    """Pod `<job>-node-<index>`: torchrun for one node of the elastic group."""
    app = app if app is not None else _app(job, settings, resolved_data)
    spec = job.spec
    container = _container(TRAINER_CONTAINER, role(app, WORKER_ROLE), job, downward=True,
                           resources=_quantities(spec.resources.cpu, spec.resources.memory,
                                                 spec.resources.gpu))
    volumes, container["volumeMounts"] = _worker_volumes(job, resolved_data)
    name = worker_name(job, index)
    pod_spec: dict[str, Any] = {
        "hostname": name,
        "subdomain": job_service_name(job),  # <name>.<job>.<ns>.svc resolves
        "containers": [container],
        "volumes": volumes,
    }
    template = spec.pod_template
    if template and template.node_selector:
        pod_spec["nodeSelector"] = dict(template.node_selector)
    _user_env_sources(job, container)
    if template:
        _worker_template(template, pod_spec, container, volumes)
    if read_only_root(spec, settings):
        read_only_root_container(container, volumes)
    if runs_user_image(spec, settings):
        pod_spec["initContainers"] = [launcher_init_container(job, settings)]
        volumes.append({"name": LAUNCHER_VOLUME, "emptyDir": {}})
        container["volumeMounts"].append({"name": LAUNCHER_VOLUME,
                                          "mountPath": pod_contract.LAUNCHER_DIR, "readOnly": True})
    annotations = {"kubectl.kubernetes.io/default-container": TRAINER_CONTAINER,
                   **control_annotations(job)}
    return _pod(job, settings, name, child_labels(job, contract.ROLE_WORKER, index),
                annotations, pod_spec)


def rendezvous_pod(job: TrainJob, settings: RenderSettings, *, app: Any = None,
                   resolved_data: DataLocation | None = None) -> dict[str, Any]:
    """Pod `<job>-rdzv`: the c10d TCPStore, so that no worker is special."""
    app = app if app is not None else _app(job, settings, resolved_data)
    rdzv_role = role(app, RDZV_ROLE)
    container = _container(RDZV_CONTAINER, rdzv_role, job, downward=False,
                           resources=_quantities(settings.rdzv_cpu, settings.rdzv_memory))
    container["ports"] = [{"name": "c10d", "containerPort": pod_contract.RDZV_PORT,
                           "protocol": "TCP"}]
    volumes: list[dict[str, Any]] = []
    read_only_root_container(container, volumes)  # the store always runs the operator's image
    # No nodeSelector: a CPU pod need not sit on the (GPU) nodes Kueue picked for workers.
    name = rdzv_name(job)
    return _pod(job, settings, name, child_labels(job, contract.ROLE_RDZV), {},
                {"hostname": name, "subdomain": job_service_name(job),  # see rdzv_endpoint
                 "containers": [container], "volumes": volumes})


# ---- services and storage --------------------------------------------------------------------

def job_service(job: TrainJob, settings: RenderSettings) -> dict[str, Any]:
    """Service `<job>`, headless, over all the job's pods: each pod's hostname.<job>.<ns>.svc
    resolves, the store's included (the rendezvous endpoint), so one Service serves both."""
    port = {"name": "c10d", "port": pod_contract.RDZV_PORT, "targetPort": pod_contract.RDZV_PORT,
            "protocol": "TCP"}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": job_service_name(job), "namespace": job_namespace(job, settings),
                         "labels": job_labels(job)},
            "spec": {
                "clusterIP": "None",  # headless: DNS returns the pod IPs
                "publishNotReadyAddresses": True,  # resolvable before readiness: rendezvous
                "selector": job_labels(job),
                "ports": [port],
            }}


def checkpoint_claim(job: TrainJob, settings: RenderSettings) -> dict[str, Any] | None:
    """PVC `<job>-ckpt`, unless spec.checkpoint.claimName names an existing claim."""
    checkpoint = job.spec.checkpoint
    if checkpoint.claim_name:
        return None
    spec: dict[str, Any] = {"accessModes": [checkpoint.access_mode],
                            "resources": {"requests": {"storage": checkpoint.size}}}
    if checkpoint.storage_class_name:
        spec["storageClassName"] = checkpoint.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": checkpoint_claim_name(job),
                         "namespace": job_namespace(job, settings),
                         "labels": job_labels(job)},
            "spec": spec}


def shared_objects(job: TrainJob, settings: RenderSettings) -> list[dict[str, Any]]:
    """Everything the pods depend on: the Service and the checkpoint claim."""
    objects = [job_service(job, settings)]
    claim = checkpoint_claim(job, settings)
    if claim is not None:
        objects.append(claim)
    return objects


def render_children(job: TrainJob, uid: str, namespace: str, settings: RenderSettings, *,
                    node_indices: Iterable[int] | None = None,
                    resolved_data: DataLocation | None = None) -> list[dict[str, Any]]:
    """All children in creation order: claim and Services, store pod, then worker pods
    (`node_indices` defaults to 0 .. desired_node_count - 1)."""
    metadata = job.metadata.model_copy(update={"uid": uid, "namespace": namespace})
    job = job.model_copy(update={"metadata": metadata})
    app = _app(job, settings, resolved_data)
    indices = range(desired_node_count(job.spec)) if node_indices is None else node_indices
    return [*shared_objects(job, settings), rendezvous_pod(job, settings, app=app),
            *(worker_pod(job, i, settings, resolved_data=resolved_data, app=app)
              for i in indices)]
