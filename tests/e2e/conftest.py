"""The operator end to end: CRDs installed, operator running under the chart's RBAC."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from harness.cluster import Cluster
from harness.jobs import Jobs
from harness.operator import Operator, install_crds, install_rbac

# Slow each optimizer step a little so tests can act mid-training on a 2-core machine.
STEP_DELAY = "0.08"


@pytest.fixture(scope="session")
def operator(cluster: Cluster) -> Iterator[Operator]:
    install_crds(cluster.control_plane)
    install_rbac(cluster.control_plane)
    knobs = {"COGWORK_TRAINER_EXTRA_ENV": f"COGWORK_STEP_DELAY_SECONDS={STEP_DELAY}"}
    op = Operator(cluster.control_plane, cluster.workdir / "operator", extra_env=knobs)
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def jobs(cluster: Cluster, namespace: str, operator: Operator) -> Jobs:
    return Jobs(cluster, namespace)
