"""Small models for small images (8x8 digits or any .npz of fixed-size samples)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int) -> None:
        super().__init__()
        features = math.prod(input_shape)
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]


def _image_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, height, width) for a sample shape: (H, W), (C, H, W) or a flat square (D,)."""
    if len(input_shape) == 3:
        return input_shape[0], input_shape[1], input_shape[2]
    if len(input_shape) == 2:
        return 1, input_shape[0], input_shape[1]
    if len(input_shape) == 1 and math.isqrt(input_shape[0]) ** 2 == input_shape[0]:
        side = math.isqrt(input_shape[0])
        return 1, side, side
    raise ValueError(f"cnn needs image-shaped samples, got {input_shape}")


class CNN(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int) -> None:
        super().__init__()
        self.image_shape = _image_shape(input_shape)
        channels = self.image_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            # Fixed 4x4 output whatever the image size, so the head does not depend on it.
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 16, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.image_shape)
        return self.head(self.features(x))  # type: ignore[no-any-return]


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, hidden: int
) -> nn.Module:
    if name == "mlp":
        return MLP(input_shape, num_classes, hidden)
    if name == "cnn":
        return CNN(input_shape, num_classes, hidden)
    raise ValueError(f"unknown model {name!r}")


def save_model(
    path: str | Path,
    model: nn.Module,
    *,
    name: str,
    hidden: int,
    input_shape: tuple[int, ...],
    classes: tuple[str, ...],
    mean: np.ndarray,
    std: np.ndarray,
) -> None:
    """model.pt: weights plus what inference needs (architecture, normalization, class names),
    so a LabelJob can pre-label raw samples with `load_model` alone."""
    payload = {
        "format": "cogwork-model/v1",
        "model": name,
        "hiddenSize": hidden,
        "inputShape": list(input_shape),
        "classes": list(classes),
        "mean": torch.from_numpy(np.asarray(mean, dtype=np.float32)),
        "std": torch.from_numpy(np.asarray(std, dtype=np.float32)),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    tmp = Path(f"{path}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # readers never see half a file


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by `save_model`; returns (model in eval mode, metadata)."""
    payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(
        payload["model"], tuple(payload["inputShape"]), len(payload["classes"]),
        payload["hiddenSize"],
    )
    model.load_state_dict(payload["state_dict"])
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta
