"""Wire the model, the batcher and the three listeners together; run until SIGTERM.

Order of life: a backend that cannot run here (no openvino package, an OpenVINO device
the node lacks) exits 1 before anything listens; then listeners (live, not ready, so a liveness probe passes while a big
model loads), then load and warm up with golden inputs, then ready. On SIGTERM/SIGINT:
not ready, listeners closed to new connections, queued and in-flight requests answered
(the batcher stops waiting for company), requests whose bodies are still arriving too (all
within the drain timeout), then exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from edgewise import contract
from edgewise.node.serve import backends, grpc_api, limits, metrics
from edgewise.node.serve.batcher import Batcher
from edgewise.node.serve.http_api import HttpApi
from edgewise.node.serve.http_server import HttpServer
from edgewise.node.serve.model import ModelSpec, ServedModel, find_model_file, make_spec
from edgewise.node.serve.service import InferenceService, Settings
from edgewise.node.serve.stats import ModelStats

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ServeConfig:
    model_dir: Path
    model_name: str
    host: str = "0.0.0.0"
    http_port: int = contract.HTTP_PORT
    grpc_port: int = contract.GRPC_PORT
    metrics_port: int = contract.METRICS_PORT
    threads: int = 0
    instances: int = 1
    max_batch_size: int = 0
    max_queue_delay_us: int = 0
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_request_elements: int = limits.DEFAULT_MAX_ELEMENTS
    max_request_memory: int = limits.DEFAULT_MAX_MEMORY
    drain_timeout_s: float = 30.0
    http_idle_timeout_s: float = 75.0
    spinning: bool = False
    spin_us: int = 100  # bounded spinning (implies spinning); 0: as `spinning` says
    backend: str = "onnxruntime"  # backends.BACKENDS
    device: str = "CPU"  # the OpenVINO device (openvino backend only)
    precision: str = "f32"  # OpenVINO's precision for floating-point layers on the CPU


def load(cfg: ServeConfig) -> tuple[ServedModel, ModelSpec]:
    """Blocking: open the model with its backend and answer golden inputs (batch 1, then a full batch)."""
    path, version = find_model_file(cfg.model_dir, backends.model_files(cfg.backend))
    log.info("loading %s (version %s) with %s on %s, %s threads per execution", path, version, cfg.backend,
             cfg.device if cfg.backend == "openvino" else "CPU", cfg.threads or "default")
    options = backends.RuntimeOptions(cfg.threads, cfg.instances, cfg.device, cfg.precision, cfg.spinning,
                                      cfg.spin_us)
    model = backends.open_model(cfg.backend, path, options)
    spec = make_spec(cfg.model_name, version, model.inputs, model.outputs, cfg.max_batch_size,
                     cfg.backend, path.name)
    golden = model.warm_up(spec)
    if spec.max_batch_size > 1:
        # A full batch allocates the largest buffers now rather than on the first busy moment.
        full = {k: v.repeat(spec.max_batch_size, axis=0) for k, v in golden.items()}
        try:
            model.run(full, quiet=True)
        except Exception as err:  # noqa: BLE001
            raise RuntimeError(
                f"model answered batch 1 but not a batch of {spec.max_batch_size}: {err}") from err
    return model, spec


async def serve(cfg: ServeConfig) -> int:
    problem = backends.unavailable(cfg.backend, cfg.device)
    if problem:
        log.error("cannot serve with the %s backend: %s", cfg.backend, problem)
        return 1
    settings = Settings(cfg.model_name, cfg.max_queue_delay_us, cfg.instances, cfg.threads,
                        limits.Limits(cfg.max_request_elements, cfg.max_request_memory), cfg.device,
                        cfg.precision)
    service = InferenceService(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def current() -> tuple[str, str, ModelStats] | None:
        return (service.spec.name, service.spec.version, service.stats) if service.spec else None

    http = HttpServer(HttpApi(service).handle, cfg.max_request_bytes,
                      cfg.http_idle_timeout_s)
    scrape = web.AppRunner(metrics.metrics_app(current), access_log=None)
    grpc_server = grpc_api.server(service, f"{cfg.host}:{cfg.grpc_port}", cfg.max_request_bytes)
    await scrape.setup()
    await http.start(cfg.host, cfg.http_port)
    await web.TCPSite(scrape, cfg.host, cfg.metrics_port).start()
    await grpc_server.start()
    log.info("live: http %s:%d, grpc %s:%d, metrics %s:%d", cfg.host, cfg.http_port, cfg.host, cfg.grpc_port,
             cfg.host, cfg.metrics_port)

    batcher: Batcher | None = None
    loading = loop.run_in_executor(None, load, cfg)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([loading, stopping], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
    code = 0
    if loading.done():
        try:
            model, spec = loading.result()
        except Exception:
            log.exception("model %s failed to load or warm up; not ready, exiting", cfg.model_name)
            code = 1
        else:
            batcher = Batcher(model.run, service.stats, spec.max_batch_size, cfg.max_queue_delay_us,
                              cfg.instances)
            batcher.start()
            service.attach(spec, batcher)
            log.info("ready: model %s version %s", cfg.model_name, spec.version)
            await stopping
    else:
        log.info("stopped while loading")

    log.info("draining: not ready, closing listeners, answering in-flight requests")
    service.ready = False
    if batcher is not None:
        batcher.drain()  # queued requests run now; requests still arriving are taken
    await asyncio.gather(http.shutdown(cfg.drain_timeout_s), grpc_server.stop(cfg.drain_timeout_s))
    if batcher is not None:
        await batcher.close()
    service.close()
    await scrape.cleanup()
    log.info("stopped")
    return code
