"""Unit tests of the labeling runtime; `cogwork_trainer` is imported from trainer-image/."""

from __future__ import annotations

import sys
from pathlib import Path

TRAINER_IMAGE = Path(__file__).resolve().parents[3] / "trainer-image"
if str(TRAINER_IMAGE) not in sys.path:
    sys.path.insert(0, str(TRAINER_IMAGE))
