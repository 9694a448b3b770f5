"""LabelJob -> the steps its pods (or `cogwork run`'s processes) run. Pure, no I/O.

One description of each step (program, arguments, env) serves both the operator, which renders
it into a pod (`cogwork.plan.labeljob_render`), and `cogwork run`, which starts it as a local
process; only the `Layout` (where output, model and data are seen) differs.

Scoring runs as independent shard pods (`--shard-index i --shard-count n`), not as one torchrun
group: the shards never talk to each other, and a lost shard pod is re-run alone instead of
restarting every rank. The pods still follow the pod contract (labels, security, volumes).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from cogwork_sdk import contract as pod_contract

from cogwork.api.common import parse_quantity, to_wire
from cogwork.api.labeljob import LabelJob

Role = Literal["fit", "score", "merge", "push", "collect"]
PRELABEL_MODULE = "cogwork_trainer.labeling.prelabel"
MERGE_MODULE = "cogwork_trainer.labeling.merge"
LABEL_STUDIO_MODULE = "cogwork_trainer.labeling.labelstudio"
REVIEW_MODULE = "cogwork_trainer.labeling.review"
# Copies the score step's code (numpy + torch + stdlib only) and a bootstrap that runs it like
# `python -m` into a directory: how a score pod on the user's image (spec.model.image) gets it.
INSTALL_SCORER_MODULE = "cogwork_trainer.labeling.install_scorer"
SCORER_BOOTSTRAP = "run.py"  # `python DIR/run.py -m MODULE ARGS...`, DIR first on sys.path
CONFIG_ENV = pod_contract.ENV_LABELJOB  # the steps' configuration (cogwork_trainer.labeling.config)
# Where the summary travels to the operator: the container's termination message (<= 4 KiB).
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
LABEL_STUDIO_KEY_ENV = "LABEL_STUDIO_API_KEY"


@dataclass(frozen=True)
class ModelRef:
    """The model that scores the pool: `path` as the steps see it, or a function of the user's
    (`entrypoint`, run in `image`); neither: fit one on the seeds."""

    path: str | None
    version: str
    claim_name: str | None = None  # claim to mount for `path` (cluster only)
    format: str = "cogwork"  # of the file at `path`: cogwork, torchscript or export
    entrypoint: str | None = None  # `package.module:function` (spec.model.entrypoint)
    image: str | None = None  # where the score steps run `entrypoint` (spec.model.image)

    @property
    def fits(self) -> bool:
        """No model given: the fit step trains one on the seed labels first."""
        return self.path is None and self.entrypoint is None


@dataclass(frozen=True)
class Layout:
    """Where the steps see things: mount points in a pod, directories locally."""

    output_dir: str  # the LabelJob's output directory (spec.output.path inside the claim)
    data_dir: str | None  # where spec.pool.claimName is mounted; None: paths are used as given
    summary_path: str | None = TERMINATION_MESSAGE_PATH

    def data_file(self, path: str) -> str:
        """A pool/seed/validation file: inside the pool's claim when it has one."""
        if self.data_dir is None or path.startswith("/"):
            return path
        return f"{self.data_dir.rstrip('/')}/{path}"


@dataclass(frozen=True)
class Step:
    """One process of the job: `python <args>` with `env` (plus the contract env of a pod)."""

    role: Role
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    index: int | None = None  # shard index of a score step
    round: int = 0  # review round (spec.review.maxRounds): each round has its own steps
    # The user's image a score step runs in (spec.model.image); None: the labeling image.
    image: str | None = None


def model_version(job: LabelJob, trainjob_generation: int | None = None) -> str:
    """spec.model.version, else `<trainjob>-g<generation>`, else the model file's name (or the
    entrypoint)."""
    model = job.spec.model
    if model.version:
        return model.version
    if model.from_train_job:
        suffix = f"-g{trainjob_generation}" if trainjob_generation is not None else ""
        return f"{model.from_train_job}{suffix}"
    if model.entrypoint:
        return model.entrypoint
    name = (model.path or "model").rsplit("/", 1)[-1]
    return name.removesuffix(".pt2").removesuffix(".pt") or "model"


def model_config(job: LabelJob, model: ModelRef) -> dict[str, Any] | None:
    """COGWORK_LABELJOB's `model`: the file (and its format) or the entrypoint, with what a
    user's model returns; None: fit one on the seed labels."""
    spec = job.spec.model
    if model.entrypoint is not None:
        doc: dict[str, Any] = {"entrypoint": model.entrypoint}
    elif model.path is not None:
        doc = {"path": model.path}
        if model.format != "cogwork":
            doc["format"] = model.format
    else:
        return None
    if model.entrypoint is not None or model.format != "cogwork":  # the user's own model
        doc["outputs"] = spec.outputs or "logits"
        if spec.classes:
            doc["classes"] = list(spec.classes)
    return doc


