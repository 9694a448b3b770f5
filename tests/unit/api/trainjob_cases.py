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
SCRIPT = {"module": "my.train", "args": ["--x", "1"]}

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
    Case("failure rule with two matchers", job(failurePolicy={"rules": [
        {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]},
         "onPodConditions": ["DisruptionTarget"]}]}),
         ["exactly one of onExitCodes or onPodConditions"]),
    Case("failure rule", job(failurePolicy={"backoffLimit": 5, "rules": [
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]})),
    Case("unknown action", job(failurePolicy={"rules": [
        {"action": "Retry", "onPodConditions": ["DisruptionTarget"]}]}),
         ["spec.failurePolicy.rules[0].action"]),
    Case("name starting with a digit", with_name("1digits"), ["metadata.name must be a DNS-1035"]),
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
