"""Models the user brings: a TorchScript file, a torch.export program, or a function of theirs.

    spec.model.format: torchscript   torch.jit.load(path)
    spec.model.format: export        torch.export.load(path).module()   (.pt2)
    spec.model.entrypoint: "package.module:function"   (run in spec.model.image)

The contract is the same for all three: the model is called with a float32 batch of the pool's
samples exactly as the pool's `x` array stores them (shape (n, *sample_shape); no normalization
here: a model that wants it does it itself) and returns an (n, k) array or tensor of logits
(softmax is applied here) or, with spec.model.outputs: probabilities, of probabilities. k must
be the number of classes: the pool file's `classes`, else spec.model.classes, else "0".."k-1".
A mismatch, a model that fails on the batch or returns another shape is a ValueError naming
spec.model: the score step exits 2 and the LabelJob fails (retrying cannot fix it).

Imports nothing but numpy, torch and the standard library: with spec.model.entrypoint the score
step runs in the user's image, where install_scorer.py copies this module in.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import LabelConfig, LabelConfigError

log = logging.getLogger("cogwork_trainer.labeling")

Forward = Callable[[np.ndarray], Any]  # float32 batch -> (n, k) numpy array or tensor
PROBABILITY_TOLERANCE = 1e-3  # how far from 1 a row of probabilities may sum
ERROR_DETAIL = 120  # characters of the model's own error kept in ours (a one-line log tail)


@dataclass(frozen=True)
class UserModel:
    """A user's model behind the same predict_proba as the built-in Classifier."""

    forward: Forward
    outputs: str  # "logits" or "probabilities"
    source: str  # what spec.model names, for messages
    classes: tuple[str, ...] = ()  # the label set its rows must cover (with_classes)
    static_batch: int | None = None  # a torch.export program traced at a fixed batch size

    def with_classes(self, classes: tuple[str, ...]) -> UserModel:
        return replace(self, classes=tuple(classes))

    def count_outputs(self, x: np.ndarray) -> int:
        """k, from one forward pass over the first sample (a pool that names no classes)."""
        if len(x) == 0:
            raise ValueError("spec.model: the pool is empty: no sample to count the model's "
                             "outputs on (name the classes in spec.model.classes)")
        return int(self._raw(x[:1]).shape[1])

    def _raw(self, x: np.ndarray) -> np.ndarray:
        """The model's rows for one batch, float64, checked to be (len(x), k)."""
        batch = np.ascontiguousarray(x, dtype=np.float32)
        n = len(batch)
        if self.static_batch is not None and n < self.static_batch:  # pad, then drop the pad
            pad = np.zeros((self.static_batch - n, *batch.shape[1:]), dtype=np.float32)
            batch = np.concatenate([batch, pad])
        try:
            with torch.no_grad():
                out = self.forward(batch)
            rows = (out.detach().cpu().numpy() if isinstance(out, torch.Tensor)
                    else np.asarray(out))
        except Exception as e:  # the user's code: any failure is theirs to fix
            detail = " ".join(f"{type(e).__name__}: {e}".split())[:ERROR_DETAIL]
            raise ValueError(f"spec.model: {self.source} failed on a float32 batch of shape "
                             f"{tuple(batch.shape)}: {detail}") from e
        if rows.ndim != 2 or rows.shape[0] != len(batch):
            raise ValueError(f"spec.model: {self.source} returned shape {tuple(rows.shape)} for "
                             f"{len(batch)} items; expected (items, classes)")
        return np.asarray(rows[:n], dtype=np.float64)

    def _probabilities(self, rows: np.ndarray) -> np.ndarray:
        if not np.isfinite(rows).all():
            raise ValueError(f"spec.model: {self.source} returned NaN or infinite values")
        if self.outputs == "logits":
            z = np.exp(rows - rows.max(axis=1, keepdims=True))
            return np.asarray(z / z.sum(axis=1, keepdims=True), dtype=np.float64)
        if len(rows) == 0:
            return rows
        sums = rows.sum(axis=1)
        worst = int(np.argmax(np.abs(sums - 1.0)))
        if rows.min() < -PROBABILITY_TOLERANCE or abs(sums[worst] - 1.0) > PROBABILITY_TOLERANCE:
            found = (f"a negative value ({rows.min():.4g})" if rows.min() < -PROBABILITY_TOLERANCE
                     else f"a row summing to {sums[worst]:.4g}")
            raise ValueError(f"spec.model.outputs is probabilities, but {self.source} returned "
                             f"{found}: are these logits (the default)?")
        rows = np.clip(rows, 0.0, None)
        return np.asarray(rows / rows.sum(axis=1, keepdims=True), dtype=np.float64)

    def predict_proba(self, x_raw: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Class probabilities (float32, rows sum to 1), one row per sample of `x_raw`."""
        k = len(self.classes)
        step = self.static_batch or batch_size
        out = []
        for start in range(0, len(x_raw), step):
            rows = self._raw(x_raw[start:start + step])
            if rows.shape[1] != k:
                raise ValueError(
                    f"spec.model: {self.source} returns {rows.shape[1]} outputs per item but "
                    f"there are {k} classes (the pool file's `classes`, else "
                    "spec.model.classes): they must agree")
            out.append(self._probabilities(rows).astype(np.float32))
        return np.concatenate(out) if out else np.zeros((0, k), dtype=np.float32)


def device() -> torch.device:
    """Where a model file runs: the pod's GPU when it has one (spec.inference.gpusPerPod)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _tensor_forward(net: Callable[[torch.Tensor], Any], where: torch.device) -> Forward:
    return lambda x: net(torch.from_numpy(x).to(where))


def _model_file(path: str | None) -> str:
    if not path:
        raise LabelConfigError("model: a torchscript or export model needs a path")
    if not Path(path).is_file():
        raise FileNotFoundError(f"spec.model.path: no model file at {path}")
    return path


def load_torchscript(path: str, outputs: str = "logits") -> UserModel:
    """A file written by torch.jit.save (a scripted or traced module)."""
    where = device()
    try:
        with warnings.catch_warnings():  # torch 2.x deprecates TorchScript, it still loads
            warnings.simplefilter("ignore", FutureWarning)
            # torch.jit.load has no annotations in torch's sources.
            net = torch.jit.load(_model_file(path),  # type: ignore[no-untyped-call]
                                 map_location=where)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"spec.model.path: {path} is not a TorchScript file (torch.jit.save, "
                         f"spec.model.format torchscript): {' '.join(str(e).split())[:80]}"
                         ) from e
    net.eval()
    return UserModel(_tensor_forward(net, where), outputs, f"TorchScript model {path}")


