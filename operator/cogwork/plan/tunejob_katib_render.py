"""The Katib engine: a TuneJob as a Katib v1beta1 Experiment whose trials are our TrainJobs. Pure.

Built with Katib's own generated API models (`kubeflow-katib-api`, pydantic v2: the same
release as the katib SDK, without its grpc/kubernetes-client dependencies) and serialized by
alias, the pydantic form of the SDK's `attribute_map`, so no `kubernetes` client version can
change the wire shape.

Katib passes a trial's parameters by TEXT substitution of `${trialParameters.<name>}` in the
trial template, so each placeholder sits exactly in the typed TrainJob field its parameter
targets. An inline `trialSpec` reaches Katib as JSON, where a placeholder can only be a string:
right for decimal and choice fields (strings in our API) and env values, wrong for integer fields
(`"batchSize": "64"` fails our schema). When a parameter targets an integer field, the template
therefore goes into a ConfigMap as YAML with that placeholder unquoted, so `batchSize: 64`
parses as an integer after substitution.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml
from kubeflow_katib_api.models import (
    V1beta1AlgorithmSetting,
    V1beta1AlgorithmSpec,
    V1beta1CollectorSpec,
    V1beta1ConfigMapSource,
    V1beta1EarlyStoppingSetting,
    V1beta1EarlyStoppingSpec,
    V1beta1Experiment,
    V1beta1ExperimentSpec,
    V1beta1FeasibleSpace,
    V1beta1MetricsCollectorSpec,
    V1beta1MetricStrategy,
    V1beta1ObjectiveSpec,
    V1beta1ParameterSpec,
    V1beta1TrialParameterSpec,
    V1beta1TrialTemplate,
)
from kubeflow_katib_api.models.io_k8s_apimachinery_pkg_apis_meta_v1_object_meta import (
    IoK8sApimachineryPkgApisMetaV1ObjectMeta as ObjectMeta,
)

from cogwork.api import contract
from cogwork.api.common import API_VERSION, to_wire
from cogwork.api.trainjob import MAX_NAME_LENGTH as TRAINJOB_MAX_NAME
from cogwork.api.tunejob import TuneJob
from cogwork.api.tunejob_spec import INTEGER_FIELDS, Parameter
from cogwork.plan.trainjob_render import TRAINER_CONTAINER
from cogwork.plan.tunejob_katib_names import KATIB_API_VERSION, experiment_name
from cogwork.plan.tunejob_observe import LABEL_TUNEJOB
from cogwork.plan.tunejob_seeds import base_seed

# Katib names trials <experiment>-<8 random characters>, and a trial TrainJob must fit in 54.
MAX_EXPERIMENT_NAME = TRAINJOB_MAX_NAME - 9
# Our search algorithms -> Katib suggestion services (katib-config `suggestion` entries).
ALGORITHMS = {"tpe": "tpe", "random": "random", "grid": "grid", "cmaes": "cmaes",
              "gp": "bayesianoptimization", "qmc": "sobol"}
# The services that accept a `random_state` setting (hyperopt, goptuna, skopt).
SEEDED_ALGORITHMS = ("tpe", "random", "cmaes", "bayesianoptimization")
# GJSON over the trial TrainJob, as Katib documents for custom resources.
SUCCESS_CONDITION = 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
FAILURE_CONDITION = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
# Node 0: the pod Katib watches and injects its env into (rank 0, which pushes, may be another).
PRIMARY_POD_LABELS = {contract.LABEL_ROLE: contract.ROLE_WORKER, contract.LABEL_NODE_INDEX: "0"}
TEMPLATE_KEY = "trialTemplate.yaml"
# Katib's webhook sets KATIB_TRIAL_NAME on node 0's pod only, but torchrun may make a pod of
# another node rank 0 (ranks follow node addresses), and rank 0 pushes the metrics. So every
# node gets it, from Katib's metadata reference to the trial's own name.
TRIAL_NAME_PARAMETER = "cogworkTrialName"
TRIAL_NAME_ENV = "KATIB_TRIAL_NAME"
PLACEHOLDER_PREFIX = "${trialParameters."


class KatibUnsupported(ValueError):
    """The TuneJob asks for something Katib cannot do; the message names the field."""


class IntPlaceholder(str):
    """A placeholder in an integer field: written unquoted into the YAML template."""


@dataclass
class KatibObjects:
    """What the engine creates: the Experiment and, for integer parameters, its template."""

    experiment: dict[str, Any]
    config_map: dict[str, Any] | None = None


def config_map_name(job: TuneJob) -> str:
    return f"{job.metadata.name}-katib-trial"


def placeholder(parameter: Parameter) -> str:
    return f"{PLACEHOLDER_PREFIX}{parameter.name}}}"


def check_supported(job: TuneJob) -> None:
    """Refuse what has no Katib equivalent, before anything is created."""
    name = job.metadata.name
    if len(name) > MAX_EXPERIMENT_NAME:
        raise KatibUnsupported(
            f"metadata.name must be at most {MAX_EXPERIMENT_NAME} characters with spec.engine "
            f"katib: Katib names trials <experiment>-<8 characters> and trial TrainJob names "
            f"must fit in {TRAINJOB_MAX_NAME}")
    pruner = job.spec.pruner.algorithm
    if pruner in ("asha", "hyperband"):
        raise KatibUnsupported(
            f"spec.pruner.algorithm {pruner} is not supported with spec.engine katib: Katib's "
            "only early stopping is medianstop (use median or none, or spec.engine builtin)")


# -- the Experiment spec ------------------------------------------------------------------------

def objective_spec(job: TuneJob) -> V1beta1ObjectiveSpec:
    objective = job.spec.objective
    return V1beta1ObjectiveSpec(
        type=objective.direction,
        objective_metric_name=objective.metric,
        goal=float(objective.goal) if objective.goal is not None else None,
        # The last reported value ranks a trial, as in the builtin engine (Katib's default
        # would take the best value seen during training).
        metric_strategies=[V1beta1MetricStrategy(name=objective.metric, value="latest")],
    )


def algorithm_spec(job: TuneJob) -> V1beta1AlgorithmSpec:
    search = job.spec.search
    name = ALGORITHMS[search.algorithm]
    settings = []
    if name in SEEDED_ALGORITHMS:
        settings.append(V1beta1AlgorithmSetting(name="random_state", value=str(base_seed(job))))
    if name == "bayesianoptimization":
        settings.append(V1beta1AlgorithmSetting(name="n_initial_points",
                                                value=str(max(1, search.startup_trials))))
    return V1beta1AlgorithmSpec(algorithm_name=name, algorithm_settings=settings or None)


def early_stopping_spec(job: TuneJob) -> V1beta1EarlyStoppingSpec | None:
    pruner = job.spec.pruner
    if pruner.algorithm != "median":
        return None
    return V1beta1EarlyStoppingSpec(algorithm_name="medianstop", algorithm_settings=[
        V1beta1EarlyStoppingSetting(name="min_trials_required",
                                    value=str(max(1, job.spec.search.startup_trials))),
        V1beta1EarlyStoppingSetting(name="start_step", value=str(pruner.min_resource)),
    ])


def parameter_spec(parameter: Parameter) -> V1beta1ParameterSpec:
    """One parameter as Katib's typed feasible space (bounds are strings in Katib's API)."""
    if parameter.uniform is not None:
        kind, space = "double", V1beta1FeasibleSpace(
            min=parameter.uniform.min, max=parameter.uniform.max, distribution="uniform")
    elif parameter.log_uniform is not None:
        kind, space = "double", V1beta1FeasibleSpace(
            min=parameter.log_uniform.min, max=parameter.log_uniform.max,
            distribution="logUniform")
    elif parameter.int_range is not None:
        r = parameter.int_range
        kind, space = "int", V1beta1FeasibleSpace(
            min=str(r.min), max=str(r.max), step=str(r.step),
            distribution="logUniform" if r.log else "uniform")
    else:
        assert parameter.categorical is not None  # the model guarantees one distribution
        kind, space = "categorical", V1beta1FeasibleSpace(list=list(parameter.categorical.values))
    return V1beta1ParameterSpec(name=parameter.name, parameter_type=kind, feasible_space=space)


# -- the trial template -------------------------------------------------------------------------

def needs_config_map(job: TuneJob) -> bool:
    return any(p.field in INTEGER_FIELDS for p in job.spec.parameters)


def trial_manifest(job: TuneJob) -> dict[str, Any]:
    """Our TrainJob with each parameter's placeholder in the field (or env) it targets.

    No name or namespace: Katib names each trial's TrainJob after the trial."""
    spec = copy.deepcopy(to_wire(job.spec.trial_template))
    env = [e for e in spec.get("env") or [] if e.get("name") != TRIAL_NAME_ENV]
    spec["env"] = [*env, {"name": TRIAL_NAME_ENV,
                          "value": f"{PLACEHOLDER_PREFIX}{TRIAL_NAME_PARAMETER}}}"}]
    for parameter in job.spec.parameters:
        text = placeholder(parameter)
        if parameter.env is not None:
            env = [e for e in spec.get("env") or [] if e.get("name") != parameter.env]
            spec["env"] = [*env, {"name": parameter.env, "value": text}]
            continue
        assert parameter.field is not None  # the model guarantees field xor env
        section, key = parameter.field.split(".", 1)
        integer = parameter.field in INTEGER_FIELDS
        spec.setdefault(section, {})[key] = IntPlaceholder(text) if integer else text
    return {"apiVersion": API_VERSION, "kind": "TrainJob",
            "metadata": {"labels": {LABEL_TUNEJOB: job.metadata.name}}, "spec": spec}


