"""Search seeds, shared by the builtin and Katib engines. Light on purpose: importing this must
not load Optuna or SciPy (an operator with no builtin TuneJob never pays for them)."""

from __future__ import annotations

import zlib

import numpy as np

from cogwork.api.tunejob import TuneJob


def base_seed(job: TuneJob) -> int:
    """spec.search.seed, else stable per object (uid; the name when offline)."""
    if job.spec.search.seed is not None:
        return job.spec.search.seed
    identity = job.metadata.uid or f"{job.metadata.namespace}/{job.metadata.name}"
    return zlib.crc32(identity.encode())


def trial_seed(base: int, index: int) -> int:
    """Independent, reproducible seed per trial index."""
    return int(np.random.SeedSequence([base, index]).generate_state(1)[0])
