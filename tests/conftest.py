"""Shared fixtures: a real local control plane with a simulated edge fleet.

The cluster starts once per test session, and only if a test asks for it: unit
tests never pay for it. It is the same code as `edgewise dev cluster up` and
`make demo`, in its own directory so a developer's demo cluster is left alone.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kubernetes import client as k8s

from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.fleet import apply_fleet, delete_nodes
from wait_support import wait_for

REPO = Path(__file__).resolve().parents[1]
_node_prefixes = itertools.count(1)


@pytest.fixture(scope="session")
def cluster() -> Iterator[DevCluster]:
    dev = DevCluster(REPO / ".cache" / "test-cluster")
    dev.down()  # processes left by an earlier, killed run
    dev.up()
    try:
        yield dev
    finally:
        dev.down()


@contextmanager
def fresh_namespace(cluster: DevCluster) -> Iterator[str]:
    """A fresh namespace that enforces the `restricted` Pod Security Standard, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    with cluster.api_client() as api:
        core = k8s.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": name, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }}})
        wait_for(lambda: _has_default_sa(core, name), 60, f"default ServiceAccount in {name}")
        try:
            yield name
        finally:
            core.delete_namespace(name)


@pytest.fixture
def namespace(cluster: DevCluster) -> Iterator[str]:
    with fresh_namespace(cluster) as name:
        yield name


@pytest.fixture(scope="module")
def module_namespace(cluster: DevCluster) -> Iterator[str]:
    """`namespace`, shared by the tests of a module whose setup is expensive."""
    with fresh_namespace(cluster) as name:
        yield name


def _has_default_sa(core: k8s.CoreV1Api, ns: str) -> bool:
    try:
        core.read_namespaced_service_account("default", ns)
        return True
    except k8s.ApiException as err:
        if err.status == 404:
            return False
        raise


@contextmanager
def simulated_fleet(cluster: DevCluster) -> Iterator[Callable[[dict[str, int]], list[str]]]:
    """Factory: make({"jetson-orin": 2, "arm64-cpu": 3}) → names of new simulated nodes.

    Names carry a prefix of their own so tests don't see each other's nodes by name;
    every node made is deleted afterwards.
    """
    made: list[str] = []
    prefix = f"n{next(_node_prefixes)}-"
    with cluster.api_client() as api:
        def make(spec: dict[str, int]) -> list[str]:
            names = apply_fleet(api, spec, prefix=prefix)
            made.extend(n for n in names if n not in made)
            return names

        try:
            yield make
        finally:
            delete_nodes(api, made)


@pytest.fixture
def fleet(cluster: DevCluster) -> Iterator[Callable[[dict[str, int]], list[str]]]:
    with simulated_fleet(cluster) as make:
        yield make


@pytest.fixture(scope="module")
def module_fleet(cluster: DevCluster) -> Iterator[Callable[[dict[str, int]], list[str]]]:
    """`fleet`, shared by the tests of a module whose setup is expensive."""
    with simulated_fleet(cluster) as make:
        yield make