class _TemplateDumper(yaml.SafeDumper):
    """Placeholders in string fields stay quoted ('0.01' must stay a string after
    substitution); placeholders in integer fields are plain, so `64` parses as an integer."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "'" if PLACEHOLDER_PREFIX in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _represent_int_placeholder(dumper: yaml.SafeDumper, value: IntPlaceholder) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style="")


_TemplateDumper.add_representer(str, _represent_str)
_TemplateDumper.add_representer(IntPlaceholder, _represent_int_placeholder)


def template_yaml(manifest: dict[str, Any]) -> str:
    return yaml.dump(manifest, Dumper=_TemplateDumper, default_flow_style=False,
                     sort_keys=False)


def trial_template(job: TuneJob) -> V1beta1TrialTemplate:
    manifest = trial_manifest(job)
    source: dict[str, Any] = {}
    if needs_config_map(job):
        source["config_map"] = V1beta1ConfigMapSource(
            config_map_name=config_map_name(job), config_map_namespace=job.metadata.namespace,
            template_path=TEMPLATE_KEY)
    else:
        source["trial_spec"] = manifest
    return V1beta1TrialTemplate(
        primary_container_name=TRAINER_CONTAINER,
        primary_pod_labels=dict(PRIMARY_POD_LABELS),
        success_condition=SUCCESS_CONDITION,
        failure_condition=FAILURE_CONDITION,
        # Keep finished trial TrainJobs, as the builtin engine does: per-trial detail lives there.
        retain=True,
        trial_parameters=[*(V1beta1TrialParameterSpec(
            name=p.name, reference=p.name,
            description=f"{p.field or 'env ' + str(p.env)} of the trial TrainJob")
            for p in job.spec.parameters), V1beta1TrialParameterSpec(
            name=TRIAL_NAME_PARAMETER, reference="${trialSpec.Name}",
            description=f"the trial's name, as {TRIAL_NAME_ENV} on every node")],
        **source,
    )


# -- the whole thing ----------------------------------------------------------------------------

def build(job: TuneJob) -> KatibObjects:
    """The Experiment (and template ConfigMap) for `job`; raises KatibUnsupported."""
    check_supported(job)
    budget = budget_fields(job)
    labels = {LABEL_TUNEJOB: job.metadata.name}
    experiment = V1beta1Experiment(
        api_version=KATIB_API_VERSION,
        kind="Experiment",
        metadata=ObjectMeta(name=experiment_name(job), namespace=job.metadata.namespace,
                            labels=labels),
        spec=V1beta1ExperimentSpec(
            objective=objective_spec(job),
            algorithm=algorithm_spec(job),
            early_stopping=early_stopping_spec(job),
            parameters=[parameter_spec(p) for p in job.spec.parameters],
            max_trial_count=budget["maxTrialCount"],
            parallel_trial_count=budget["parallelTrialCount"],
            max_failed_trial_count=budget["maxFailedTrialCount"],
            # Our trainer pushes its metrics: no sidecar to inject (docs/tunejob.md).
            metrics_collector_spec=V1beta1MetricsCollectorSpec(
                collector=V1beta1CollectorSpec(kind="Push")),
            trial_template=trial_template(job),
        ),
    )
    config_map = None
    if needs_config_map(job):
        config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": config_map_name(job),
                                   "namespace": job.metadata.namespace, "labels": labels},
                      "data": {TEMPLATE_KEY: template_yaml(trial_manifest(job))}}
    return KatibObjects(experiment=serialize(experiment), config_map=config_map)


def serialize(model: Any) -> dict[str, Any]:
    """Katib's wire shape: camelCase aliases, no nulls; plain dicts/lists/str/int/float."""
    out: dict[str, Any] = model.to_dict()
    return out


def budget_fields(job: TuneJob) -> dict[str, int]:
    budget = job.spec.budget
    return {"maxTrialCount": budget.max_trials, "parallelTrialCount": budget.parallel_trials,
            # Katib refuses maxFailedTrialCount > maxTrialCount; the meaning is the same.
            "maxFailedTrialCount": min(budget.max_failed_trials, budget.max_trials)}


def budget_patch(job: TuneJob, experiment: dict[str, Any]) -> dict[str, Any] | None:
    """The three fields Katib lets us edit, when spec.budget moved since the Experiment was made."""
    spec = experiment.get("spec") or {}
    changed = {k: v for k, v in budget_fields(job).items() if spec.get(k) != v}
    return {"spec": changed} if changed else None
