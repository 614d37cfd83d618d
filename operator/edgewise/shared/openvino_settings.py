"""How OpenVINO compiles an Edgewise artifact: one set of properties for the optimizer's gates, `edgewise
serve --backend openvino` and Triton's OpenVINO backend, so what was gated is what is served.

Pure data (OpenVINO is not imported): the node images and the optimizer share it.
"""

from __future__ import annotations

from typing import Any

LATENCY = {"PERFORMANCE_HINT": "LATENCY"}
PRECISIONS = ("f32", "bf16")


def compile_properties(device: str, threads: int, instances: int, precision: str = "f32") -> dict[str, Any]:
    """What the model is compiled with: the LATENCY hint (one stream, all its threads on one
    request), and for the CPU one stream per instance so `instances` requests really run at
    once (one stream would take them in turn), `threads` threads each, and the precision of
    floating-point layers. OpenVINO's CPU default is bf16 wherever the CPU has native bf16
    (this machine's EPYC does): faster, but not the fp32 the artifact was built and gated as,
    so f32 unless asked. These are CPU properties: GPU and NPU keep their own defaults (f16),
    and the host threads only feed them."""
    cpu: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
    if threads > 0:
        cpu["INFERENCE_NUM_THREADS"] = threads * instances
    if instances > 1:
        cpu["NUM_STREAMS"] = instances
    if device == "CPU":
        return {**LATENCY, **cpu}
    if device == "AUTO":
        return {**LATENCY, "DEVICE_PROPERTIES": {"CPU": cpu}}
    return dict(LATENCY)


def triton_parameters(device: str, threads: int, instances: int, precision: str = "f32") -> dict[str, str]:
    """The same settings under the parameter names of Triton's openvino backend."""
    props = compile_properties(device, threads, instances, precision)
    flat = {**props.pop("DEVICE_PROPERTIES", {}).get("CPU", {}), **props}
    return {"TARGET_DEVICE": device, **{k: str(v) for k, v in flat.items()}}