def training_set_name(round_: int) -> str:
    """The labels round `round_` retrains on, written by the previous round's collect step."""
    return f"train-r{round_}.npz"


def labeling_config(job: LabelJob, layout: Layout, model: ModelRef, round_: int = 0
                    ) -> dict[str, Any]:
    """COGWORK_LABELJOB: the spec's shape with paths as the steps see them."""
    spec = job.spec
    pool: dict[str, Any] = ({"dataset": spec.pool.dataset} if spec.pool.dataset else
                            {"path": layout.data_file(spec.pool.path or ""),
                             "idField": spec.pool.id_field})
    doc: dict[str, Any] = {
        "pool": pool,
        "modelVersion": model.version,
        "review": {"strategy": spec.review.strategy, "batchSize": spec.review.batch_size,
                   "maxRounds": spec.review.max_rounds,
                   **({"maxHumanLabels": spec.review.max_human_labels}
                      if spec.review.max_human_labels is not None else {})},
        "labelErrors": to_wire(spec.label_errors),
        "inference": {"batchSize": spec.inference.batch_size},
        "output": layout.output_dir,
        "round": round_,
        "randomSeed": spec.random_seed,
    }
    model_doc = model_config(job, model)
    if model_doc is not None:
        doc["model"] = model_doc
    seed = spec.seed
    if seed is not None:
        doc["seed"] = ({"count": seed.count} if seed.count is not None
                       else {"path": layout.data_file(seed.path or "")})
    accept = spec.auto_accept
    if accept is not None:
        validation = accept.validation
        doc["autoAccept"] = {
            "targetPrecision": accept.target_precision, "confidence": accept.confidence,
            "perClass": accept.per_class,
            "validation": ({"humanBudget": validation.human_budget}
                           if validation.human_budget is not None
                           else {"path": layout.data_file(validation.path or "")}),
        }
    return doc


def omp_threads(cpu: str) -> int:
    """Threads = whole CPUs of the pod, at least 1 (oversubscription costs more than it gives)."""
    return max(1, math.floor(parse_quantity(cpu)))


def _summary_args(layout: Layout) -> list[str]:
    return ["--summary-to", layout.summary_path] if layout.summary_path else []


def fit_step(config_env: dict[str, str]) -> Step:
    return Step("fit", ["-m", PRELABEL_MODULE, "fit"], config_env)


def score_step(job: LabelJob, layout: Layout, config_env: dict[str, str], index: int,
               round_: int = 0, image: str | None = None) -> Step:
    count = job.spec.inference.replicas
    return Step("score", ["-m", PRELABEL_MODULE, "score", "--shard-index", str(index),
                          "--shard-count", str(count), *_summary_args(layout)],
                config_env, index, round_, image)


def merge_step(job: LabelJob, layout: Layout, config_env: dict[str, str], round_: int = 0
               ) -> Step:
    return Step("merge", ["-m", MERGE_MODULE, "--shard-count", str(job.spec.inference.replicas),
                          *_summary_args(layout)], config_env, round=round_)


def _sink_env(job: LabelJob) -> dict[str, str]:
    """Where Label Studio is; its API key comes from the Secret (pods) or the caller's
    environment (local), never from the spec."""
    sink = job.spec.sink.label_studio if job.spec.sink else None
    if sink is None:
        return {}
    return {"LABEL_STUDIO_URL": sink.url, "LABEL_STUDIO_PROJECT": str(sink.project)}


def push_step(job: LabelJob, layout: Layout, round_: int = 0) -> Step | None:
    """Import the review batch into Label Studio (with spec.sink only)."""
    env = _sink_env(job)
    if not env:
        return None
    return Step("push", ["-m", LABEL_STUDIO_MODULE, "push", "--output", layout.output_dir],
                env, round=round_)


def collect_step(job: LabelJob, layout: Layout, model: ModelRef, round_: int) -> Step:
    """Bring the round's review batch back labeled (Label Studio annotations, or a bundled
    dataset's hidden labels in a demo) and write the next round's training set."""
    config = labeling_config(job, layout, model, round_)
    env = {CONFIG_ENV: json.dumps(config, separators=(",", ":")), **_sink_env(job)}
    return Step("collect", ["-m", REVIEW_MODULE, "collect", "--round", str(round_),
                            *_summary_args(layout)], env, round=round_)


def steps(job: LabelJob, layout: Layout, model: ModelRef, round_: int = 0) -> list[Step]:
    """Every step of one round in order: [fit], score 0..n-1, merge, [push]."""
    config = labeling_config(job, layout, model, round_)
    env = {CONFIG_ENV: json.dumps(config, separators=(",", ":"))}
    out = [fit_step(env)] if model.fits else []
    out += [score_step(job, layout, env, i, round_, model.image)
            for i in range(job.spec.inference.replicas)]
    out.append(merge_step(job, layout, env, round_))
    push = push_step(job, layout, round_)
    return [*out, push] if push else out
