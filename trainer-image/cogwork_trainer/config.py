"""The pod contract's environment (docs/pod-contract.md), parsed once into frozen dataclasses.

Only COGWORK_TASK and COGWORK_CHECKPOINT_DIR are needed for a local run; every other name has a
default so that `torchrun ... -m cogwork_trainer.train` works outside Kubernetes too.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cogwork_sdk import contract

log = logging.getLogger(__name__)

MODELS = ("mlp", "cnn")
OPTIMIZERS = ("sgd", "adam", "adamw")
BACKENDS = ("gloo", "nccl")
TASK_NAMES = ("image-classification",)

# Keys of a built-in task; anything else is ignored with a warning (the operator may add fields
# this trainer version does not know yet, and an unknown key must not kill a running job).
_TASK_KEYS = {
    "name", "dataset", "model", "epochs", "batchSize", "learningRate", "optimizer",
    "hiddenSize", "seed", "testFraction", "momentum", "weightDecay", "failOnNonFiniteLoss",
}


class ConfigError(ValueError):
    """The environment breaks the pod contract; the job cannot start."""


@dataclass(frozen=True)
class TaskConfig:
    """A built-in task. Defaults reach >= 0.95 test accuracy on digits at world 1 and 2."""

    name: str = "image-classification"
    dataset: str = "digits"  # bundled name, or a path to an .npz file with arrays x and y
    model: str = "mlp"
    epochs: int = 12
    batch_size: int = 64  # GLOBAL batch: constant whatever the world size
    learning_rate: float = 0.05
    optimizer: str = "sgd"
    hidden_size: int = 128
    seed: int = 0
    test_fraction: float = 0.2
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    fail_on_non_finite_loss: bool = True  # a NaN/inf loss exits EXIT_NON_FINITE_LOSS


@dataclass(frozen=True)
class ScriptConfig:
    """User code run as __main__ under the same env contract."""

    module: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    task: TaskConfig | None
    script: ScriptConfig | None
    checkpoint_dir: str
    checkpoint_every: int = 0  # 0: only at the end (and on request)
    checkpoint_keep: int = 2
    control_dir: str | None = None
    report_url: str | None = None
    report_token_file: str | None = None
    report_ca: str | None = None  # PEM text (or a path to a PEM file)
    backend: str = "gloo"
    heartbeat_file: str = contract.HEARTBEAT_FILE
    collective_timeout_s: float = 60.0
    step_delay_s: float = 0.0  # demos/tests: slow each step down so jobs can be scaled mid-run
    job_name: str = ""


def _int(raw: Any, key: str, minimum: int) -> int:
    if isinstance(raw, bool):
        raise ConfigError(f"{key}: expected an integer, got {raw!r}")
    try:
        value = int(raw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}: expected an integer, got {raw!r}") from e
    if isinstance(raw, float) and raw != value:
        raise ConfigError(f"{key}: expected an integer, got {raw!r}")
    if value < minimum:
        raise ConfigError(f"{key}: must be >= {minimum}, got {value}")
    return value


def _float(raw: Any, key: str) -> float:
    # Learning rates travel as strings in the spec (no floats in CRDs); accept numbers too.
    if isinstance(raw, bool):
        raise ConfigError(f"{key}: expected a number, got {raw!r}")
    try:
        return float(raw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}: expected a number, got {raw!r}") from e


def _choice(raw: Any, key: str, choices: tuple[str, ...]) -> str:
    value = str(raw).lower()
    if value not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(choices)}, got {raw!r}")
    return value


def parse_task(doc: Mapping[str, Any]) -> TaskConfig:
    unknown = sorted(set(doc) - _TASK_KEYS)
    if unknown:
        log.warning("%s: ignoring unknown keys %s", contract.ENV_TASK, unknown)
    d = TaskConfig()
    lr = _float(doc.get("learningRate", d.learning_rate), "learningRate")
    test_fraction = _float(doc.get("testFraction", d.test_fraction), "testFraction")
    if not lr > 0:
        raise ConfigError(f"learningRate: must be > 0, got {lr}")
    if not math.isfinite(lr):  # the API refuses it; a hand-made COGWORK_TASK may not
        raise ConfigError(f"learningRate: must be a finite number, got {lr}")
    if not 0 < test_fraction < 1:
        raise ConfigError(f"testFraction: must be in (0, 1), got {test_fraction}")
    dataset = str(doc.get("dataset", d.dataset))
    if dataset != "digits" and not dataset.endswith(".npz"):
        raise ConfigError(f"dataset: 'digits' or a path ending in .npz, got {dataset!r}")
    return TaskConfig(
        name=_choice(doc.get("name", d.name), "name", TASK_NAMES),
        dataset=dataset,
        model=_choice(doc.get("model", d.model), "model", MODELS),
        epochs=_int(doc.get("epochs", d.epochs), "epochs", 1),
        batch_size=_int(doc.get("batchSize", d.batch_size), "batchSize", 1),
        learning_rate=lr,
        optimizer=_choice(doc.get("optimizer", d.optimizer), "optimizer", OPTIMIZERS),
        hidden_size=_int(doc.get("hiddenSize", d.hidden_size), "hiddenSize", 1),
        seed=_int(doc.get("seed", d.seed), "seed", 0),
        test_fraction=test_fraction,
        momentum=_float(doc.get("momentum", d.momentum), "momentum"),
        weight_decay=_float(doc.get("weightDecay", d.weight_decay), "weightDecay"),
        fail_on_non_finite_loss=doc.get("failOnNonFiniteLoss") is not False,
    )


def parse_script(doc: Any) -> ScriptConfig:
    if not isinstance(doc, Mapping) or not isinstance(doc.get("module"), str) or not doc["module"]:
        raise ConfigError('script: expected {"module": "<python module>", "args": [...]}')
    args = doc.get("args", [])
    if not isinstance(args, list):
        raise ConfigError("script.args: expected a list of strings")
    return ScriptConfig(module=doc["module"], args=tuple(str(a) for a in args))


def _backend(env: Mapping[str, str], cuda_available: bool) -> str:
    requested = _choice(env.get(contract.ENV_BACKEND, "gloo") or "gloo", contract.ENV_BACKEND,
                        BACKENDS)
    if requested == "nccl" and not cuda_available:
        # A GPU pod whose device plugin failed should still say why, not hang in NCCL init.
        log.warning("%s=nccl but CUDA is not available; using gloo", contract.ENV_BACKEND)
        return "gloo"
    return requested


def from_env(env: Mapping[str, str] | None = None, cuda_available: bool | None = None) -> Config:
    env = os.environ if env is None else env
    if cuda_available is None:
        import torch  # late: keeps config importable (and fast) without touching CUDA

        cuda_available = torch.cuda.is_available()

    raw_task = env.get(contract.ENV_TASK, "").strip()
    try:
        doc = json.loads(raw_task) if raw_task else {}
    except json.JSONDecodeError as e:
        raise ConfigError(f"{contract.ENV_TASK} is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ConfigError(f"{contract.ENV_TASK} must be a JSON object")
    task: TaskConfig | None = None
    script: ScriptConfig | None = None
    if "script" in doc:
        script = parse_script(doc["script"])
    else:
        task = parse_task(doc)

    checkpoint_dir = env.get(contract.ENV_CHECKPOINT_DIR, "").strip()
    if not checkpoint_dir:
        raise ConfigError(f"{contract.ENV_CHECKPOINT_DIR} is not set")

    def opt(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    return Config(
        task=task,
        script=script,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=_int(env.get(contract.ENV_CHECKPOINT_EVERY, "0") or "0",
                              contract.ENV_CHECKPOINT_EVERY, 0),
        checkpoint_keep=_int(env.get(contract.ENV_CHECKPOINT_KEEP, "2") or "2",
                             contract.ENV_CHECKPOINT_KEEP, 1),
        control_dir=opt(contract.ENV_CONTROL_DIR),
        report_url=opt(contract.ENV_REPORT_URL),
        report_token_file=opt(contract.ENV_REPORT_TOKEN_FILE),
        report_ca=opt(contract.ENV_REPORT_CA),
        backend=_backend(env, cuda_available),
        heartbeat_file=opt(contract.ENV_HEARTBEAT_FILE) or contract.HEARTBEAT_FILE,
        collective_timeout_s=_float(env.get(contract.ENV_COLLECTIVE_TIMEOUT, "60") or "60",
                                    contract.ENV_COLLECTIVE_TIMEOUT),
        step_delay_s=_float(env.get(contract.ENV_STEP_DELAY_SECONDS, "0") or "0",
                            contract.ENV_STEP_DELAY_SECONDS),
        job_name=env.get(contract.ENV_JOB_NAME, ""),
    )
