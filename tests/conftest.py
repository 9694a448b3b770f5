"""Shared pytest fixtures: one real control plane + node agent per session, a namespace per test.

Tests that need the cluster take the `cluster` or `namespace` fixture; unit tests take neither and
never start it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "cluster"))
# Builders shared by unit tests in several directories (tuning_helpers).
sys.path.insert(0, str(Path(__file__).parent / "unit"))

from harness.cluster import Cluster
from harness.kueue import Kueue


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    workdir = Path(tempfile.mkdtemp(prefix="cogwork-cluster-"))
    c = Cluster(workdir, nodes=int(os.environ.get("COGWORK_TEST_NODES", "3")))
    t0 = time.monotonic()
    c.start()
    print(f"\ncontrol plane + node agent ready in {time.monotonic() - t0:.1f}s ({workdir})")
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def kueue(cluster: Cluster) -> Iterator[Kueue]:
    """A real Kueue controller manager (`make kueue`), started the first time a test asks."""
    k = Kueue(cluster.control_plane)
    t0 = time.monotonic()
    k.start()
    print(f"\nkueue ready in {time.monotonic() - t0:.1f}s (log {k.log_file})")
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]
    name = f"t-{request.node.name[:40].lower().replace('_', '-').strip('-')}-{digest}"
    name = "".join(ch for ch in name if ch.isalnum() or ch == "-")[:63].strip("-")
    cluster.create_namespace(name)
    try:
        yield name
    finally:
        cluster.control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)
