"""The operator end to end: the chart installed by the real helm, operator running under the
chart's operator ServiceAccount (its RBAC, not admin's)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from harness.cluster import Cluster
from harness.jobs import Jobs
from harness.kueue import Kueue
from harness.operator import HELM, Operator, install_chart

# Slow each optimizer step a little so tests can act mid-training on a 2-core machine.
STEP_DELAY = "0.08"


@pytest.fixture(scope="session")
def operator(cluster: Cluster, kueue: Kueue) -> Iterator[Operator]:
    """Kueue first, as on a shared cluster: the operator watches Workloads only if their
    resource is served when it starts (Kopf's scan at start-up; it has no CRD watch)."""
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run `make helm` (the e2e suite installs the chart "
                    "with the real helm)", pytrace=False)
    service_account = install_chart(cluster.control_plane, cluster.workdir / "helm")
    knobs = {"COGWORK_TRAINER_EXTRA_ENV": f"COGWORK_STEP_DELAY_SECONDS={STEP_DELAY}"}
    op = Operator(cluster.control_plane, cluster.workdir / "operator", extra_env=knobs,
                  service_account=service_account)
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def jobs(cluster: Cluster, namespace: str, operator: Operator) -> Jobs:
    return Jobs(cluster, namespace)
