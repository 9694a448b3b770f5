"""The pod contract read back: the env the operator renders into a worker pod (and a LabelJob
step pod), fed to the trainer's own config parsers, gives the trainer the spec's values.
Operator and trainer share no code but cogwork_sdk, so this is where a renamed variable or a
changed format would show."""

from __future__ import annotations

from typing import Any

from cogwork.api.labeljob import LabelJob
from cogwork.api.trainjob import TrainJob
from cogwork.plan.labeljob_render import pod_layout, step_pod
from cogwork.plan.labeljob_steps import ModelRef, steps
from cogwork.plan.settings import RenderSettings
from cogwork.plan.trainjob_render import worker_pod
from cogwork_sdk import contract
from cogwork_trainer.config import from_env
from cogwork_trainer.labeling import config as labeling_config

SETTINGS = RenderSettings(report_base_url="https://10.0.0.1:8443")
# What the kubelet fills in for the downward-API variables.
DOWNWARD = {"status.podIP": "10.1.2.3", "metadata.name": "digits-node-0",
            "metadata.namespace": "ml"}


def pod_env(pod: dict[str, Any]) -> dict[str, str]:
    """The main container's environment as the kubelet would set it: plain values as given,
    downward-API fields filled in, Secret and ConfigMap keys as placeholders."""
    main = pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"]
    container = next(c for c in pod["spec"]["containers"] if c["name"] == main)
    env: dict[str, str] = {}
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "fieldRef" in entry["valueFrom"]:
            env[entry["name"]] = DOWNWARD[entry["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[entry["name"]] = f"<{entry['name']} from a Secret or ConfigMap>"
    return env


def test_the_trainer_reads_back_what_the_operator_rendered() -> None:
    job = TrainJob.model_validate({
        "metadata": {"name": "digits", "namespace": "ml", "uid": "u-1"},
        "spec": {"task": {"name": "image-classification", "model": "cnn", "epochs": 7,
                          "batchSize": 32, "learningRate": "0.02", "optimizer": "adam",
                          "hiddenSize": 96, "seed": 5},
                 "data": {"dataset": "digits"},
                 "checkpoint": {"everySteps": 40, "keep": 3},
                 "nodes": {"min": 1, "max": 2}}})
    config = from_env(pod_env(worker_pod(job, 0, SETTINGS)), cuda_available=False)
    task = config.task
    assert task is not None
    assert (task.model, task.epochs, task.batch_size, task.learning_rate, task.optimizer,
            task.hidden_size, task.seed, task.dataset) == ("cnn", 7, 32, 0.02, "adam", 96, 5,
                                                          "digits")
    assert config.script is None
    assert config.checkpoint_dir == "/cogwork/checkpoints"
    assert (config.checkpoint_every, config.checkpoint_keep) == (40, 3)
    # The route the renderer points pods at is the one the report endpoint serves.
    assert config.report_url == "https://10.0.0.1:8443" + contract.REPORT_PATH.format(
        namespace="ml", name="digits")
    assert config.report_token_file and config.report_token_file.startswith("/var/run/cogwork")
    assert config.control_dir == "/etc/cogwork/control"
    assert config.job_name == "digits"
    assert config.backend == "gloo"


def test_gpus_ask_for_nccl_and_the_trainer_takes_it_when_cuda_is_there() -> None:
    job = TrainJob.model_validate({
        "metadata": {"name": "digits", "namespace": "ml", "uid": "u-1"},
        "spec": {"task": {"name": "image-classification"}, "data": {"dataset": "digits"},
                 "resources": {"gpu": 2}, "nprocPerNode": 2}})
    env = pod_env(worker_pod(job, 0, SETTINGS))
    assert from_env(env, cuda_available=True).backend == "nccl"
    assert from_env(env, cuda_available=False).backend == "gloo"  # falls back, warns


def test_every_labeljob_step_reads_back_the_spec() -> None:
    job = LabelJob.model_validate({
        "metadata": {"name": "lj", "namespace": "ml", "uid": "u-2", "generation": 1},
        "spec": {"model": {"fromTrainJob": "digits"}, "pool": {"dataset": "digits"},
                 "seed": {"count": 300}, "inference": {"replicas": 2, "batchSize": 512},
                 "review": {"strategy": "entropy", "batchSize": 50, "maxRounds": 2},
                 "autoAccept": {"targetPrecision": "0.97", "confidence": "0.9",
                                "validation": {"humanBudget": 400}},
                 "randomSeed": 7}})
    model = ModelRef("/cogwork/model/model.pt", "digits-g1", "digits-ckpt")
    pods = [step_pod(job, step, model, SETTINGS) for step in steps(job, pod_layout(job), model)]
    assert len(pods) == 3  # score 0, score 1, merge
    for pod in pods:
        env = pod_env(pod)
        assert env[contract.ENV_JOB_NAME] == "lj"
        config = labeling_config.from_env(env)
        assert (config.pool_dataset, config.seed_count) == ("digits", 300)
        assert (config.model_path, config.model_format, config.model_version) == (
            "/cogwork/model/model.pt", "cogwork", "digits-g1")
        assert (config.strategy, config.review_batch, config.max_rounds) == ("entropy", 50, 2)
        assert (config.target_precision, config.confidence, config.validation_budget) == (
            0.97, 0.9, 400)
        assert (config.inference_batch, config.random_seed, config.round) == (512, 7, 0)
        assert config.output.startswith("/cogwork/")
