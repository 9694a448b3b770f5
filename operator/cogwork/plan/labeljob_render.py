"""LabelJob steps -> Pods and the output claim (docs/pod-contract.md). Pure: dicts out, no I/O.

Pods follow the TrainJob contract: labels cogwork.dev/job-name, cogwork.dev/kind,
cogwork.dev/role (+ cogwork.dev/node-index for shards), PodSecurity `restricted`, no API access,
restartPolicy Never (the operator decides about re-runs). Owner references are set by the
controller when it creates them.
"""

from __future__ import annotations

from typing import Any

from cogwork_sdk import contract as pod_contract

from cogwork.api import contract
from cogwork.api.labeljob import LabelJob
from cogwork.api.trainjob import DEFAULT_IMAGE
from cogwork.plan.labeljob_steps import (
    INSTALL_SCORER_MODULE,
    LABEL_STUDIO_KEY_ENV,
    SCORER_BOOTSTRAP,
    TERMINATION_MESSAGE_PATH,
    Layout,
    ModelRef,
    Step,
    omp_threads,
)
from cogwork.plan.pods import (
    CONTAINER_SECURITY_CONTEXT,
    READ_ONLY_CONTAINER_SECURITY_CONTEXT,
    hardened_pod,
    scratch_volumes,
)
from cogwork.plan.settings import RenderSettings

KIND = "LabelJob"
LABEL_ROUND = "cogwork.dev/round"  # review round of a LabelJob pod
CONTAINER = "labeler"
OUTPUT_MOUNT = "/cogwork/output"
MODEL_MOUNT = "/cogwork/model"
# Score pods on the user's image (spec.model.entrypoint): an init container of the labeling
# image copies the scorer into this emptyDir, the user's container runs it from there.
SCORER_CONTAINER = "cogwork-scorer"
SCORER_VOLUME = "cogwork-scorer"
SCORER_DIR = "/cogwork/scorer"
# Small steps that only move files or call an HTTP API.
PUSH_CPU, PUSH_MEMORY = "100m", "512Mi"  # small: a namespace's LimitRange admits it


# ---- names -----------------------------------------------------------------------------------

def namespace_of(job: LabelJob, settings: RenderSettings) -> str:
    return job.metadata.namespace or settings.default_namespace


def output_claim_name(job: LabelJob) -> str:
    """spec.output.claimName, else the claim the operator creates: <job>-labels."""
    return job.spec.output.claim_name or f"{job.metadata.name}-labels"


def output_path(job: LabelJob, name: str = "") -> str:
    """A path inside the output claim (what other kinds mount and read)."""
    base = job.spec.output.path.strip("/")
    return f"{base}/{name}" if name else base


def pod_name(job: LabelJob, role: str, index: int | None = None, round_: int = 0) -> str:
    """`<job>-score-2`, `<job>-merge`; later review rounds add theirs: `<job>-r1-merge`."""
    prefix = f"{job.metadata.name}-r{round_}" if round_ else job.metadata.name
    suffix = f"-{index}" if index is not None else ""
    return f"{prefix}-{role}{suffix}"


def step_pod_name(job: LabelJob, step: Step) -> str:
    return pod_name(job, step.role, step.index, step.round)


def pod_layout(job: LabelJob) -> Layout:
    return Layout(output_dir=f"{OUTPUT_MOUNT}/{output_path(job)}",
                  data_dir=pod_contract.DATA_DIR if job.spec.pool.claim_name else None)


def pod_model(path: str, claim_name: str | None, version: str, model_format: str = "cogwork"
              ) -> ModelRef:
    """A model file as a pod sees it: inside MODEL_MOUNT when it lives in a claim."""
    seen = f"{MODEL_MOUNT}/{path.lstrip('/')}" if claim_name else path
    return ModelRef(seen, version, claim_name, model_format)


def image(job: LabelJob, settings: RenderSettings) -> str:
    """spec.image, unless it is the built-in default and the operator configures a mirror."""
    if settings.image and job.spec.image == DEFAULT_IMAGE:
        return settings.image
    return job.spec.image


# ---- pods ------------------------------------------------------------------------------------

def _labels(job: LabelJob, step: Step) -> dict[str, str]:
    labels = {contract.LABEL_JOB_NAME: job.metadata.name, contract.LABEL_KIND: KIND,
              contract.LABEL_ROLE: step.role, LABEL_ROUND: str(step.round)}
    if step.index is not None:
        labels[contract.LABEL_NODE_INDEX] = str(step.index)
    return labels


def _resources(job: LabelJob, step: Step) -> dict[str, Any]:
    inference = job.spec.inference
    amounts: dict[str, str] = ({"cpu": PUSH_CPU, "memory": PUSH_MEMORY} if step.role == "push"
                               else {"cpu": inference.cpu, "memory": inference.memory})
    if step.role == "score" and inference.gpus_per_pod > 0:
        amounts["nvidia.com/gpu"] = str(inference.gpus_per_pod)
    return {"requests": dict(amounts), "limits": dict(amounts)}  # Guaranteed QoS


