"""An ONNX artifact compiled by OpenVINO Runtime, behind the `run(names, feed)` call the gates use.

The gates of an `openvino` target run the artifact where it will run: OpenVINO reads the ONNX
file itself (no IR conversion) and compiles it for a device. What is pinned, and why:
- `INFERENCE_PRECISION_HINT=f32` on the CPU: OpenVINO otherwise computes in bf16 on CPUs with
  AVX512_BF16 or AMX (this build machine has them), so an "fp32" artifact would be judged in bf16
  here and in f32 on an older node. Pinned, the accuracy gate's numbers hold on every Intel CPU.
- `INFERENCE_NUM_THREADS`: with one thread OpenVINO computes on the calling thread (measured:
  thread CPU time equals process CPU time), which the speed gate's CPU-time clock needs.
- One stream, latency hint: one request at a time, as the gates send them.
The serving backend compiles with the same properties (shared/openvino_settings.py), so what was gated is
what is served.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.optimize.errors import TechniqueFailed
from edgewise.optimize.target import DEFAULT_DEVICE
from edgewise.shared.openvino_settings import compile_properties


def compile_config(device: str = DEFAULT_DEVICE, threads: int | None = None) -> dict[str, Any]:
    """The properties OpenVINO compiles an Edgewise artifact with on `device`, one request at a time:
    the serving backend's own (shared/openvino_settings.py) for one instance."""
    return compile_properties(device, threads or 0, 1)


class Session:
    """One compiled model and one infer request: `run(None | names, feed) -> [arrays]`, like ONNX Runtime's."""

    def __init__(self, compiled: Any) -> None:  # noqa: ANN401 - openvino.CompiledModel
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._outputs = [o.any_name for o in compiled.outputs]

    @property
    def compiled(self) -> Any:  # noqa: ANN401 - openvino.CompiledModel, for its properties
        return self._compiled

    def run(self, names: Sequence[str] | None, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        self._request.infer(dict(feed))
        return [np.array(self._request.get_tensor(n).data, copy=True) for n in (names or self._outputs)]


def available_devices() -> list[str]:
    import openvino as ov

    return list(ov.Core().available_devices)


def session(path: Path, threads: int = 2, device: str = DEFAULT_DEVICE) -> Session:
    """Compile the ONNX file `path` for `device`; a model OpenVINO cannot read or compile raises TechniqueFailed."""
    import openvino as ov

    try:
        core = ov.Core()
        return Session(core.compile_model(core.read_model(str(path)), device, compile_config(device, threads)))
    except Exception as err:  # noqa: BLE001 - OpenVINO raises RuntimeError and its own types
        raise TechniqueFailed(f"OpenVINO cannot compile {path.name} for {device}: {_first_line(err)}") from err


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:400]
