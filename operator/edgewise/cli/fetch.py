"""`edgewise fetch`: lay out a model for its runtime (the runtime pods' init container)."""

from __future__ import annotations

import argparse
import os

from edgewise import contract


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("fetch", help="get a model from the node agent (or its source) and lay it out")
    contract.FetchRequest.add_arguments(p)
    trt = p.add_argument_group("triton-tensorrt", "building the TensorRT plan on this node")
    trt.add_argument("--compute-capability", default=None,
                     help=f"e.g. 8.7 (default: ${contract.GPU_COMPUTE_CAPABILITY_ENV})")
    trt.add_argument("--tensorrt-version", default=None,
                     help=f"default: ${contract.TENSORRT_VERSION_ENV}, else read from trtexec")
    trt.add_argument("--trtexec", default=None, help="path of trtexec (default: $EDGEWISE_TRTEXEC, PATH)")
    p.add_argument("--instance-count", type=int, default=1, help="Triton instance_group count")
    p.add_argument("--attempts", type=int, default=5, help="download attempts from the source, with backoff")
    p.add_argument("--log-level", default=os.environ.get("EDGEWISE_LOG_LEVEL", "INFO"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from edgewise.node import fetch

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    options = fetch.TensorRTOptions(
        compute_capability=args.compute_capability, tensorrt_version=args.tensorrt_version,
        trtexec=args.trtexec, instance_count=args.instance_count,
    )
    try:
        result = fetch.fetch(contract.FetchRequest.from_args(args), options=options, attempts=args.attempts)
    except Exception as err:  # noqa: BLE001 - an init container reports and exits; kubelet retries it
        logging.getLogger("edgewise.fetch").error("fetch failed: %s", err)
        return 1
    print(result.model_dir)
    return 0
