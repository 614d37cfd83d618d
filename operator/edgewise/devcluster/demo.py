"""`make demo`: the local fleet, and what Edgewise does on it."""

from __future__ import annotations

from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.fleet import DEFAULT_FLEET, apply_fleet, parse_fleet
from edgewise.devcluster.report import describe


def run() -> int:
    cluster = DevCluster()
    print("== starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)")
    cluster.up()
    with cluster.api_client() as api:
        apply_fleet(api, parse_fleet(DEFAULT_FLEET))
        print(describe(cluster, api))
    return 0
