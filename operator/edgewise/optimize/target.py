"""What an artifact is for: the runtime that will load it, the precision asked for, the CPU.

A Target is the cache key of optimization: one artifact per (source digest, target).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

Runtime = Literal["onnxruntime", "triton-tensorrt", "triton-onnx"]
Precision = Literal["int8", "fp16", "fp32", "auto"]
# How int8 artifacts are made (EdgeModel spec.optimization.quantization).
Quantization = Literal["auto", "dynamic", "static", "none"]

RUNTIMES: tuple[str, ...] = get_args(Runtime)
PRECISIONS: tuple[str, ...] = get_args(Precision)
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)

# CPU features that change how int8 is made. Names follow Node Feature Discovery's
# `feature.node.kubernetes.io/cpu-cpuid.<NAME>` labels, lower-cased; `arm64` stands for the
# architecture (kubernetes.io/arch), where ONNX Runtime's int8 kernels use SDOT/I8MM.
VNNI_FEATURES = frozenset({"avx512vnni", "avxvnni", "amxint8"})
ARM64 = "arm64"


def normalize_feature(name: str) -> str:
    """`AVX512_VNNI`, `avx512vnni` and `cpu-cpuid.AVX512VNNI` all mean the same flag."""
    return name.rsplit(".", 1)[-1].replace("_", "").replace("-", "").lower()


@dataclass(frozen=True)
class Target:
    """The hardware class's runtime, requested precision and CPU features."""

    runtime: Runtime = "onnxruntime"
    precision: Precision = "auto"
    cpu_features: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {self.runtime!r} (one of {', '.join(RUNTIMES)})")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r} (one of {', '.join(PRECISIONS)})")
        object.__setattr__(self, "cpu_features", frozenset(normalize_feature(f) for f in self.cpu_features))

    @property
    def on_cpu(self) -> bool:
        """ONNX Runtime's CPU provider serves the artifact (Edgewise's own server)."""
        return self.runtime == "onnxruntime"

    @property
    def has_vnni(self) -> bool:
        return bool(self.cpu_features & VNNI_FEATURES)

    @property
    def is_arm64(self) -> bool:
        return ARM64 in self.cpu_features

    def key(self) -> str:
        """A stable string naming the target, e.g. `onnxruntime/int8/arm64` (part of the cache key)."""
        features = ",".join(sorted(self.cpu_features)) or "-"
        return f"{self.runtime}/{self.precision}/{features}"