def _static_batch(program: Any) -> int | None:
    """The batch size a torch.export program was traced at, unless its batch dim is dynamic."""
    user_inputs = [spec.arg.name for spec in program.graph_signature.input_specs
                   if spec.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs[:1]:
            value = node.meta.get("val")
            shape = getattr(value, "shape", None)
            if shape and isinstance(shape[0], int):
                return int(shape[0])
    return None


def load_export(path: str, outputs: str = "logits") -> UserModel:
    """A program written by torch.export.save (.pt2). A batch dimension exported as dynamic
    takes spec.inference.batchSize items per call; a static one is fed batches of its size."""
    where = device()
    try:
        program = torch.export.load(_model_file(path))
    except (RuntimeError, ValueError, KeyError) as e:
        raise ValueError(f"spec.model.path: {path} is not a torch.export program "
                         f"(torch.export.save, spec.model.format export): "
                         f"{' '.join(str(e).split())[:80]}") from e
    if where.type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, where)
    # No .eval(): an exported program keeps the mode it was exported in.
    return UserModel(_tensor_forward(program.module(), where), outputs,
                     f"torch.export program {path}", static_batch=_static_batch(program))


def load_entrypoint(entrypoint: str, outputs: str = "logits") -> UserModel:
    """`package.module:function`, imported as `python -m` would (working directory first, then
    the image's PYTHONPATH); called with each float32 numpy batch."""
    module_name, _, name = entrypoint.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or the module's own code failing
        raise ValueError(f"spec.model.entrypoint {entrypoint}: cannot import {module_name}: "
                         f"{type(e).__name__}: {' '.join(str(e).split())[:ERROR_DETAIL]}") from e
    function = getattr(module, name, None)
    if not callable(function):
        raise ValueError(f"spec.model.entrypoint {entrypoint}: {module_name} has no function "
                         f"{name}")
    return UserModel(function, outputs, f"entrypoint {entrypoint}")


def load_user_model(cfg: LabelConfig) -> UserModel:
    """spec.model as the configuration names it (cfg.user_model is true)."""
    if cfg.model_entrypoint is not None:
        model = load_entrypoint(cfg.model_entrypoint, cfg.model_outputs)
    elif cfg.model_format == "torchscript":
        model = load_torchscript(str(cfg.model_path or ""), cfg.model_outputs)
    elif cfg.model_format == "export":
        model = load_export(str(cfg.model_path or ""), cfg.model_outputs)
    else:
        raise LabelConfigError(f"model.format {cfg.model_format!r} is not a user's model")
    log.info("scoring with %s (%s)", model.source, model.outputs)
    return model
