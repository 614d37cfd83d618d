"""`edgewise operator run`: the operator (kopf), cluster-wide or for some namespaces."""

from __future__ import annotations

import argparse
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    op = sub.add_parser("operator", help="the Edgewise operator")
    op_sub = op.add_subparsers(dest="operator_command", required=True, metavar="ACTION")
    p = op_sub.add_parser("run", help="watch EdgeModels, DeploymentProfiles and nodes; reconcile them",
                          description="Settings come from EDGEWISE_* environment variables; flags win.")
    p.add_argument("--namespace", "-n", action="append", default=[], metavar="NS",
                   help="watch only this namespace (repeatable); default: every namespace")
    p.add_argument("--kubeconfig", default=None,
                   help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    p.add_argument("--operator-namespace", dest="settings_namespace", default=None,
                   help="the operator's namespace, where optimization Jobs run "
                        "(env EDGEWISE_NAMESPACE or POD_NAMESPACE; default edgewise-system)")
    p.add_argument("--agent-namespace", default=None,
                   help="namespace of the node agent DaemonSet; must allow the privileged Pod Security "
                        "Standard (env EDGEWISE_AGENT_NAMESPACE; default edgewise-node)")
    p.add_argument("--image-registry", default=None, help="prefix of every image (a local mirror)")
    p.add_argument("--agent-image", default=None, help="image of `edgewise agent`")
    p.add_argument("--onnxruntime-image", default=None, help="image of `edgewise serve` and `edgewise fetch`")
    p.add_argument("--openvino-image", default=None,
                   help="image of `edgewise serve --backend openvino` and its `edgewise fetch`")
    p.add_argument("--ngc-release", default=None,
                   help="NGC release (YY.MM) both Jetson images' tags default to, e.g. 25.01")
    p.add_argument("--triton-image", default=None, help="NVIDIA Triton -igpu image for Jetson")
    p.add_argument("--tensorrt-fetch-image", default=None, help="fetcher image with trtexec for Jetson")
    p.add_argument("--workers", type=int, default=None, help="models reconciled concurrently")
    p.add_argument("--resync-seconds", type=float, default=None, help="full re-reconcile period")
    p.add_argument("--liveness", default=None, metavar="URL",
                   help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz")
    p.add_argument("--metrics", default=os.environ.get("EDGEWISE_METRICS_LISTEN") or None, metavar="HOST:PORT",
                   help="serve Prometheus metrics on /metrics there, e.g. 0.0.0.0:8081 (docs/observability.md)")
    p.add_argument("--artifact-dir", default=None,
                   help="volume of the built-in artifact store (enables per-class optimization)")
    p.add_argument("--artifact-listen", default=None, help="host:port the artifact store serves on")
    p.add_argument("--artifact-url", default=None, help="base URL nodes fetch artifacts from")
    p.add_argument("--optimize-retry-seconds", type=float, default=None,
                   help="first wait before retrying an optimization that failed for a passing reason")
    p.add_argument("--log-level", default=os.environ.get("EDGEWISE_LOG_LEVEL", "INFO"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from edgewise.api.settings import OperatorSettings
    from edgewise.controller.run import RunOptions, operate
    from edgewise.shared import tracing

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # one line per handled event is noise
    tracing.configure("edgewise-operator")  # only when OTEL_* asks for traces
    env = dict(os.environ)
    if "EDGEWISE_NAMESPACE" not in env and "POD_NAMESPACE" in env:
        env["EDGEWISE_NAMESPACE"] = env["POD_NAMESPACE"]
    try:
        settings = OperatorSettings.from_env(
            env, namespace=args.settings_namespace, agent_namespace=args.agent_namespace,
            image_registry=args.image_registry, agent_image=args.agent_image,
            onnxruntime_image=args.onnxruntime_image,
            openvino_image=args.openvino_image, ngc_release=args.ngc_release, triton_image=args.triton_image,
            tensorrt_fetch_image=args.tensorrt_fetch_image, workers=args.workers,
            resync_seconds=args.resync_seconds, artifact_dir=args.artifact_dir, artifact_listen=args.artifact_listen,
            artifact_url=args.artifact_url, optimize_retry_seconds=args.optimize_retry_seconds)
    except ValueError as err:  # pydantic's ValidationError too: say what is wrong, without a traceback
        sys.exit(f"edgewise operator run: bad settings (EDGEWISE_* environment or flags): {err}")
    options = RunOptions(settings=settings, kubeconfig=args.kubeconfig, namespaces=args.namespace,
                         liveness=args.liveness, metrics=args.metrics)
    asyncio.run(operate(options))
    return 0
