"""The Katib engine: TuneJob -> Experiment (real field values), Katib's text substitution
simulated on the trial template, and the Experiment status mirrored back into the TuneJob."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from cogwork.api.common import to_wire
from cogwork.api.trainjob import TrainJob
from cogwork.plan import tunejob_katib_reconcile as katib_status
from cogwork.plan import tunejob_katib_render as katib
from tuning_helpers import BATCH, LR, WIDTH, tunejob

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
OPTIMIZER = {"name": "opt", "field": "task.optimizer",
             "categorical": {"values": ["sgd", "adam"]}}
MOMENTUM = {"name": "momentum", "field": "task.momentum", "uniform": {"min": "0", "max": "0.9"}}
ENV_DROPOUT = {"name": "dropout", "env": "DROPOUT", "uniform": {"min": "0.1", "max": "0.5"}}


def experiment_spec(job: Any) -> dict[str, Any]:
    return katib.build(job).experiment["spec"]  # type: ignore[no-any-return]


def substitute(text: str, values: dict[str, str]) -> str:
    """What Katib's manifest generator does: plain text replacement per trial parameter."""
    for name, value in values.items():
        text = text.replace(f"${{trialParameters.{name}}}", value)
    return text


def as_trial(manifest: dict[str, Any], name: str = "search-abcd1234") -> TrainJob:
    """Katib names the trial's object and creates it: it must be a valid TrainJob."""
    manifest = {**manifest, "metadata": {**manifest["metadata"], "name": name,
                                         "namespace": "ml"}}
    return TrainJob.model_validate(manifest)


