from __future__ import annotations

import json

import pytest
from cogwork_trainer.config import ConfigError, ScriptConfig, TaskConfig, from_env


def env(**kw: str) -> dict[str, str]:
    return {"COGWORK_CHECKPOINT_DIR": "/ckpt", **kw}


def test_minimal_env_gives_the_default_task() -> None:
    cfg = from_env(env(COGWORK_TASK="{}"), cuda_available=False)
    assert cfg.task == TaskConfig()
    assert cfg.script is None
    assert (cfg.backend, cfg.checkpoint_every, cfg.control_dir, cfg.report_url) == (
        "gloo", 0, None, None)


def test_task_fields_are_parsed_and_learning_rate_is_a_string() -> None:
    doc = {"name": "image-classification", "dataset": "/data/labels.npz", "model": "CNN",
           "epochs": 3, "batchSize": 32, "learningRate": "1e-3", "optimizer": "adamw",
           "hiddenSize": 16, "seed": 7, "testFraction": "0.25"}
    task = from_env(env(COGWORK_TASK=json.dumps(doc)), cuda_available=False).task
    assert task == TaskConfig(dataset="/data/labels.npz", model="cnn", epochs=3, batch_size=32,
                              learning_rate=1e-3, optimizer="adamw", hidden_size=16, seed=7,
                              test_fraction=0.25)


@pytest.mark.parametrize("doc", [
    {"learningRate": "fast"}, {"epochs": 0}, {"batchSize": 2.5}, {"model": "resnet"},
    {"optimizer": "lbfgs"}, {"testFraction": "1.5"}, {"dataset": "imagenet"}, {"epochs": True},
])
def test_bad_task_fields_are_rejected(doc: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        from_env(env(COGWORK_TASK=json.dumps(doc)), cuda_available=False)


def test_script_mode() -> None:
    doc = {"script": {"module": "my.train", "args": ["--lr", 3]}}
    cfg = from_env(env(COGWORK_TASK=json.dumps(doc)), cuda_available=False)
    assert cfg.task is None
    assert cfg.script == ScriptConfig(module="my.train", args=("--lr", "3"))


def test_contract_env_names() -> None:
    cfg = from_env(env(
        COGWORK_TASK="{}", COGWORK_CHECKPOINT_EVERY="50", COGWORK_CHECKPOINT_KEEP="3",
        COGWORK_CONTROL_DIR="/etc/cogwork", COGWORK_REPORT_URL="https://op:8443/v1/report",
        COGWORK_REPORT_TOKEN_FILE="/var/run/token", COGWORK_REPORT_CA="-----BEGIN CERT",
        COGWORK_BACKEND="nccl"), cuda_available=True)
    assert (cfg.checkpoint_every, cfg.checkpoint_keep, cfg.control_dir) == (50, 3, "/etc/cogwork")
    assert cfg.report_url == "https://op:8443/v1/report"
    assert cfg.report_token_file == "/var/run/token"
    assert cfg.report_ca == "-----BEGIN CERT"
    assert cfg.backend == "nccl"


def test_nccl_falls_back_to_gloo_without_cuda() -> None:
    cfg = from_env(env(COGWORK_TASK="{}", COGWORK_BACKEND="nccl"), cuda_available=False)
    assert cfg.backend == "gloo"


@pytest.mark.parametrize("e", [
    {"COGWORK_TASK": "{}"},  # no checkpoint dir
    {"COGWORK_TASK": "[1]", "COGWORK_CHECKPOINT_DIR": "/c"},
    {"COGWORK_TASK": "{nope", "COGWORK_CHECKPOINT_DIR": "/c"},
    {"COGWORK_TASK": '{"script": {"args": []}}', "COGWORK_CHECKPOINT_DIR": "/c"},
])
def test_broken_env_is_a_config_error(e: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        from_env(e, cuda_available=False)