def _volumes(job: LabelJob, model: ModelRef) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "output", "persistentVolumeClaim": {"claimName": output_claim_name(job)}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": pod_contract.SHM_DIR},
        {"name": "output", "mountPath": OUTPUT_MOUNT},
    ]
    # The root filesystem is read-only: scratch space and HOME are emptyDirs.
    scratch, scratch_mounts = scratch_volumes()
    volumes += scratch
    mounts += scratch_mounts
    if model.claim_name:
        volumes.append({"name": "model", "persistentVolumeClaim": {
            "claimName": model.claim_name, "readOnly": True}})
        mounts.append({"name": "model", "mountPath": MODEL_MOUNT, "readOnly": True})
    if job.spec.pool.claim_name:
        volumes.append({"name": "data", "persistentVolumeClaim": {
            "claimName": job.spec.pool.claim_name, "readOnly": True}})
        mounts.append({"name": "data", "mountPath": pod_contract.DATA_DIR, "readOnly": True})
    return volumes, mounts


def _env(job: LabelJob, step: Step, namespace: str, settings: RenderSettings
         ) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    plain = {
        pod_contract.ENV_JOB_NAME: job.metadata.name,
        pod_contract.ENV_JOB_NAMESPACE: namespace,
        "OMP_NUM_THREADS": str(omp_threads(job.spec.inference.cpu)),
        "PYTHONUNBUFFERED": "1",
        "HOME": pod_contract.HOME_DIR,  # writable (an emptyDir): the root filesystem is not
        **settings.extra_env,
        **step.env,
    }
    env += [{"name": name, "value": value} for name, value in plain.items()]
    sink = job.spec.sink.label_studio if job.spec.sink else None
    if step.role in ("push", "collect") and sink is not None:
        # The kubelet resolves the Secret: the operator needs no permission to read Secrets.
        env.append({"name": LABEL_STUDIO_KEY_ENV, "valueFrom": {"secretKeyRef": {
            "name": sink.secret_ref.name, "key": sink.secret_ref.key}}})
    return env


def scorer_init_container(job: LabelJob, settings: RenderSettings) -> dict[str, Any]:
    """Copies the scorer from the labeling image into the scorer volume, for a score pod on the
    user's image (as TrainJob's launcher init container does for workers on user images)."""
    return {
        "name": SCORER_CONTAINER,
        "image": image(job, settings),
        "imagePullPolicy": job.spec.image_pull_policy,
        "command": [settings.python, "-m", INSTALL_SCORER_MODULE, SCORER_DIR],
        "resources": {"requests": {"cpu": PUSH_CPU, "memory": PUSH_MEMORY},
                      "limits": {"cpu": PUSH_CPU, "memory": PUSH_MEMORY}},
        "securityContext": dict(READ_ONLY_CONTAINER_SECURITY_CONTEXT),  # our image
        "volumeMounts": [{"name": SCORER_VOLUME, "mountPath": SCORER_DIR}],
    }


def _on_user_image(job: LabelJob, step: Step, settings: RenderSettings,
                   container: dict[str, Any], spec: dict[str, Any]) -> None:
    """Run `step` in spec.model.image: the same `-m` command through the copied scorer's
    bootstrap, which puts SCORER_DIR first on sys.path and keeps the image's PYTHONPATH and
    working directory (where the user's module is imported from)."""
    container["image"] = step.image
    container["command"] = [settings.python, f"{SCORER_DIR}/{SCORER_BOOTSTRAP}", *step.args]
    # A user's image, as for TrainJob workers: the root filesystem stays writable.
    container["securityContext"] = dict(CONTAINER_SECURITY_CONTEXT)
    container["volumeMounts"].append({"name": SCORER_VOLUME, "mountPath": SCORER_DIR,
                                      "readOnly": True})
    spec["volumes"].append({"name": SCORER_VOLUME, "emptyDir": {}})
    spec["initContainers"] = [scorer_init_container(job, settings)]


def step_pod(job: LabelJob, step: Step, model: ModelRef, settings: RenderSettings
             ) -> dict[str, Any]:
    """The pod of one step, e.g. `<job>-score-2` or `<job>-merge`."""
    namespace = namespace_of(job, settings)
    volumes, mounts = _volumes(job, model)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image(job, settings),
        "imagePullPolicy": job.spec.image_pull_policy,
        "command": [settings.python, *step.args],
        "env": _env(job, step, namespace, settings),
        "resources": _resources(job, step),
        "volumeMounts": mounts,
        "securityContext": dict(READ_ONLY_CONTAINER_SECURITY_CONTEXT),
        # Score and merge write their counts here; on failure the log tail explains it.
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    spec: dict[str, Any] = {"containers": [container], "volumes": volumes}
    if step.image is not None:
        _on_user_image(job, step, settings, container, spec)
    return hardened_pod(step_pod_name(job, step), namespace, _labels(job, step),
                        {"kubectl.kubernetes.io/default-container": CONTAINER}, spec,
                        settings.service_account_name)


def output_claim(job: LabelJob, settings: RenderSettings) -> dict[str, Any] | None:
    """PVC `<job>-labels`, unless spec.output.claimName names an existing claim. ReadWriteMany:
    shard pods on different machines write into it at once."""
    if job.spec.output.claim_name:
        return None
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": output_claim_name(job),
                         "namespace": namespace_of(job, settings),
                         "labels": {contract.LABEL_JOB_NAME: job.metadata.name,
                                    contract.LABEL_KIND: KIND}},
            "spec": {"accessModes": ["ReadWriteMany"],
                     "resources": {"requests": {"storage": job.spec.output.size}}}}