def walk(value: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in walk(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [item for i, v in enumerate(value) for item in walk(v, f"{path}[{i}]")]
    return [(path, value)]


# -- the Experiment -----------------------------------------------------------------------------

def test_experiment_identity_objective_and_budget() -> None:
    job = tunejob(objective={"metric": "loss", "direction": "minimize", "goal": "0.05"},
                  budget={"maxTrials": 12, "parallelTrials": 3, "maxFailedTrials": 2})
    experiment = katib.build(job).experiment
    assert experiment["apiVersion"] == "kubeflow.org/v1beta1"
    assert experiment["kind"] == "Experiment"
    assert experiment["metadata"] == {"name": "search", "namespace": "ml",
                                      "labels": {"cogwork.dev/tunejob": "search"}}
    spec = experiment["spec"]
    assert spec["objective"] == {"type": "minimize", "objectiveMetricName": "loss",
                                 "goal": 0.05,
                                 "metricStrategies": [{"name": "loss", "value": "latest"}]}
    assert (spec["maxTrialCount"], spec["parallelTrialCount"],
            spec["maxFailedTrialCount"]) == (12, 3, 2)
    assert spec["metricsCollectorSpec"] == {"collector": {"kind": "Push"}}
    assert "earlyStopping" not in spec


def test_max_failed_is_clamped_to_max_trials_as_katib_requires() -> None:
    spec = experiment_spec(tunejob(budget={"maxTrials": 2, "parallelTrials": 1,
                                           "maxFailedTrials": 5}))
    assert spec["maxFailedTrialCount"] == 2


def test_wire_shape_is_camel_case_json_without_nulls() -> None:
    experiment = katib.build(tunejob(pruner={"algorithm": "median"})).experiment
    assert json.loads(json.dumps(experiment)) == experiment  # plain JSON types only
    leaves = walk({k: v for k, v in experiment.items()})
    assert all(value is not None for _, value in leaves)
    keys = [p for p, _ in leaves if ".trialSpec" not in p and ".labels" not in p]
    assert not [p for p in keys if "_" in p.split(".")[-1].split("[")[0]], keys


@pytest.mark.parametrize(("algorithm", "katib_name", "settings"), [
    ("tpe", "tpe", [{"name": "random_state", "value": "7"}]),
    ("random", "random", [{"name": "random_state", "value": "7"}]),
    ("cmaes", "cmaes", [{"name": "random_state", "value": "7"}]),
    ("gp", "bayesianoptimization", [{"name": "random_state", "value": "7"},
                                    {"name": "n_initial_points", "value": "3"}]),
    ("grid", "grid", None),
    ("qmc", "sobol", None),
])
def test_algorithms_map_to_katib_suggestions_seeded(algorithm: str, katib_name: str,
                                                    settings: list[dict[str, str]] | None
                                                    ) -> None:
    params = (WIDTH, BATCH) if algorithm == "grid" else (LR, WIDTH, BATCH)
    job = tunejob(*params, search={"algorithm": algorithm, "seed": 7, "startupTrials": 3})
    spec = experiment_spec(job)["algorithm"]
    assert spec["algorithmName"] == katib_name
    assert spec.get("algorithmSettings") == settings


def test_seed_defaults_to_one_derived_from_the_uid() -> None:
    first = experiment_spec(tunejob(search={"algorithm": "tpe"}))["algorithm"]
    again = experiment_spec(tunejob(search={"algorithm": "tpe"}))["algorithm"]
    assert first == again
    assert int(first["algorithmSettings"][0]["value"]) >= 0


def test_parameters_become_typed_feasible_spaces() -> None:
    log_int = {"name": "hidden", "field": "task.hiddenSize",
               "int": {"min": 8, "max": 256, "log": True}}
    spec = experiment_spec(tunejob(LR, WIDTH, BATCH, MOMENTUM, log_int))
    by_name = {p["name"]: p for p in spec["parameters"]}
    assert by_name["lr"] == {"name": "lr", "parameterType": "double", "feasibleSpace": {
        "min": "1e-3", "max": "0.5", "distribution": "logUniform"}}
    assert by_name["width"] == {"name": "width", "parameterType": "int", "feasibleSpace": {
        "min": "16", "max": "128", "step": "16", "distribution": "uniform"}}
    assert by_name["batch"] == {"name": "batch", "parameterType": "categorical",
                                "feasibleSpace": {"list": ["32", "64", "128"]}}
    assert by_name["momentum"]["feasibleSpace"] == {"min": "0", "max": "0.9",
                                                    "distribution": "uniform"}
    assert by_name["hidden"]["feasibleSpace"]["distribution"] == "logUniform"
    assert [p["name"] for p in spec["parameters"]] == ["lr", "width", "batch", "momentum",
                                                       "hidden"]


def test_median_pruner_becomes_medianstop() -> None:
    job = tunejob(pruner={"algorithm": "median", "minResource": 2},
                  search={"algorithm": "tpe", "startupTrials": 5})
    assert experiment_spec(job)["earlyStopping"] == {
        "algorithmName": "medianstop",
        "algorithmSettings": [{"name": "min_trials_required", "value": "5"},
                              {"name": "start_step", "value": "2"}]}


@pytest.mark.parametrize("pruner", [{"algorithm": "asha"},
                                    {"algorithm": "hyperband", "maxResource": 9}])
def test_asha_and_hyperband_are_refused_naming_spec_pruner(pruner: dict[str, Any]) -> None:
    with pytest.raises(katib.KatibUnsupported, match=r"spec\.pruner\.algorithm"):
        katib.build(tunejob(pruner=pruner))


def test_names_too_long_for_katib_trial_names_are_refused() -> None:
    katib.build(tunejob(name="a" * katib.MAX_EXPERIMENT_NAME))
    with pytest.raises(katib.KatibUnsupported, match=r"metadata\.name"):
        katib.build(tunejob(name="a" * (katib.MAX_EXPERIMENT_NAME + 1)))


# -- the trial template -------------------------------------------------------------------------

def test_trial_template_contract() -> None:
    template = experiment_spec(tunejob(LR, OPTIMIZER))["trialTemplate"]
    assert template["primaryContainerName"] == "trainer"
    assert template["primaryPodLabels"] == {"cogwork.dev/role": "worker",
                                            "cogwork.dev/node-index": "0"}
    assert template["successCondition"] == \
        'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
    assert template["failureCondition"] == \
        'status.conditions.#(type=="Failed")#|#(status=="True")#'
    assert template["retain"] is True
    assert [(p["name"], p["reference"]) for p in template["trialParameters"]] == \
        [("lr", "lr"), ("opt", "opt"), ("cogworkTrialName", "${trialSpec.Name}")]


def test_string_fields_inline_trial_spec_is_our_trainjob_after_substitution() -> None:
    job = tunejob(LR, OPTIMIZER, ENV_DROPOUT)
    objects = katib.build(job)
    assert objects.config_map is None
    trial_spec = objects.experiment["spec"]["trialTemplate"]["trialSpec"]
    assert (trial_spec["apiVersion"], trial_spec["kind"]) == ("cogwork.dev/v1alpha1", "TrainJob")
    assert "name" not in trial_spec["metadata"]  # Katib refuses a named template
    task = trial_spec["spec"]["task"]
    assert task["learningRate"] == "${trialParameters.lr}"
    assert task["optimizer"] == "${trialParameters.opt}"
    assert {"name": "DROPOUT", "value": "${trialParameters.dropout}"} in trial_spec["spec"]["env"]
    # Katib marshals the inline trialSpec to JSON, replaces the text, parses it back.
    text = substitute(json.dumps(trial_spec), {"lr": "0.0125", "opt": "adam",
                                               "dropout": "0.25",
                                               "cogworkTrialName": "search-abcd1234"})
    trial = as_trial(json.loads(text))
    # Every node knows it is Katib trial search-abcd1234 (rank 0 may not be node 0).
    assert any(e.name == "KATIB_TRIAL_NAME" and e.value == "search-abcd1234"
               for e in trial.spec.env)
    assert trial.spec.task is not None
    assert (trial.spec.task.learning_rate, trial.spec.task.optimizer) == ("0.0125", "adam")
    assert any(e.name == "DROPOUT" and e.value == "0.25" for e in trial.spec.env)
    assert trial.metadata.labels == {"cogwork.dev/tunejob": "search"}


def test_integer_fields_go_through_a_yaml_template_that_substitutes_to_integers() -> None:
    job = tunejob(LR, WIDTH, BATCH)
    objects = katib.build(job)
    template = objects.experiment["spec"]["trialTemplate"]
    assert "trialSpec" not in template
    assert template["configMap"] == {"configMapName": "search-katib-trial",
                                     "configMapNamespace": "ml",
                                     "templatePath": "trialTemplate.yaml"}
    assert objects.config_map is not None
    assert objects.config_map["metadata"]["name"] == "search-katib-trial"
    text = objects.config_map["data"]["trialTemplate.yaml"]
    assert "batchSize: ${trialParameters.batch}\n" in text  # unquoted: becomes an integer
    assert "learningRate: '${trialParameters.lr}'\n" in text  # quoted: stays a string
    trial = as_trial(yaml.safe_load(substitute(text, {"lr": "0.01", "width": "64",
                                                      "batch": "32"})))
    assert trial.spec.task is not None
    assert (trial.spec.task.batch_size, trial.spec.task.hidden_size,
            trial.spec.task.learning_rate) == (32, 64, "0.01")
    # Katib's webhook checks the template with every placeholder set to "test-value".
    checked = yaml.safe_load(substitute(text, dict.fromkeys(("lr", "width", "batch"),
                                                            "test-value")))
    assert (checked["apiVersion"], checked["kind"]) == ("cogwork.dev/v1alpha1", "TrainJob")


def test_template_keeps_the_rest_of_the_trial_template() -> None:
    job = tunejob(LR, trialTemplate={"task": {"name": "image-classification", "epochs": 3},
                                     "data": {"dataset": "digits"},
                                     "nodes": {"min": 1, "max": 2}})
    spec = experiment_spec(job)["trialTemplate"]["trialSpec"]["spec"]
    assert spec["task"]["epochs"] == 3
    assert spec["nodes"] == {"min": 1, "max": 2}
    assert spec["stop"] is False


# -- status mirroring ---------------------------------------------------------------------------

OPTIMAL = {"bestTrialName": "search-x7k2m9qp",
           "observation": {"metrics": [{"name": "val_accuracy", "latest": "0.9612",
                                        "max": "0.97", "min": "0.41"},
                                       {"name": "loss", "latest": "0.12"}]},
           "parameterAssignments": [{"name": "width", "value": "64"},
                                    {"name": "lr", "value": "0.0125"},
                                    {"name": "batch", "value": "32"}]}


def experiment(conditions: list[dict[str, str]] | None = None, **status: Any) -> dict[str, Any]:
    body = katib.build(tunejob()).experiment
    body["status"] = {"conditions": conditions or [], **status}
    return body


def conditions_of(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_current_optimal_trial_becomes_best_trial() -> None:
    best = katib_status.best_trial(tunejob(), {"currentOptimalTrial": OPTIMAL})
    assert best is not None and to_wire(best) == {
        "name": "search-x7k2m9qp", "index": -1, "value": 0.9612,
        "params": {"batch": "32", "lr": "0.0125", "width": "64"}}
    minimize = tunejob(objective={"metric": "loss", "direction": "minimize"})
    best_loss = katib_status.best_trial(minimize, {"currentOptimalTrial": OPTIMAL})
    assert best_loss is not None and best_loss.value == 0.12


def test_no_best_trial_until_katib_has_an_observation() -> None:
    job = tunejob()
    assert katib_status.best_trial(job, {}) is None
    assert katib_status.best_trial(job, {"currentOptimalTrial": {"bestTrialName": ""}}) is None
    no_metric = {**OPTIMAL, "observation": {"metrics": [{"name": "loss", "latest": "0.1"}]}}
    assert katib_status.best_trial(job, {"currentOptimalTrial": no_metric}) is None
    unavailable = {**OPTIMAL, "observation": {"metrics": [{"name": "val_accuracy",
                                                           "latest": "unavailable"}]}}
    assert katib_status.best_trial(job, {"currentOptimalTrial": unavailable}) is None


def test_not_installed_sets_engine_ready_false_and_creates_nothing() -> None:
    actions = katib_status.reconcile(tunejob(engine="katib"), None, False, NOW)
    assert actions.create == []
    assert conditions_of(actions.status)["EngineReady"] == ("False", "KatibNotInstalled")
    assert actions.status["phase"] == "Pending"
    assert actions.events and actions.events[0][1] == "KatibNotInstalled"


def test_absent_experiment_is_created_after_its_template() -> None:
    actions = katib_status.reconcile(tunejob(engine="katib"), None, True, NOW)
    assert [c["kind"] for c in actions.create] == ["ConfigMap", "Experiment"]
    assert conditions_of(actions.status)["EngineReady"] == ("True", "ExperimentCreated")
    assert actions.status["phase"] == "Running"


def test_unsupported_spec_fails_with_engine_error() -> None:
    actions = katib_status.reconcile(tunejob(engine="katib", pruner={"algorithm": "asha"}),
                                     None, True, NOW)
    assert actions.create == []
    assert conditions_of(actions.status)["Failed"] == ("True", "EngineError")
    failed = next(c for c in actions.status["conditions"] if c["type"] == "Failed")
    assert "spec.pruner.algorithm asha" in failed["message"]


def test_running_experiment_is_mirrored() -> None:
    body = experiment([{"type": "Running", "status": "True", "reason": "ExperimentRunning"}],
                      trials=5, trialsRunning=1, trialsPending=1, trialsSucceeded=2,
                      trialsFailed=1, currentOptimalTrial=OPTIMAL)
    actions = katib_status.reconcile(tunejob(engine="katib"), body, True, NOW)
    assert actions.create == []
    assert actions.status["trials"] == {"created": 5, "running": 2, "completed": 2,
                                        "pruned": 0, "failed": 1}
    assert actions.status["trialsText"] == "3/8"
    assert actions.status["bestTrial"]["value"] == 0.9612
    assert actions.status["phase"] == "Running"
    assert actions.patches("Experiment") == {}


def test_budget_change_patches_the_experiment() -> None:
    job = tunejob(engine="katib", budget={"maxTrials": 20, "parallelTrials": 2})
    actions = katib_status.reconcile(job, experiment(), True, NOW)
    assert actions.patches("Experiment") == {"search": {"spec": {"maxTrialCount": 20}}}


def test_succeeded_experiment_succeeds_and_promotes_the_best_parameters() -> None:
    body = experiment([{"type": "Succeeded", "status": "True",
                        "reason": "ExperimentMaxTrialsReached", "message": "max trials"}],
                      trials=8, trialsSucceeded=8, currentOptimalTrial=OPTIMAL)
    job = tunejob(engine="katib", promote={"enabled": True})
    actions = katib_status.reconcile(job, body, True, NOW)
    assert conditions_of(actions.status)["Succeeded"] == ("True", "ExperimentMaxTrialsReached")
    assert actions.status["phase"] == "Succeeded"
    assert actions.status["promotedTrainJob"] == "search-best"
    [promoted] = actions.create
    task = promoted["spec"]["task"]
    assert (task["hiddenSize"], task["batchSize"], task["learningRate"]) == (64, 32, "0.0125")
    # Sticky: the next pass sees a finished TuneJob and creates nothing again.
    done = tunejob(engine="katib", promote={"enabled": True}, status=actions.status)
    assert katib_status.reconcile(done, body, True, NOW).create == []


def test_failed_experiment_fails_the_tunejob() -> None:
    body = experiment([{"type": "Failed", "status": "True",
                        "reason": "ExperimentMaxFailedTrialsReached", "message": "too many"}])
    actions = katib_status.reconcile(tunejob(engine="katib"), body, True, NOW)
    assert conditions_of(actions.status)["Failed"] == ("True", "ExperimentMaxFailedTrialsReached")
    assert actions.status["phase"] == "Failed"
