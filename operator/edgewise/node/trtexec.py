"""Building a TensorRT plan on the node with NVIDIA's `trtexec`: the command and the version.

The command is a pure function of the ONNX inputs, batching and precision so it
can be tested without TensorRT. A plan only runs on the GPU compute capability
and TensorRT version that built it; both go into its cache key
(`contract.plan_cache_key`), so they are resolved here too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from edgewise import contract
from edgewise.shared.tensors import TensorSpec

TRTEXEC_ENV = "EDGEWISE_TRTEXEC"
# Where NVIDIA's TensorRT and Triton images keep trtexec; not on their PATH.
TRTEXEC_FALLBACK = "/usr/src/tensorrt/bin/trtexec"
PRECISION_FLAGS = {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8"]}


def optimization_shapes(
    inputs: Sequence[TensorSpec], max_batch_size: int
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """min/opt/max shapes of the plan's optimization profile, per input with a dynamic dim.

    Only the batch dimension may be dynamic: it spans 1..max_batch_size (just 1
    without batching). Any other dynamic dimension has no range Edgewise could
    know, so it is refused with the input's name.
    """
    top = max(1, max_batch_size)
    shapes = {}
    for spec in inputs:
        if -1 not in spec.dims:
            continue
        if -1 in spec.dims[1:]:
            raise ValueError(
                f"input {spec.name} has dynamic dims {list(spec.dims)} beyond the batch dimension; "
                "a TensorRT plan needs them fixed: export the ONNX with static non-batch dims"
            )
        rest = spec.dims[1:]
        shapes[spec.name] = ((1, *rest), (top, *rest), (top, *rest))
    return shapes


def _shape_arg(shapes: Mapping[str, tuple[int, ...]]) -> str:
    def name(n: str) -> str:  # trtexec's quoting for names holding its separators
        return f"'{n}'" if (":" in n or "," in n) else n

    return ",".join(f"{name(n)}:{'x'.join(str(d) for d in dims)}" for n, dims in shapes.items())


def trtexec_command(
    trtexec: str, onnx_path: str | Path, plan_path: str | Path, *, precision: str,
    inputs: Sequence[TensorSpec] = (), max_batch_size: int = 0,
) -> list[str]:
    """argv that builds `plan_path` from `onnx_path` with the class's precision."""
    cmd = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={plan_path}", *PRECISION_FLAGS[precision]]
    shapes = optimization_shapes(inputs, max_batch_size)
    if shapes:
        for i, flag in enumerate(("--minShapes", "--optShapes", "--maxShapes")):
            cmd.append(f"{flag}={_shape_arg({n: s[i] for n, s in shapes.items()})}")
    return cmd


def parse_tensorrt_version(text: str) -> str | None:
    """'8.6.1' from trtexec's banner '[TensorRT v8601]' (10.x: 'v100300'), or 'TensorRT version: 8.6.1'."""
    if match := re.search(r"TensorRT[ _-]?version[:= ]+(\d+\.\d+(?:\.\d+)*)", text, re.IGNORECASE):
        return match.group(1)
    if match := re.search(r"TensorRT v(\d{4,6})\b", text):
        n = int(match.group(1))
        if n >= 100000:  # 10.x and later: MAJOR*10000 + MINOR*100 + PATCH
            return f"{n // 10000}.{n // 100 % 100}.{n % 100}"
        return f"{n // 1000}.{n // 100 % 10}.{n % 100}"  # 8.x: MAJOR*1000 + MINOR*100 + PATCH
    return None


def find_trtexec(explicit: str | None, env: Mapping[str, str]) -> str:
    """The trtexec to run: the flag, $EDGEWISE_TRTEXEC, `trtexec` on PATH, NVIDIA's usual path."""
    for candidate in (explicit, env.get(TRTEXEC_ENV)):
        if candidate:
            return candidate
    on_path = shutil.which("trtexec")
    if on_path:
        return on_path
    if os.access(TRTEXEC_FALLBACK, os.X_OK):
        return TRTEXEC_FALLBACK
    raise FileNotFoundError(f"trtexec not found: set ${TRTEXEC_ENV} or --trtexec")


def detect_tensorrt_version(trtexec: str, explicit: str | None, env: Mapping[str, str]) -> str:
    """The flag, $EDGEWISE_TENSORRT_VERSION, or what trtexec's banner says."""
    for candidate in (explicit, env.get(contract.TENSORRT_VERSION_ENV)):
        if candidate:
            return candidate
    # trtexec prints its banner with every invocation, also --help (exit code varies by release).
    proc = subprocess.run([trtexec, "--help"], capture_output=True, text=True, timeout=120, check=False)
    version = parse_tensorrt_version(proc.stdout + proc.stderr)
    if version is None:
        raise RuntimeError(f"could not read the TensorRT version from `{trtexec} --help`; "
                           f"set ${contract.TENSORRT_VERSION_ENV}")
    return version


def compute_capability(explicit: str | None, env: Mapping[str, str]) -> str:
    """'8.7' from the flag or the env the operator sets from nvidia.com/gpu.compute.major/minor."""
    value = explicit or env.get(contract.GPU_COMPUTE_CAPABILITY_ENV, "")
    if not re.fullmatch(r"\d+\.\d+", value):
        raise ValueError(
            f"GPU compute capability {value!r} is not MAJOR.MINOR; the operator sets "
            f"${contract.GPU_COMPUTE_CAPABILITY_ENV} from the node's nvidia.com/gpu.compute.* labels"
        )
    return value
