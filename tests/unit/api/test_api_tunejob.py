"""TuneJob models and CRD: one table of admission cases decided by the pydantic validators
(offline, `cogwork run`) and, when COGWORK_CELCHECK is set, by the apiserver's own CRD
validation, defaulting and CEL code."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from cogwork.api.crdgen import render_crd
from cogwork.api.tunejob import TUNEJOB_RESOURCE, TuneJob
from pydantic import ValidationError
from trainjob_cases import (
    MULTIKUEUE,
    NOT_DOMAIN_PREFIXED,
    Case,
    assert_apiserver_decides,
    needs_celcheck,
    update,
)

CRDS = Path(__file__).resolve().parents[3] / "crds"
LR = {"name": "lr", "field": "task.learningRate", "logUniform": {"min": "1e-3", "max": "0.3"}}
WIDTH = {"name": "width", "field": "task.hiddenSize", "int": {"min": 16, "max": 256, "step": 16}}
BATCH = {"name": "batch", "field": "task.batchSize", "categorical": {"values": ["32", "64"]}}


def tune(*parameters: dict[str, Any], name: str = "search", **spec: Any) -> dict[str, Any]:
    """A valid TuneJob with spec keys overridden (None removes a key)."""
    base: dict[str, Any] = {
        "parameters": list(parameters) if parameters else [LR],
        "trialTemplate": {"task": {"name": "image-classification", "epochs": 3},
                          "data": {"dataset": "digits"}},
    }
    for key, value in spec.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return {"apiVersion": "cogwork.dev/v1alpha1", "kind": "TuneJob",
            "metadata": {"name": name, "namespace": "default"}, "spec": copy.deepcopy(base)}


def param(**fields: Any) -> dict[str, Any]:
    return {"name": "p", **fields}


LOSS = {"metric": "loss", "direction": "minimize"}


def pareto(*additional: dict[str, Any]) -> dict[str, Any]:
    """A multi-objective objective: maximize val_accuracy plus `additional`."""
    return {"metric": "val_accuracy", "direction": "maximize", "additional": list(additional)}


CREATE_CASES = [
    Case("minimal", tune()),
    Case("three parameters asha tpe", tune(LR, WIDTH, BATCH, search={"algorithm": "tpe",
                                                                      "seed": 7},
                                           pruner={"algorithm": "asha", "minResource": 1},
                                           budget={"maxTrials": 8, "parallelTrials": 2})),
    Case("empty parameter space", tune(parameters=[]), ["spec.parameters"]),
    Case("uniform min > max", tune(param(env="X", uniform={"min": "2", "max": "1"})),
         ["min must be less than max"]),
    Case("int min > max", tune(param(field="task.hiddenSize", int={"min": 64, "max": 8})),
         ["min must be less than max"]),
    Case("logUniform min zero", tune(param(field="task.learningRate",
                                           logUniform={"min": "0", "max": "1"})),
         ["min of a logUniform range must be greater than 0"]),
    Case("uniform min overflows", tune(param(env="X", uniform={"min": "-1e999", "max": "1"})),
         ["must be a finite number", "spec.parameters[0].uniform.min"]),
    Case("uniform max overflows", tune(param(env="X", uniform={"min": "0", "max": "1e999"})),
         ["must be a finite number", "spec.parameters[0].uniform.max"]),
    Case("logUniform max overflows",
         tune(param(field="task.learningRate", logUniform={"min": "1e-4", "max": "1e400"})),
         ["must be a finite number", "spec.parameters[0].logUniform.max"]),
    Case("logUniform max near the largest double",
         tune(param(env="X", logUniform={"min": "1e-4", "max": "1.5e308"}))),
    Case("categorical learning rate overflows",
         tune(param(field="task.learningRate", categorical={"values": ["0.1", "1e999"]})),
         ["categorical values of a decimal field must be finite non-negative decimals"]),
    Case("goal overflows", tune(objective={"metric": "loss", "direction": "minimize",
                                           "goal": "-1e999"}),
         ["spec.objective.goal must be a finite number"]),
    Case("unknown algorithm", tune(search={"algorithm": "bayes"}), ["spec.search.algorithm"]),
    Case("unknown pruner", tune(pruner={"algorithm": "sometimes"}), ["spec.pruner.algorithm"]),
    Case("parallel above max trials", tune(budget={"maxTrials": 2, "parallelTrials": 3}),
         ["spec.budget.parallelTrials must be less than or equal to spec.budget.maxTrials"]),
    Case("categorical with no values", tune(param(env="X", categorical={"values": []})),
         ["spec.parameters[0].categorical.values"]),
    Case("two distributions", tune(param(env="X", uniform={"min": "0", "max": "1"},
                                         categorical={"values": ["a"]})),
         ["exactly one of uniform, logUniform, int or categorical"]),
    Case("no target", tune(param(uniform={"min": "0", "max": "1"})),
         ["exactly one of field or env"]),
    Case("unknown field", tune(param(field="task.dropout", uniform={"min": "0", "max": "1"})),
         ["spec.parameters[0].field"]),
    Case("int for a decimal field", tune(param(field="task.learningRate",
                                               int={"min": 1, "max": 3})),
         ["decimal fields"]),
    Case("uniform for an integer field", tune(param(field="task.batchSize",
                                                    uniform={"min": "1", "max": "9"})),
         ["integer fields"]),
    Case("non-integer category of an integer field",
         tune(param(field="task.batchSize", categorical={"values": ["32", "big"]})),
         ["categorical values of an integer field must be integers"]),
    Case("unknown optimizer category",
         tune(param(field="task.optimizer", categorical={"values": ["sgd", "lion"]})),
         ["task.optimizer takes categorical values among sgd, adam, adamw"]),
    Case("optimizer choice", tune(param(field="task.optimizer",
                                        categorical={"values": ["sgd", "adam"]}))),
    Case("log int with step", tune(param(field="task.hiddenSize",
                                         int={"min": 8, "max": 64, "step": 8, "log": True})),
         ["step must be 1 when log is true"]),
    Case("duplicate parameter names", tune(LR, {**WIDTH, "name": "lr"}),
         ["spec.parameters names must be unique"]),
    Case("grid over a continuous range", tune(LR, search={"algorithm": "grid"}),
         ["spec.search.algorithm grid needs int or categorical parameters only"]),
    Case("grid over int and categorical", tune(WIDTH, BATCH, search={"algorithm": "grid"})),
    Case("hyperband without maxResource", tune(pruner={"algorithm": "hyperband"}),
         ["spec.pruner.maxResource is required for hyperband"]),
    Case("task parameter for a script template",
         tune(trialTemplate={"script": {"module": "my.train"}}),
         ["parameters that set task.* fields need spec.trialTemplate.task"]),
    Case("env parameter for a script template",
         tune(param(env="LR", logUniform={"min": "1e-4", "max": "1"}),
              trialTemplate={"script": {"module": "my.train"}})),
    Case("reserved env", tune(param(env="COGWORK_X", uniform={"min": "0", "max": "1"})),
         ["reserved"], cel_only=False),
    Case("template that stops", tune(trialTemplate={"task": {"name": "image-classification"},
                                                    "data": {"dataset": "digits"},
                                                    "stop": True}),
         ["spec.trialTemplate.stop must be false"]),
    Case("invalid template", tune(trialTemplate={"task": {"name": "image-classification"}}),
         ["spec.data is required when spec.task is set"]),
    Case("name too long", tune(name="x" * 49), ["metadata.name must be at most 48"]),
    Case("two objectives", tune(objective=pareto(LOSS), search={"algorithm": "tpe"})),
    Case("three objectives with gp", tune(objective=pareto(LOSS, {"metric": "macroF1",
                                                                  "direction": "maximize"}),
                                          search={"algorithm": "gp"})),
    Case("additional objective repeats the primary",
         tune(objective=pareto({"metric": "val_accuracy", "direction": "minimize"})),
         ["spec.objective.additional metrics must be unique and differ from "
          "spec.objective.metric"]),
    Case("additional objectives repeat a metric", tune(objective=pareto(LOSS, LOSS)),
         ["spec.objective.additional metrics must be unique"]),
    Case("more than four additional objectives",
         tune(objective=pareto(*({"metric": f"m{i}", "direction": "minimize"}
                                 for i in range(5)))),
         ["spec.objective.additional"]),
    Case("additional objective without a direction",
         tune(objective=pareto({"metric": "loss"})), ["spec.objective.additional[0].direction"]),
    Case("multi-objective with asha", tune(objective=pareto(LOSS), pruner={"algorithm": "asha"}),
         ["spec.pruner.algorithm must be none with spec.objective.additional"]),
    Case("multi-objective with cmaes", tune(objective=pareto(LOSS),
                                            search={"algorithm": "cmaes"}),
         ["spec.search.algorithm cmaes supports a single objective"]),
    Case("multi-objective on katib", tune(objective=pareto(LOSS), engine="katib"),
         ["spec.engine katib does not support spec.objective.additional"]),
    # The CRD has no `goal` there: kubectl's strict field validation rejects the unknown field.
    Case("goal on an additional objective",
         tune(objective=pareto({**LOSS, "goal": "0.1"})), ["objective.additional.0.goal"]),
    Case("managed by MultiKueue", tune(managedBy=MULTIKUEUE)),
    Case("managedBy too long", tune(managedBy="example.com/" + "x" * 52), ["spec.managedBy"]),
    Case("managedBy without a domain", tune(managedBy="multikueue"), [NOT_DOMAIN_PREFIXED]),
    # Trials are the TuneJob's children: they run where it runs.
    Case("managedBy on the trial template",
         tune(trialTemplate={"task": {"name": "image-classification"},
                             "data": {"dataset": "digits"}, "managedBy": MULTIKUEUE}),
         ["spec.trialTemplate.managedBy must not be set"]),
]
# The reserved-env rule is the trainer's injected-name list: offline only (the CRD has no rule);
# unknown fields are kubectl's strict field validation, not the CRD's.
OFFLINE_ONLY = ("reserved env", "goal on an additional objective")
CEL_CASES = [c for c in CREATE_CASES if c.name not in OFFLINE_ONLY] + [
    update("budget may grow", tune(), tune(budget={"maxTrials": 20, "parallelTrials": 2})),
    update("parameters are immutable", tune(), tune(WIDTH), "spec.parameters is immutable"),
    update("template is immutable", tune(),
           tune(trialTemplate={"task": {"name": "image-classification", "epochs": 9},
                               "data": {"dataset": "digits"}}),
           "spec.trialTemplate is immutable"),
    update("objectives are immutable", tune(), tune(objective=pareto(LOSS)),
           "spec.objective is immutable"),
    # An object stored before `additional` existed still equals its defaulted update.
    update("defaulted objective unchanged",
           tune(objective={"metric": "val_accuracy", "direction": "maximize"}), tune()),
    update("managedBy kept while the budget grows", tune(managedBy=MULTIKUEUE),
           tune(managedBy=MULTIKUEUE, budget={"maxTrials": 20})),
    update("managedBy changed", tune(managedBy=MULTIKUEUE), tune(managedBy="example.com/other"),
           "spec.managedBy is immutable"),
    update("managedBy added", tune(), tune(managedBy=MULTIKUEUE), "spec.managedBy is immutable"),
    update("managedBy removed", tune(managedBy=MULTIKUEUE), tune(),
           "spec.managedBy is immutable"),
]


@pytest.mark.parametrize("case", [c for c in CREATE_CASES if not c.cel_only],
                         ids=lambda c: c.name)
def test_offline_validation_matches_the_crd(case: Case) -> None:
    if not case.expect:
        TuneJob.model_validate(case.new)
        return
    with pytest.raises(ValidationError) as raised:
        TuneJob.model_validate(case.new)
    text = str(raised.value)
    wanted = case.expect[0]
    if wanted.startswith("spec.") and " " not in wanted:  # a schema error names the field
        wanted = wanted.replace("[", ".").replace("]", "").split(".")[-1]
    assert wanted in text, text


def test_defaults() -> None:
    spec = TuneJob.model_validate(tune()).spec
    assert (spec.search.algorithm, spec.pruner.algorithm, spec.engine) == ("tpe", "none",
                                                                            "builtin")
    assert (spec.budget.max_trials, spec.budget.parallel_trials) == (10, 1)
    assert (spec.objective.metric, spec.objective.direction) == ("val_accuracy", "maximize")
    assert spec.parameters[0].log_uniform is not None and not spec.promote.enabled


def test_crd_names_columns_and_defaults() -> None:
    crd = render_crd(TUNEJOB_RESOURCE)
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["cwtune"] and names["categories"] == ["cogwork"]
    version = crd["spec"]["versions"][0]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Trials"] == ".status.trialsText"
    assert columns["Best"] == ".status.bestTrial.value"
    assert columns["Phase"] == ".status.phase"
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["pruner"]["default"]["algorithm"] == "none"
    assert spec["properties"]["parameters"]["x-kubernetes-list-map-keys"] == ["name"]
    assert "scale" not in version["subresources"]


@needs_celcheck
def test_apiserver_validation_decides_every_case(tmp_path: Path) -> None:
    assert_apiserver_decides(CRDS / "tunejobs.cogwork.dev.yaml",
                             [c.as_json() for c in CEL_CASES], tmp_path)
