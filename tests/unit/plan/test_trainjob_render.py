"""Children of a TrainJob: names, labels, security, resources, volumes, services, claim."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from cogwork.api import contract
from cogwork.api.trainjob import DEFAULT_IMAGE, TrainJob
from cogwork.plan.settings import RenderSettings
from cogwork.plan.trainjob_render import (
    checkpoint_claim,
    desired_node_count,
    expected_pod_names,
    render_children,
    rendezvous_pod,
    shared_objects,
    worker_pod,
    worker_selector,
)
from cogwork_sdk import contract as pod_contract

UID = "6f1c2d9e-0000-4000-8000-000000000001"
SETTINGS = RenderSettings(report_base_url="https://10.0.0.1:8443")


def manifest(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"task": {"name": "image-classification"},
                            "data": {"dataset": "digits"}, "nodes": {"min": 1, "max": 3}}
    body.update(spec)
    return {"apiVersion": "cogwork.dev/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": "digits", "namespace": "ml", "uid": UID}, "spec": body}


def make_job(**spec: Any) -> TrainJob:
    return TrainJob.model_validate(manifest(**spec))


def container(pod: dict[str, Any]) -> dict[str, Any]:
    containers = pod["spec"]["containers"]
    assert len(containers) == 1
    first: dict[str, Any] = containers[0]
    return first


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(pod)["env"]}


def test_render_children_takes_uid_namespace_and_node_indices() -> None:
    job = make_job()
    objects = render_children(job, "other-uid", "team-a", SETTINGS, node_indices=[2])
    pods = [o for o in objects if o["kind"] == "Pod"]
    assert [p["metadata"]["name"] for p in pods] == ["digits-rdzv", "digits-node-2"]
    assert "--rdzv-id=other-uid" in container(pods[1])["command"]
    assert {o["metadata"]["namespace"] for o in objects} == {"team-a"}


def test_worker_pod_identity_and_labels() -> None:
    pod = worker_pod(make_job(podTemplate={"labels": {"team": "vision"}}), 1, SETTINGS)
    assert pod["metadata"]["name"] == "digits-node-1"
    assert pod["metadata"]["labels"] == {
        "cogwork.dev/job-name": "digits", "cogwork.dev/kind": "TrainJob",
        "cogwork.dev/role": "worker", "cogwork.dev/node-index": "1", "team": "vision"}
    assert (pod["spec"]["hostname"], pod["spec"]["subdomain"]) == ("digits-node-1", "digits")
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["serviceAccountName"] == "cogwork-trainer"


@pytest.mark.parametrize("which", ["worker", "rdzv"])
def test_pods_pass_pod_security_restricted(which: str) -> None:
    job = make_job()
    pod = worker_pod(job, 0, SETTINGS) if which == "worker" else rendezvous_pod(job, SETTINGS)
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 65532
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["spec"]["containers"]:
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert "privileged" not in c["securityContext"]
    assert "hostNetwork" not in pod["spec"] and "hostPath" not in str(pod)


def test_worker_command_is_torchrun_as_pid_1() -> None:
    command = container(worker_pod(make_job(), 0, SETTINGS))["command"]
    assert command[:3] == ["python", "-m", "cogwork_sdk.launch"]
    assert "--local-addr=$(POD_IP)" in command and "--nnodes=1:3" in command


def test_worker_env_downward_api_first_then_contract() -> None:
    pod = worker_pod(make_job(), 0, SETTINGS)
    names = [e["name"] for e in container(pod)["env"]]
    assert names[:3] == ["POD_IP", "POD_NAME", "POD_NAMESPACE"]
    env = env_of(pod)
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert len(names) == len(set(names))


def test_cpu_job_resources_are_guaranteed() -> None:
    resources = container(worker_pod(make_job(resources={"cpu": 2, "memory": "3Gi"}), 0,
                                     SETTINGS))["resources"]
    assert resources == {"requests": {"cpu": "2", "memory": "3Gi"},
                         "limits": {"cpu": "2", "memory": "3Gi"}}


def test_gpu_request_sets_nvidia_gpu_and_nccl() -> None:
    pod = worker_pod(make_job(resources={"gpu": 4}, nprocPerNode=4), 0, SETTINGS)
    resources = container(pod)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "4"
    assert resources["requests"]["nvidia.com/gpu"] == "4"
    assert env_of(pod)["COGWORK_BACKEND"] == "nccl"


def test_worker_volumes() -> None:
    pod = worker_pod(make_job(), 0, SETTINGS)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container(pod)["volumeMounts"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory"} and "/dev/shm" in mounts
    assert volumes["checkpoints"]["persistentVolumeClaim"] == {"claimName": "digits-ckpt"}
    assert mounts["/cogwork/checkpoints"]["name"] == "checkpoints"
    assert volumes["control"]["downwardAPI"]["items"] == [
        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]
    assert mounts["/etc/cogwork/control"]["readOnly"] is True
    token = volumes["report-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {"audience": "cogwork.dev/report", "expirationSeconds": 3600,
                     "path": "token"}
    assert mounts["/var/run/cogwork/report"]["readOnly"] is True
    assert "data" not in volumes


def test_data_claim_is_mounted_read_only() -> None:
    pod = worker_pod(make_job(data={"path": "a.npz", "claimName": "datasets"}), 0, SETTINGS)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "datasets",
                                                        "readOnly": True}
    assert '"dataset":"/cogwork/data/a.npz"' in env_of(pod)["COGWORK_TASK"]


def test_pod_template_overrides() -> None:
    job = make_job(podTemplate={
        "nodeSelector": {"pool": "gpu"}, "annotations": {"team": "vision"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "serviceAccountName": "vision-trainer", "priorityClassName": "high"})
    worker, store = worker_pod(job, 0, SETTINGS), rendezvous_pod(job, SETTINGS)
    assert worker["spec"]["nodeSelector"] == {"pool": "gpu"}
    assert "nodeSelector" not in store["spec"]  # a CPU pod need not sit on GPU nodes
    for pod in (worker, store):
        assert pod["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists",
                                               "effect": "NoSchedule"}]
        assert pod["spec"]["serviceAccountName"] == "vision-trainer"
        assert pod["spec"]["priorityClassName"] == "high"
        assert pod["metadata"]["annotations"]["team"] == "vision"


def test_no_service_account_when_operator_has_none() -> None:
    pod = worker_pod(make_job(), 0, RenderSettings(service_account_name=None))
    assert "serviceAccountName" not in pod["spec"]


def test_stop_reaches_new_pods_as_annotation() -> None:
    assert worker_pod(make_job(stop=True), 0, SETTINGS)["metadata"]["annotations"][
        "cogwork.dev/stop"] == "true"
    assert "cogwork.dev/stop" not in worker_pod(make_job(), 0, SETTINGS)["metadata"][
        "annotations"]


def test_rendezvous_pod_and_the_job_service() -> None:
    job = make_job()
    store = rendezvous_pod(job, SETTINGS)
    assert store["metadata"]["labels"]["cogwork.dev/role"] == "rdzv"
    assert container(store)["command"] == ["python", "-m", "cogwork_trainer.rdzv_store",
                                           "--port", "29400"]
    assert container(store)["ports"][0]["containerPort"] == 29400
    # One headless Service over all the job's pods: the store's name resolves under it too.
    svc, _claim = shared_objects(job, SETTINGS)
    assert svc["metadata"]["name"] == "digits"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"cogwork.dev/job-name": "digits",
                                       "cogwork.dev/kind": "TrainJob"}
    assert svc["spec"]["ports"][0]["port"] == 29400
    assert (store["spec"]["hostname"], store["spec"]["subdomain"]) == ("digits-rdzv", "digits")
    worker = worker_pod(job, 0, SETTINGS)
    assert (worker["spec"]["hostname"], worker["spec"]["subdomain"]) == ("digits-node-0",
                                                                           "digits")
    for pod in (store, worker):
        assert all(pod["metadata"]["labels"][k] == v for k, v in svc["spec"]["selector"].items())


def test_checkpoint_claim() -> None:
    claim = checkpoint_claim(make_job(checkpoint={"size": "5Gi", "storageClassName": "nfs"}),
                             SETTINGS)
    assert claim is not None and claim["metadata"]["name"] == "digits-ckpt"
    assert claim["spec"] == {"accessModes": ["ReadWriteMany"],
                             "resources": {"requests": {"storage": "5Gi"}},
                             "storageClassName": "nfs"}
    existing = make_job(checkpoint={"claimName": "shared-ckpt"})
    assert checkpoint_claim(existing, SETTINGS) is None
    assert [o["kind"] for o in shared_objects(existing, SETTINGS)] == ["Service"]
    volumes = {v["name"]: v for v in worker_pod(existing, 0, SETTINGS)["spec"]["volumes"]}
    assert volumes["checkpoints"]["persistentVolumeClaim"]["claimName"] == "shared-ckpt"


@pytest.mark.parametrize(("nodes", "desired"), [({"min": 1, "max": 3}, 3),
                                                ({"min": 1, "max": 3, "count": 2}, 2),
                                                ({"min": 2, "max": 2}, 2)])
def test_desired_node_count(nodes: dict[str, int], desired: int) -> None:
    assert desired_node_count(make_job(nodes=nodes).spec) == desired


def test_worker_selector() -> None:
    assert worker_selector(make_job()) == "cogwork.dev/job-name=digits,cogwork.dev/role=worker"


def test_expected_pods_follow_the_active_nodes_in_status() -> None:
    job = make_job()
    assert expected_pod_names(job) == set()  # nothing created yet: nothing to miss
    running = job.model_copy(update={"status": job.status.model_copy(
        update={"active_nodes": [0, 2]})})
    assert expected_pod_names(running) == {"digits-rdzv", "digits-node-0", "digits-node-2"}


USER_IMAGE = "registry.example.com/team/train:1"


def test_store_runs_the_trainer_image_never_the_users() -> None:
    job = make_job(image=USER_IMAGE, task=None, script={"command": ["python", "train.py"]})
    assert container(rendezvous_pod(job, SETTINGS))["image"] == DEFAULT_IMAGE
    mirrored = RenderSettings(image="mirror.local/cogwork/trainer:0.1.0")
    assert container(rendezvous_pod(job, mirrored))["image"] == mirrored.image


def test_user_image_gets_the_launcher_from_an_init_container() -> None:
    job = make_job(image=USER_IMAGE, task=None,
                   script={"command": ["python", "train.py"], "args": ["--epochs", "2"]})
    pod = worker_pod(job, 0, SETTINGS)
    main = container(pod)
    (init,) = pod["spec"]["initContainers"]
    assert main["image"] == USER_IMAGE and init["image"] == DEFAULT_IMAGE
    assert init["command"] == ["python", "-m", pod_contract.INSTALL_SDK_MODULE,
                               pod_contract.LAUNCHER_DIR]
    assert init["securityContext"]["allowPrivilegeEscalation"] is False
    launcher = f"{pod_contract.LAUNCHER_DIR}/{pod_contract.LAUNCHER_FILE}"
    assert main["command"][:2] == ["python", launcher]
    assert main["command"][-4:] == ["python", "train.py", "--epochs", "2"]
    mount = next(m for m in main["volumeMounts"] if m["mountPath"] == pod_contract.LAUNCHER_DIR)
    assert mount["readOnly"] is True
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume == {"name": mount["name"], "emptyDir": {}}


def test_user_image_runs_a_module_directly() -> None:
    job = make_job(image=USER_IMAGE, task=None, script={"module": "team.train", "args": ["-v"]})
    command = container(worker_pod(job, 0, SETTINGS))["command"]
    assert command[-3:] == ["-m", "team.train", "-v"]
    assert pod_contract.TRAIN_MODULE not in command


def test_trainer_image_needs_no_init_container() -> None:
    pod = worker_pod(make_job(), 0, SETTINGS)
    assert "initContainers" not in pod["spec"]
    assert all(v["name"] != "cogwork-launcher" for v in pod["spec"]["volumes"])


# ---- spec.podTemplate pod fields -------------------------------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from trainjob_cases import POD_FIELDS  # noqa: E402  (the admission cases' valid pod fields)


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


def test_user_volumes_and_mounts_reach_the_trainer_container_only() -> None:
    job = make_job(image=USER_IMAGE, task=None, script={"command": ["python", "t.py"]},
                   podTemplate=POD_FIELDS)
    pod = worker_pod(job, 0, SETTINGS)
    volumes = by_name(pod["spec"]["volumes"])
    assert volumes["datasets"] == {"name": "datasets", "persistentVolumeClaim": {
        "claimName": "imagenet", "readOnly": True}}
    assert volumes["config"]["configMap"] == {
        "name": "team", "items": [{"key": "train.yaml", "path": "conf/train.yaml", "mode": 0o444}],
        "defaultMode": 0o644, "optional": True}
    assert volumes["creds"]["secret"] == {"secretName": "s3", "defaultMode": 0o400}
    assert volumes["fast"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}
    mounts = {m["mountPath"]: m for m in container(pod)["volumeMounts"]}
    assert mounts["/datasets"] == {"name": "datasets", "mountPath": "/datasets",
                                   "readOnly": True}
    assert mounts["/etc/team"] == {"name": "config", "mountPath": "/etc/team", "subPath": "conf"}
    (init,) = pod["spec"]["initContainers"]
    assert all(m["name"] not in ("datasets", "config", "creds") for m in init["volumeMounts"])
    assert len(volumes) == len(pod["spec"]["volumes"])  # names stay unique
    assert len(mounts) == len(container(pod)["volumeMounts"])
    store = rendezvous_pod(job, SETTINGS)
    assert "datasets" not in by_name(store["spec"]["volumes"])


def test_scheduling_fields() -> None:
    job = make_job(podTemplate=POD_FIELDS)
    worker, store = worker_pod(job, 0, SETTINGS), rendezvous_pod(job, SETTINGS)
    assert worker["spec"]["imagePullSecrets"] == [{"name": "registry"}]
    assert worker["spec"]["affinity"] == POD_FIELDS["affinity"]
    assert worker["spec"]["topologySpreadConstraints"] == POD_FIELDS["topologySpreadConstraints"]
    assert worker["spec"]["schedulerName"] == store["spec"]["schedulerName"] == "volcano"
    for key in ("imagePullSecrets", "affinity", "topologySpreadConstraints"):
        assert key not in store["spec"]  # the store is a small CPU pod of the operator's image


def test_security_context_sets_only_who_the_workers_run_as() -> None:
    job = make_job(podTemplate=POD_FIELDS)
    worker, store = worker_pod(job, 0, SETTINGS), rendezvous_pod(job, SETTINGS)
    assert worker["spec"]["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 0, "fsGroup": 1000,
        "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"}}
    assert store["spec"]["securityContext"]["runAsUser"] == 65532
    security = container(worker)["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and "privileged" not in security
    assert security["capabilities"] == {"drop": ["ALL"]}
    for pod in (worker, store):  # the refused fields never reach a pod
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod["spec"])


def test_partial_security_context_keeps_the_operator_defaults() -> None:
    pod = worker_pod(make_job(podTemplate={"securityContext": {"runAsUser": 1234}}), 0, SETTINGS)
    assert pod["spec"]["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 1234, "runAsGroup": 65532, "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"}}


def test_shm_size_limits_the_operators_dshm() -> None:
    volumes = by_name(worker_pod(make_job(podTemplate={"shmSize": "8Gi"}), 0, SETTINGS)[
        "spec"]["volumes"])
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}


def test_value_from_and_env_from_come_after_the_plain_values() -> None:
    job = make_job(env=[{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                        {"name": "MODE", "valueFrom": {"configMapKeyRef": {
                            "name": "c", "key": "mode", "optional": True}}},
                        {"name": "PLAIN", "value": "1"}],
                   envFrom=[{"configMapRef": {"name": "team"}, "prefix": "TEAM_"},
                            {"secretRef": {"name": "s3"}}])
    pod = worker_pod(job, 0, SETTINGS)
    env = container(pod)["env"]
    names = [e["name"] for e in env]
    assert names.index("PLAIN") < names.index("KEY") < names.index("MODE")
    assert len(names) == len(set(names))
    assert by_name(env)["KEY"] == {"name": "KEY", "valueFrom": {"secretKeyRef": {
        "name": "s", "key": "k"}}}
    assert by_name(env)["MODE"]["valueFrom"] == {"configMapKeyRef": {
        "name": "c", "key": "mode", "optional": True}}
    assert container(pod)["envFrom"] == [{"prefix": "TEAM_", "configMapRef": {"name": "team"}},
                                         {"secretRef": {"name": "s3"}}]
    store = container(rendezvous_pod(job, SETTINGS))
    assert "envFrom" not in store and "KEY" not in by_name(store["env"])


def test_value_from_stays_out_of_the_torchx_app() -> None:
    from cogwork.plan.torchx_app import build_app, role

    job = make_job(env=[{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])
    app = build_app(job, job_uid=UID, namespace="ml", settings=SETTINGS)
    assert "KEY" not in role(app, "worker").env


def _read_only(c: dict[str, Any], pod: dict[str, Any]) -> bool:
    if not c["securityContext"].get("readOnlyRootFilesystem"):
        return False
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = by_name(pod["spec"]["volumes"])
    assert volumes[mounts["/tmp"]]["emptyDir"] == {}
    assert volumes[mounts["/cogwork/home"]]["emptyDir"] == {}
    assert by_name(c["env"])["HOME"]["value"] == "/cogwork/home"
    return True


def test_the_operators_image_runs_with_a_read_only_root_filesystem() -> None:
    job = make_job()
    worker, store = worker_pod(job, 0, SETTINGS), rendezvous_pod(job, SETTINGS)
    assert _read_only(container(worker), worker) and _read_only(container(store), store)
    user = make_job(image=USER_IMAGE, task=None, script={"command": ["python", "t.py"]})
    pod = worker_pod(user, 0, SETTINGS)
    (init,) = pod["spec"]["initContainers"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True  # our image
    assert not _read_only(container(pod), pod)  # a user's image: only when asked
    names = {v["name"] for v in pod["spec"]["volumes"]}
    assert "cogwork-tmp" not in names and "HOME" not in by_name(container(pod)["env"])


def test_user_image_opts_into_a_read_only_root_filesystem() -> None:
    job = make_job(image=USER_IMAGE, task=None, script={"command": ["python", "t.py"]},
                   podTemplate={"readOnlyRootFilesystem": True})
    pod = worker_pod(job, 0, SETTINGS)
    assert _read_only(container(pod), pod)


def test_users_home_wins_over_the_operators() -> None:
    pod = worker_pod(make_job(env=[{"name": "HOME", "value": "/scratch"}]), 0, SETTINGS)
    assert [e for e in container(pod)["env"] if e["name"] == "HOME"] == [
        {"name": "HOME", "value": "/scratch"}]


def test_every_operator_volume_and_mount_is_reserved_in_the_api() -> None:
    job = make_job(image=USER_IMAGE, task=None, script={"command": ["python", "t.py"]},
                   data={"path": "a.npz", "claimName": "datasets"},
                   podTemplate={"readOnlyRootFilesystem": True})
    for pod in (worker_pod(job, 0, SETTINGS), rendezvous_pod(job, SETTINGS)):
        for volume in pod["spec"]["volumes"]:
            assert contract.is_operator_volume_name(volume["name"]), volume
        for c in [*pod["spec"]["containers"], *pod["spec"].get("initContainers", [])]:
            for mount in c.get("volumeMounts", []):
                assert contract.overlaps_operator_mount(mount["mountPath"]), mount
