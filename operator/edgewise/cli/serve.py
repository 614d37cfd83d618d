"""`edgewise serve`: the inference server of CPU and Intel nodes (ONNX Runtime or OpenVINO, Triton's protocol)."""

from __future__ import annotations

import argparse
from typing import get_args

from edgewise import contract

# Mirrors edgewise.node.serve.backends.BACKENDS, which is not imported here: `edgewise --help`
# must stay quick and light on every image.
BACKENDS = ("onnxruntime", "openvino")
DEVICES: tuple[str, ...] = get_args(contract.Device)
PRECISIONS = ("f32", "bf16")  # edgewise.shared.openvino_settings.PRECISIONS


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "serve", help="serve an ONNX (or OpenVINO IR) model over Triton's KServe-V2 HTTP/gRPC protocol",
        description=__doc__,
    )
    p.add_argument("--model-dir", required=True,
                   help=f"directory holding {contract.ONNX_FILENAME} (openvino also: model.xml + model.bin), "
                        f"or a Triton-style <version>/{contract.ONNX_FILENAME} layout (highest version wins)")
    p.add_argument("--model-name", required=True, help="name clients use in /v2/models/<name>")
    p.add_argument("--host", default="0.0.0.0", help="address of all three listeners")
    p.add_argument("--http-port", type=int, default=contract.HTTP_PORT)
    p.add_argument("--grpc-port", type=int, default=contract.GRPC_PORT)
    p.add_argument("--metrics-port", type=int, default=contract.METRICS_PORT)
    p.add_argument("--backend", choices=BACKENDS, default="onnxruntime",
                   help="the runtime that serves the model (default onnxruntime)")
    p.add_argument("--device", choices=DEVICES, default=None,
                   help="the OpenVINO device to run on (openvino backend only; default CPU); "
                        "start fails if the node lacks it")
    p.add_argument("--inference-precision", choices=PRECISIONS, default=None,
                   help="openvino backend on the CPU: precision of floating-point layers (default f32, the "
                        "artifact's own; bf16: OpenVINO's default on CPUs with native bf16, faster, less exact)")
    p.add_argument("--threads", type=int, default=0,
                   help="threads per execution: ONNX Runtime intra-op threads, OpenVINO "
                        "INFERENCE_NUM_THREADS on the CPU (0: one per core)")
    p.add_argument("--instances", type=int, default=1,
                   help="model executions that may run at once (Triton's instance_group count)")
    p.add_argument("--max-batch-size", type=int, default=0,
                   help="merge concurrent requests into batches of up to N along dim 0 (0: no batching)")
    p.add_argument("--max-queue-delay-us", type=int, default=0,
                   help="how long the oldest queued request may wait for others to fill a batch")
    p.add_argument("--max-request-bytes", type=_positive, default=64 * 1024 * 1024,
                   help="larger request bodies get 413 / RESOURCE_EXHAUSTED")
    p.add_argument("--max-request-elements", type=_positive, default=1 << 24, metavar="N",
                   help="requests declaring more tensor elements (all inputs together) get 413 / "
                        "RESOURCE_EXHAUSTED before their data is decoded (default 16777216)")
    p.add_argument("--max-request-memory", type=_positive, default=256 << 20, metavar="BYTES",
                   help="requests whose decoding could take more memory (estimated from the declared "
                        "shapes, 384 bytes per BYTES element, 24x the size of JSON) get 413 / "
                        "RESOURCE_EXHAUSTED before their data is decoded (default 268435456)")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="seconds to finish in-flight requests after SIGTERM")
    p.add_argument("--http-idle-timeout", type=float, default=75.0, metavar="S",
                   help="close an HTTP connection silent for S seconds while no answer is due "
                        "(idle keep-alive, or a request stalled halfway)")
    p.add_argument("--ort-spinning", action="store_true",
                   help="onnxruntime backend: let the intra-op threads spin between runs (faster alone, "
                        "but steals CPU from request handling and neighbours)")
    p.add_argument("--ort-spin-us", type=int, default=100, metavar="US",
                   help="onnxruntime backend: let the intra-op threads spin for at most US microseconds "
                        "before sleeping: the gaps between a run's operators stay hot, the gaps between "
                        "requests stay idle (default 100; 0: no spinning unless --ort-spinning)")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=lambda args: run(args, p))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.backend != "openvino":
        for flag, value in (("--device", args.device), ("--inference-precision", args.inference_precision)):
            if value is not None:
                parser.error(f"{flag} {value} needs --backend openvino: the {args.backend} backend "
                             f"runs on the CPU, in the model's own precision")
    import asyncio
    import logging
    from pathlib import Path

    from edgewise.node.serve.server import ServeConfig, serve

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = ServeConfig(
        model_dir=Path(args.model_dir), model_name=args.model_name, host=args.host,
        http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
        threads=args.threads, instances=args.instances, max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us, max_request_bytes=args.max_request_bytes,
        max_request_elements=args.max_request_elements, max_request_memory=args.max_request_memory,
        drain_timeout_s=args.drain_timeout, http_idle_timeout_s=args.http_idle_timeout,
        spinning=args.ort_spinning, spin_us=args.ort_spin_us, backend=args.backend, device=args.device or "CPU",
        precision=args.inference_precision or "f32",
    )
    try:
        return asyncio.run(serve(cfg))
    except OSError as err:  # a port in use, an address that isn't ours
        logging.getLogger("edgewise.serve").error("cannot listen: %s", err)
        return 1
