"""The one place that picks the runtime serving a model: `edgewise serve --backend`.

Each backend is a module implementing `model.ServedModel`; this maps the name to the files
it reads, the check that it can run here, and its constructor. Runtimes are imported only
when chosen, so each node image carries just its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from edgewise import contract
from edgewise.node.serve import openvino_model
from edgewise.node.serve.model import ServedModel

Backend = Literal["onnxruntime", "openvino"]
BACKENDS: tuple[str, ...] = get_args(Backend)
DEVICES: tuple[str, ...] = get_args(contract.Device)


@dataclass(frozen=True)
class RuntimeOptions:
    """Every backend's knobs; each reads those that apply to it."""

    threads: int = 0  # per execution; 0: the runtime's default (one per core)
    instances: int = 1  # executions that may run at once
    device: str = "CPU"  # openvino only
    precision: str = "f32"  # openvino on the CPU only: shared.openvino_settings.PRECISIONS
    spinning: bool = False  # onnxruntime only
    spin_us: int = 0  # onnxruntime only


def model_files(backend: str) -> tuple[str, ...]:
    """The model files `backend` reads, in order of preference."""
    return openvino_model.FILENAMES if backend == "openvino" else (contract.ONNX_FILENAME,)


def unavailable(backend: str, device: str) -> str | None:
    """Why `backend` cannot serve on `device` in this process, or None; asked before listening,
    so a node without the device never looks alive, let alone ready."""
    if backend == "openvino":
        return openvino_model.unavailable(device)
    return None


def open_model(backend: str, path: Path, options: RuntimeOptions) -> ServedModel:
    if backend == "openvino":
        return openvino_model.OpenVinoModel(path, options.device, options.threads, options.instances,
                                            options.precision)
    if backend == "onnxruntime":
        from edgewise.node.serve.onnxruntime_model import OnnxModel

        return OnnxModel(path, options.threads, options.spinning, options.spin_us)
    raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
