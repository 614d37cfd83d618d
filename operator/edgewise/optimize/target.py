"""What an artifact is for: the runtime that will load it, the precision asked for, the CPU.

A Target is the cache key of optimization: one artifact per (source digest, target). OpenVINO
targets also name the OpenVINO device (CPU, GPU, NPU, AUTO); the other runtimes have none, and
their keys are exactly what they were before OpenVINO existed (artifacts already made keep theirs).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from edgewise.contract import Device, Quantization, Runtime
from edgewise.contract import Precision as ServedPrecision

# What a hardware class serves, or `auto`: the runtime's natural precision, as the optimizer picks it.
Precision = Literal[ServedPrecision, "auto"]

RUNTIMES: tuple[str, ...] = get_args(Runtime)
PRECISIONS: tuple[str, ...] = get_args(Precision)
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)
DEVICES: tuple[str, ...] = get_args(Device)
DEFAULT_DEVICE: Device = "CPU"

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
    """The hardware class's runtime, requested precision and CPU features (and OpenVINO device)."""

    runtime: Runtime = "onnxruntime"
    precision: Precision = "auto"
    cpu_features: frozenset[str] = field(default_factory=frozenset)
    device: Device | None = None  # openvino only; None there means CPU

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {self.runtime!r} (one of {', '.join(RUNTIMES)})")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r} (one of {', '.join(PRECISIONS)})")
        if self.runtime == "openvino":
            device = self.device or DEFAULT_DEVICE
            if device not in DEVICES:
                raise ValueError(f"unknown OpenVINO device {device!r} (one of {', '.join(DEVICES)})")
            object.__setattr__(self, "device", device)
        elif self.device is not None:
            raise ValueError(f"device {self.device!r} applies to the openvino runtime only, not {self.runtime}; "
                             "leave it out")
        object.__setattr__(self, "cpu_features", frozenset(normalize_feature(f) for f in self.cpu_features))

    @property
    def on_cpu(self) -> bool:
        """ONNX Runtime's CPU provider serves the artifact (Edgewise's own server)."""
        return self.runtime == "onnxruntime"

    @property
    def on_openvino(self) -> bool:
        return self.runtime == "openvino"

    @property
    def runs_on_host_cpu(self) -> bool:
        """The artifact computes on the node's CPU: ONNX Runtime's CPU provider or OpenVINO's CPU device."""
        return self.on_cpu or (self.on_openvino and self.device == "CPU")

    @property
    def has_vnni(self) -> bool:
        return bool(self.cpu_features & VNNI_FEATURES)

    @property
    def is_arm64(self) -> bool:
        return ARM64 in self.cpu_features

    def key(self) -> str:
        """A stable string naming the target, e.g. `onnxruntime/int8/arm64` (part of the cache key).

        OpenVINO's ends with the device (`openvino/int8/avx2/CPU`); the others have no device part.
        """
        features = ",".join(sorted(self.cpu_features)) or "-"
        key = f"{self.runtime}/{self.precision}/{features}"
        return f"{key}/{self.device}" if self.on_openvino else key

    def measurable_on(self, host_features: frozenset[str]) -> bool:
        """Whether latency measured on a machine with `host_features` speaks for this class's CPUs.

        Only for ONNX Runtime on the CPU and OpenVINO's CPU device, when the class's CPU features
        are known and the machine has every one of them, on the same architecture. A machine with more features
        (say VNNI the class lacks) runs int8 at least as well as the class: an artifact that is
        slower there is slower on the class too, which is what the automatic speed gate needs.
        """
        if not self.runs_on_host_cpu or not self.cpu_features:
            return False
        return (ARM64 in host_features) == self.is_arm64 and self.cpu_features <= host_features


def host_cpu_features(cpuinfo: str | None = None, machine: str | None = None) -> frozenset[str]:
    """This machine's CPU flags, in the same normalized names as a Target's (plus `arm64`)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, arm64
            flags |= {normalize_feature(f) for f in value.split()}
    if (machine or platform.machine()).lower() in ("aarch64", "arm64"):
        flags.add(ARM64)
    return frozenset(flags)
