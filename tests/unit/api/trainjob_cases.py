"""Admission cases for TrainJob: the same table checks the pydantic validators (offline) and the
CRD's OpenAPI + CEL rules (through the apiserver's own validation code, see
test_api_trainjob_cel.py).

`expect` lists substrings of the error; an empty list means the object must be accepted.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


def job(**spec: Any) -> dict[str, Any]:
    """A valid minimal TrainJob with spec keys overridden (None removes a key)."""
    base: dict[str, Any] = {
        "task": {"name": "image-classification"},
        "data": {"dataset": "digits"},
        "nodes": {"min": 1, "max": 2},
    }
    for key, value in spec.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return {
        "apiVersion": "cogwork.dev/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "digits", "namespace": "default"},
        "spec": base,
    }


def with_name(name: str) -> dict[str, Any]:
    doc = job()
    doc["metadata"]["name"] = name
    return doc


@dataclass
class Case:
    name: str
    new: dict[str, Any]
    expect: list[str] = field(default_factory=list)
    old: dict[str, Any] | None = None
    cel_only: bool = False  # transition rules: only the apiserver has the old object

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "new": copy.deepcopy(self.new),
                "old": copy.deepcopy(self.old), "expect": self.expect}


def update(name: str, old: dict[str, Any], new: dict[str, Any], *expect: str) -> Case:
    return Case(name, new, list(expect), old=old, cel_only=True)


SUSPENDED = job(suspend=True)
MULTIKUEUE = "kueue.x-k8s.io/multikueue"
NOT_DOMAIN_PREFIXED = "spec.managedBy must be a domain-prefixed path"
SCRIPT = {"module": "my.train", "args": ["--x", "1"]}


def pod(**template: Any) -> dict[str, Any]:
    """A valid job with these spec.podTemplate fields."""
    return job(podTemplate=template)


# Every allowed pod field at once (tests/unit/plan renders the same block).
POD_FIELDS: dict[str, Any] = {
    "volumes": [
        {"name": "datasets", "persistentVolumeClaim": {"claimName": "imagenet",
                                                       "readOnly": True}},
        {"name": "config", "configMap": {"name": "team", "items": [
            {"key": "train.yaml", "path": "conf/train.yaml", "mode": 0o444}],
            "defaultMode": 0o644, "optional": True}},
        {"name": "creds", "secret": {"secretName": "s3", "defaultMode": 0o400}},
        {"name": "scratch", "emptyDir": {"sizeLimit": "10Gi"}},
        {"name": "fast", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
    ],
    "volumeMounts": [
        {"name": "datasets", "mountPath": "/datasets", "readOnly": True},
        {"name": "config", "mountPath": "/etc/team", "subPath": "conf"},
        {"name": "creds", "mountPath": "/var/run/secrets/s3", "readOnly": True},
        {"name": "scratch", "mountPath": "/scratch"},
    ],
    "imagePullSecrets": [{"name": "registry"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]}]}]}},
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                "labelSelector": {"matchLabels": {
                                                    "cogwork.dev/job-name": "digits"}}}}]}},
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                   "whenUnsatisfiable": "ScheduleAnyway",
                                   "labelSelector": {"matchLabels": {"team": "vision"}}}],
    "schedulerName": "volcano",
    "shmSize": "2Gi",
    "securityContext": {"runAsUser": 1000, "runAsGroup": 0, "fsGroup": 1000,
                        "fsGroupChangePolicy": "OnRootMismatch", "runAsNonRoot": True,
                        "privileged": False, "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]}},
    "readOnlyRootFilesystem": True,
    "hostNetwork": False, "hostPID": False, "hostIPC": False,
    "automountServiceAccountToken": False,
}

CREATE_CASES = [
    Case("minimal task job", job()),
    Case("script job without data", job(task=None, data=None, script=SCRIPT)),
    Case("task without data", job(data=None), ["spec.data is required when spec.task is set"]),
    Case("task and script", job(script=SCRIPT),
         ["exactly one of spec.task or spec.script must be set"]),
    Case("neither task nor script", job(task=None),
         ["exactly one of spec.task or spec.script must be set"]),
    Case("script with module and command",
         job(task=None, script={"module": "a", "command": ["python", "x.py"]}),
         ["exactly one of spec.script.module or spec.script.command"]),
    Case("nodes min > max", job(nodes={"min": 3, "max": 2}),
         ["spec.nodes.min must be less than or equal to spec.nodes.max"]),
    Case("nodes count above max", job(nodes={"min": 1, "max": 2, "count": 3}),
         ["spec.nodes.count must be between spec.nodes.min and spec.nodes.max"]),
    Case("nodes count within range", job(nodes={"min": 1, "max": 4, "count": 3})),
    Case("count alone exceeds default max", job(nodes={"count": 2}),
         ["spec.nodes.count must be between"]),
    Case("negative gpu", job(resources={"gpu": -1}), ["spec.resources.gpu"]),
    Case("integer cpu quantity", job(resources={"cpu": 2, "memory": "4Gi", "gpu": 1})),
    Case("bad memory quantity", job(resources={"memory": "lots"}), ["spec.resources.memory"]),
    Case("unknown task", job(task={"name": "speech-recognition"}), ["spec.task.name"]),
    Case("unknown model", job(task={"name": "image-classification", "model": "vit"}),
         ["spec.task.model"]),
    Case("learning rate zero", job(task={"name": "image-classification", "learningRate": "0"}),
         ["spec.task.learningRate must be greater than 0"]),
    Case("learning rate not a number",
         job(task={"name": "image-classification", "learningRate": "fast"}),
         ["spec.task.learningRate"]),
    Case("learning rate as float", job(task={"name": "image-classification", "learningRate": 0.1}),
         ["spec.task.learningRate"]),
    Case("learning rate exponent", job(task={"name": "image-classification",
                                             "learningRate": "3e-4"})),
    # Decimal strings too large for a double become inf in the trainer: refused at apply.
    Case("learning rate overflows", job(task={"name": "image-classification",
                                              "learningRate": "1e999"}),
         ["spec.task.learningRate must be a finite number"]),
    Case("learning rate overflows with a signed exponent",
         job(task={"name": "image-classification", "learningRate": "12.5E+0400"}),
         ["spec.task.learningRate must be a finite number"]),
    # A fractional mantissa the regex does not settle: CEL's double() refuses it.
    Case("learning rate overflows in a fractional form",
         job(task={"name": "image-classification", "learningRate": "0.5e309"}),
         ["spec.task.learningRate must be a finite number"]),
    Case("learning rate just below the largest double",
         job(task={"name": "image-classification", "learningRate": "1.7e308"})),
    Case("learning rate with a huge negative exponent is not an overflow",
         job(task={"name": "image-classification", "learningRate": "5e-300"})),
    Case("momentum overflows", job(task={"name": "image-classification", "momentum": "1e400"}),
         ["spec.task.momentum must be a finite number"]),
    Case("weight decay overflows", job(task={"name": "image-classification",
                                             "weightDecay": "9e9999"}),
         ["spec.task.weightDecay must be a finite number"]),
    Case("learning rate inf", job(task={"name": "image-classification", "learningRate": "inf"}),
         ["spec.task.learningRate"]),
    Case("learning rate nan", job(task={"name": "image-classification", "learningRate": "nan"}),
         ["spec.task.learningRate"]),
    Case("non-finite loss may train on",
         job(task={"name": "image-classification", "failOnNonFiniteLoss": False})),
    Case("script non-finite loss may train on",
         job(task=None, data=None, script={**SCRIPT, "failOnNonFiniteLoss": False})),
    Case("two data sources", job(data={"dataset": "digits", "path": "x.npz"}),
         ["exactly one of spec.data.dataset, spec.data.path or spec.data.fromLabelJob"]),
    Case("data path in claim", job(data={"path": "sets/x.npz", "claimName": "datasets"})),
    Case("absolute data path in claim", job(data={"path": "/x.npz", "claimName": "datasets"}),
         ["spec.data.path must be relative to the claim"]),
    Case("claim without path", job(data={"dataset": "digits", "claimName": "datasets"}),
         ["spec.data.claimName requires spec.data.path"]),
    Case("env COGWORK_ name", job(env=[{"name": "COGWORK_TASK", "value": "x"}]),
         ["COGWORK_TASK is reserved"]),
    Case("env injected name", job(env=[{"name": "OMP_NUM_THREADS", "value": "8"}]),
         ["OMP_NUM_THREADS is reserved"]),
    Case("env plain name", job(env=[{"name": "NCCL_DEBUG", "value": "INFO"}])),
    Case("reserved pod label", job(podTemplate={"labels": {"cogwork.dev/role": "x"}}),
         ["keys starting with cogwork.dev/ are reserved"]),
    # -- what the apiserver would refuse on the pods is refused on the job ---------------------
    Case("label value with a space", job(podTemplate={"labels": {"team": "a b"}}),
         ["spec.podTemplate.labels.team"]),
    Case("label value too long", job(podTemplate={"labels": {"team": "x" * 64}}),
         ["spec.podTemplate.labels.team"]),
    Case("label key with a space", job(podTemplate={"labels": {"my team": "a"}}),
         ["spec.podTemplate.labels", "keys must be qualified names"]),
    Case("annotation key with two slashes", job(podTemplate={"annotations": {"a/b/c": "x"}}),
         ["spec.podTemplate.annotations", "keys must be qualified names"]),
    Case("node selector value with a slash", job(podTemplate={"nodeSelector": {
        "pool": "gpu/a100"}}), ["spec.podTemplate.nodeSelector.pool"]),
    Case("labels, annotations and selectors as Kubernetes writes them", job(podTemplate={
        "labels": {"app.kubernetes.io/name": "digits", "team": "", "v": "1.2_rc-3"},
        "annotations": {"example.com/free-text": "any text at all: spaces, / and :"},
        "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}})),
    Case("toleration Exists with a value", job(podTemplate={"tolerations": [
        {"key": "gpu", "operator": "Exists", "value": "yes"}]}),
         ["spec.podTemplate.tolerations[0]", "value must be empty when operator is Exists"]),
    Case("toleration without a key and not Exists", job(podTemplate={"tolerations": [
        {"operator": "Equal", "value": "x"}]}),
         ["spec.podTemplate.tolerations[0]", "operator must be Exists when key is empty"]),
    Case("tolerationSeconds without NoExecute", job(podTemplate={"tolerations": [
        {"key": "gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 30}]}),
         ["spec.podTemplate.tolerations[0]", "tolerationSeconds needs effect NoExecute"]),
    Case("toleration value with a space", job(podTemplate={"tolerations": [
        {"key": "gpu", "value": "a b"}]}), ["spec.podTemplate.tolerations[0].value"]),
    Case("tolerations as Kubernetes writes them", job(podTemplate={"tolerations": [
        {"operator": "Exists"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 30},
        {"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]})),
    Case("failure rule with two matchers", job(failurePolicy={"rules": [
        {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]},
         "onPodConditions": ["DisruptionTarget"]}]}),
         ["exactly one of onExitCodes or onPodConditions"]),
    Case("failure rule", job(failurePolicy={"backoffLimit": 5, "rules": [
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]})),
    Case("unknown action", job(failurePolicy={"rules": [
        {"action": "Retry", "onPodConditions": ["DisruptionTarget"]}]}),
         ["spec.failurePolicy.rules[0].action"]),
    # -- pod fields a real team needs, and what the operator refuses to grant -----------------
    Case("pod fields a team needs", job(
        env=[{"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "wandb",
                                                                      "key": "api-key"}}},
             {"name": "RUN_MODE", "valueFrom": {"configMapKeyRef": {"name": "team",
                                                                    "key": "mode",
                                                                    "optional": True}}},
             {"name": "PLAIN", "value": "1"}],
        envFrom=[{"configMapRef": {"name": "team"}, "prefix": "TEAM_"},
                 {"secretRef": {"name": "s3", "optional": False}}],
        podTemplate=POD_FIELDS)),
    Case("valueFrom with an explicitly empty value", job(env=[
        {"name": "A", "value": "", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])),
    Case("valueFrom with a value", job(env=[
        {"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
         ["spec.env[0]", "must be empty when spec.env[].valueFrom is set"]),
    Case("valueFrom with two sources", job(env=[{"name": "A", "valueFrom": {
        "secretKeyRef": {"name": "s", "key": "k"}, "configMapKeyRef": {"name": "c", "key": "k"}}}]),
         ["spec.env[0].valueFrom", "exactly one of secretKeyRef or configMapKeyRef"]),
    Case("valueFrom with a bad key", job(env=[{"name": "A", "valueFrom": {
        "secretKeyRef": {"name": "s", "key": "a/b"}}}]),
         ["spec.env[0].valueFrom.secretKeyRef.key"]),
    Case("envFrom COGWORK_ prefix", job(envFrom=[{"secretRef": {"name": "s"},
                                                  "prefix": "COGWORK_"}]),
         ["spec.envFrom[0].prefix", "must not start with COGWORK_"]),
    Case("envFrom without a source", job(envFrom=[{"prefix": "X_"}]),
         ["spec.envFrom[0]", "exactly one of secretRef or configMapRef"]),
    Case("hostPath volume", pod(volumes=[{"name": "host", "hostPath": {"path": "/"}}]),
         ["spec.podTemplate.volumes[0].hostPath", "hostPath is forbidden"]),
    Case("projected token volume", pod(volumes=[{"name": "tok", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token", "audience": "https://kubernetes.default"}}]}}]),
         ["spec.podTemplate.volumes[0].projected", "projected is forbidden"]),
    Case("volume named like the operator's", pod(volumes=[{"name": "checkpoints",
                                                           "emptyDir": {}}]),
         ["spec.podTemplate.volumes[0].name", "is reserved"]),
    Case("volume under the operator's prefix", pod(volumes=[{"name": "cogwork-tmp",
                                                             "emptyDir": {}}]),
         ["spec.podTemplate.volumes[0].name", "is reserved"]),
    Case("volume with two sources", pod(volumes=[{"name": "v", "emptyDir": {},
                                                  "secret": {"secretName": "s"}}]),
         ["spec.podTemplate.volumes[0]", "needs exactly one of persistentVolumeClaim"]),
    Case("volume without a source", pod(volumes=[{"name": "v"}]),
         ["spec.podTemplate.volumes[0]", "needs exactly one of persistentVolumeClaim"]),
    Case("emptyDir on hugepages", pod(volumes=[{"name": "v", "emptyDir": {
        "medium": "HugePages-2Mi"}}]), ["spec.podTemplate.volumes[0].emptyDir.medium"]),
    Case("configMap item escaping the volume", pod(volumes=[{"name": "v", "configMap": {
        "name": "c", "items": [{"key": "k", "path": "../../etc/passwd"}]}}]),
         ["spec.podTemplate.volumes[0].configMap.items[0].path", "must be relative"]),
    Case("mount at an operator path", pod(
        volumes=[{"name": "v", "emptyDir": {}}],
        volumeMounts=[{"name": "v", "mountPath": "/cogwork/checkpoints"}]),
         ["spec.podTemplate.volumeMounts[0].mountPath", "must not be at, above or below"]),
    Case("mount above an operator path", pod(
        volumes=[{"name": "v", "emptyDir": {}}], volumeMounts=[{"name": "v", "mountPath": "/dev"}]),
         ["spec.podTemplate.volumeMounts[0].mountPath", "must not be at, above or below"]),
    Case("mount at /tmp", pod(
        volumes=[{"name": "v", "emptyDir": {}}], volumeMounts=[{"name": "v", "mountPath": "/tmp"}]),
         ["spec.podTemplate.volumeMounts[0].mountPath", "must not be at, above or below"]),
    Case("mount path with ..", pod(
        volumes=[{"name": "v", "emptyDir": {}}],
        volumeMounts=[{"name": "v", "mountPath": "/data/../cogwork"}]),
         ["spec.podTemplate.volumeMounts[0].mountPath", "must not contain . or .. segments"]),
    Case("relative mount path", pod(
        volumes=[{"name": "v", "emptyDir": {}}], volumeMounts=[{"name": "v", "mountPath": "data"}]),
         ["spec.podTemplate.volumeMounts[0].mountPath"]),
    Case("absolute subPath", pod(
        volumes=[{"name": "v", "emptyDir": {}}],
        volumeMounts=[{"name": "v", "mountPath": "/data", "subPath": "/etc"}]),
         ["spec.podTemplate.volumeMounts[0].subPath", "must be relative"]),
    Case("mount of an undeclared volume", pod(
        volumes=[{"name": "v", "emptyDir": {}}],
        volumeMounts=[{"name": "other", "mountPath": "/data"}]),
         ["spec.podTemplate.volumeMounts", "must name a volume of spec.podTemplate.volumes"]),
    Case("mount without any volume", pod(volumeMounts=[{"name": "v", "mountPath": "/data"}]),
         ["spec.podTemplate.volumeMounts", "must name a volume of spec.podTemplate.volumes"]),
    Case("hostNetwork", pod(hostNetwork=True),
         ["spec.podTemplate.hostNetwork", "hostNetwork is forbidden"]),
    Case("hostPID", pod(hostPID=True), ["spec.podTemplate.hostPID", "hostPID is forbidden"]),
    Case("hostIPC", pod(hostIPC=True), ["spec.podTemplate.hostIPC", "hostIPC is forbidden"]),
    Case("automountServiceAccountToken", pod(automountServiceAccountToken=True),
         ["spec.podTemplate.automountServiceAccountToken", "is forbidden"]),
    Case("privileged", pod(securityContext={"privileged": True}),
         ["spec.podTemplate.securityContext.privileged", "privileged is forbidden"]),
    Case("allowPrivilegeEscalation", pod(securityContext={"allowPrivilegeEscalation": True}),
         ["spec.podTemplate.securityContext.allowPrivilegeEscalation", "is forbidden"]),
    Case("capabilities add", pod(securityContext={"capabilities": {"add": ["SYS_ADMIN"]}}),
         ["spec.podTemplate.securityContext.capabilities.add", "capabilities.add is forbidden"]),
    Case("runAsUser 0", pod(securityContext={"runAsUser": 0}),
         ["spec.podTemplate.securityContext.runAsUser", "must not be 0"]),
    Case("runAsNonRoot false", pod(securityContext={"runAsNonRoot": False}),
         ["spec.podTemplate.securityContext.runAsNonRoot", "must be true"]),
    Case("bad schedulerName", pod(schedulerName="Not_Valid"),
         ["spec.podTemplate.schedulerName"]),
    Case("bad shmSize", pod(shmSize="lots"), ["spec.podTemplate.shmSize"]),
    Case("unknown whenUnsatisfiable", pod(topologySpreadConstraints=[
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "Maybe"}]),
         ["spec.podTemplate.topologySpreadConstraints[0].whenUnsatisfiable"]),
    Case("name starting with a digit", with_name("1digits"), ["metadata.name must be a DNS-1035"]),
    # -- spec.managedBy: validated as batch/v1 Job's ------------------------------------------
    Case("managed by MultiKueue", job(managedBy=MULTIKUEUE)),
    Case("managed by Cogwork, said explicitly", job(managedBy="cogwork.dev/operator")),
    Case("managedBy with every path character", job(managedBy="a.example/x-y_z.~%!$&'()*+,;=:/v")),
    Case("managedBy of 63 characters", job(managedBy="example.com/" + "x" * 51)),
    Case("managedBy too long", job(managedBy="example.com/" + "x" * 52),
         ["spec.managedBy", "63"]),
    Case("managedBy without a domain", job(managedBy="multikueue"), [NOT_DOMAIN_PREFIXED]),
    Case("managedBy with an empty path", job(managedBy="kueue.x-k8s.io/"), [NOT_DOMAIN_PREFIXED]),
    Case("managedBy with an empty domain", job(managedBy="/multikueue"), [NOT_DOMAIN_PREFIXED]),
    Case("managedBy with an uppercase domain", job(managedBy="Kueue.x-k8s.io/multikueue"),
         [NOT_DOMAIN_PREFIXED]),
    Case("managedBy with a space in the path", job(managedBy="example.com/multi kueue"),
         [NOT_DOMAIN_PREFIXED]),
    Case("name too long", with_name("a" * 55), ["metadata.name must be at most 54"]),
]

UPDATE_CASES = [
    update("scale nodes.count", job(nodes={"min": 1, "max": 4, "count": 4}),
           job(nodes={"min": 1, "max": 4, "count": 2})),
    update("set nodes.count first time", job(), job(nodes={"min": 1, "max": 2, "count": 1})),
    update("stop, suspend and ttl are mutable", job(), job(stop=True, suspend=True,
                                                       ttlSecondsAfterFinished=60)),
    update("image is immutable", job(), job(image="example.com/other:1"),
           "spec.image is immutable"),
    update("nodes.max is immutable", job(), job(nodes={"min": 1, "max": 3}),
           "spec.nodes.max is immutable"),
    update("task fields are immutable", job(),
           job(task={"name": "image-classification", "epochs": 3}), "spec.task is immutable"),
    update("adding env is forbidden", job(), job(env=[{"name": "A", "value": "1"}]),
           "spec.env is immutable"),
    update("removing data is forbidden", job(), job(data=None), "spec.data is immutable"),
    update("adding a deadline is forbidden", job(), job(activeDeadlineSeconds=60),
           "spec.activeDeadlineSeconds is immutable"),
    update("nodeSelector while running", job(),
           job(podTemplate={"nodeSelector": {"pool": "gpu"}}),
           "spec.podTemplate.nodeSelector may change only while the job is suspended"),
    update("Kueue admits: unsuspend and set nodeSelector in one write", SUSPENDED,
           job(suspend=False, podTemplate={"nodeSelector": {"pool": "gpu"},
                                           "tolerations": [{"key": "gpu", "operator": "Exists"}],
                                           "labels": {"flavor": "a"}})),
    update("Kueue stops: suspend and restore nodeSelector", job(
        podTemplate={"nodeSelector": {"pool": "gpu"}}), SUSPENDED),
    update("serviceAccountName while suspended", SUSPENDED,
           job(suspend=True, podTemplate={"serviceAccountName": "other"}),
           "spec.podTemplate.serviceAccountName is immutable"),
    update("scale out of range", job(), job(nodes={"min": 1, "max": 2, "count": 5}),
           "spec.nodes.count must be between"),
    update("adding a volume is forbidden", pod(), pod(volumes=[{"name": "v", "emptyDir": {}}]),
           "spec.podTemplate.volumes is immutable"),
    update("affinity is immutable even while suspended", job(suspend=True, podTemplate=POD_FIELDS),
           job(suspend=True, podTemplate={**POD_FIELDS, "affinity": {"nodeAffinity": {}}}),
           "spec.podTemplate.affinity is immutable"),
    update("envFrom is immutable", job(), job(envFrom=[{"secretRef": {"name": "s"}}]),
           "spec.envFrom is immutable"),
    update("unchanged pod fields", job(podTemplate=POD_FIELDS), job(podTemplate=POD_FIELDS)),
    update("managedBy kept while the job changes", job(managedBy=MULTIKUEUE),
           job(managedBy=MULTIKUEUE, suspend=True)),
    update("managedBy changed", job(managedBy=MULTIKUEUE),
           job(managedBy="cogwork.dev/operator"), "spec.managedBy is immutable"),
    update("managedBy added", job(), job(managedBy=MULTIKUEUE), "spec.managedBy is immutable"),
    update("managedBy removed", job(managedBy=MULTIKUEUE), job(), "spec.managedBy is immutable"),
]

ALL_CASES = CREATE_CASES + UPDATE_CASES


# Kubernetes' own CRD validation (tests/unit/api/celcheck, built by `make celcheck`).
CELCHECK = os.environ.get("COGWORK_CELCHECK")
needs_celcheck = pytest.mark.skipif(
    not CELCHECK, reason="set COGWORK_CELCHECK to a binary built with "
                         "`go build -C tests/unit/api/celcheck -o X .`")


def assert_apiserver_decides(crd_file: Path, cases: list[dict[str, Any]], tmp: Path) -> None:
    """Every case is admitted or rejected by the apiserver's code exactly as `expect` says."""
    path = tmp / "cases.json"
    path.write_text(json.dumps(cases))
    result = subprocess.run([str(CELCHECK), str(crd_file), str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
