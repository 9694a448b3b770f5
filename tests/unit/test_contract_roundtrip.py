"""The pod contract read back: the env the operator renders into a worker pod, fed to the
trainer's own config parser, gives the trainer the spec's values. Operator and trainer share no
code but cogwork_sdk, so this is where a renamed variable or a changed format would show."""

from __future__ import annotations

from typing import Any

from cogwork.api.trainjob import TrainJob
from cogwork.plan.settings import RenderSettings
from cogwork.plan.trainjob_render import worker_pod
from cogwork_trainer.config import from_env

SETTINGS = RenderSettings(report_base_url="https://10.0.0.1:8443")
# What the kubelet fills in for the downward-API variables.
DOWNWARD = {"status.podIP": "10.1.2.3", "metadata.name": "digits-node-0",
            "metadata.namespace": "ml"}


def pod_env(pod: dict[str, Any]) -> dict[str, str]:
    """The trainer container's environment as the kubelet would set it."""
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "trainer")
    env: dict[str, str] = {}
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            env[entry["name"]] = DOWNWARD[entry["valueFrom"]["fieldRef"]["fieldPath"]]
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
    assert config.report_url is not None and config.report_url.startswith(
        "https://10.0.0.1:8443/")
    assert "digits" in config.report_url
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
