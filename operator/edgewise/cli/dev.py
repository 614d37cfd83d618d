"""`edgewise dev cluster up|down|status`: the local control plane and simulated fleet."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    dev = sub.add_parser("dev", help="local development cluster and demo")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    cluster = dev_sub.add_parser("cluster", help="a real control plane with a simulated edge fleet")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")

    up = cluster_sub.add_parser("up", help="start (or reuse) the cluster and create the fleet")
    fleet = up.add_mutually_exclusive_group()
    fleet.add_argument("--fleet", default=None,
                       help="CLASS=COUNT,... (classes: jetson-orin, jetson-xavier, arm64-cpu, amd64-cpu); "
                            "default: 2 Orin, 1 Xavier, 3 ARM boards, 1 x86 PC")
    fleet.add_argument("--nodes", type=int, default=None, help="N nodes spread over every class")
    up.add_argument("--real-node", action="store_true",
                    help="also one real node: kubelet, kube-proxy, containerd and runc on this machine, "
                         "running the images `make images` built (needs root)")
    up.set_defaults(func=cmd_up)
    down = cluster_sub.add_parser("down", help="stop every process the cluster started")
    down.set_defaults(func=cmd_down)
    status = cluster_sub.add_parser("status", help="show the processes and nodes")
    status.set_defaults(func=cmd_status)
    demo = dev_sub.add_parser("demo", help="bring up the local fleet and show Edgewise on it (make demo)")
    demo.set_defaults(func=cmd_demo)
    for p in (up, down, status):
        p.add_argument("--dir", type=Path, default=None, help="cluster directory (default .cache/devcluster)")


def _fleet(args: argparse.Namespace) -> dict[str, int]:
    from edgewise.devcluster.fleet import DEFAULT_FLEET, parse_fleet, spread

    if args.nodes is not None:
        return spread(args.nodes)
    return parse_fleet(args.fleet or DEFAULT_FLEET)


def cmd_up(args: argparse.Namespace) -> int:
    from edgewise.devcluster.cluster import DevCluster
    from edgewise.devcluster.fleet import apply_fleet, wait_ready
    from edgewise.devcluster.report import describe

    try:
        fleet = _fleet(args)
    except ValueError as err:
        raise SystemExit(f"edgewise dev cluster up: {err}") from None
    images: tuple[Path, ...] = ()
    if args.real_node:
        from edgewise.devcluster.images import ensure_images, host_arch

        images = tuple(b.archive for b in ensure_images(arches=[host_arch()]))
    cluster = DevCluster(args.dir, real_node=args.real_node, images=images)
    cluster.up()
    with cluster.api_client() as api:
        wait_ready(api, apply_fleet(api, fleet, node_cidr=cluster.node_cidr))
        print(describe(cluster, api))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from edgewise.devcluster.cluster import DevCluster

    stopped = DevCluster(args.dir).down()
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from edgewise.devcluster.cluster import DevCluster
    from edgewise.devcluster.report import describe

    cluster = DevCluster(args.dir)
    status = cluster.status()
    if not status["running"]:
        print(json.dumps(status, indent=2))
        return 1
    with cluster.api_client() as api:
        print(describe(cluster, api))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from edgewise.devcluster.demo import run

    return run()
