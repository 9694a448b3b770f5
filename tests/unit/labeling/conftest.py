"""Unit tests of the labeling runtime; `cogwork_trainer` is imported from trainer-image/."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_labelstudio import FakeLabelStudio

TRAINER_IMAGE = Path(__file__).resolve().parents[3] / "trainer-image"
if str(TRAINER_IMAGE) not in sys.path:
    sys.path.insert(0, str(TRAINER_IMAGE))


@pytest.fixture
def studio() -> Iterator[FakeLabelStudio]:
    """A fake Label Studio server on a free local port, project 7."""
    with FakeLabelStudio() as fake:
        yield fake
