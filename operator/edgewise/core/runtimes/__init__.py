"""Inference runtimes: one small interface (interface.py), one module per
implementation, and a factory (factory.py).

A runtime decides two things for a hardware class: how the class's nodes split
into workloads (TensorRT plans are specific to a GPU compute capability, so a
Jetson class gets one workload per capability; CPU runtimes need one), and the
pod spec that serves the model.
"""

from __future__ import annotations

from edgewise.core.runtimes.factory import get_runtime
from edgewise.core.runtimes.interface import Artifact, PodContext, Runtime, Split, Variant

__all__ = ["Artifact", "PodContext", "Runtime", "Split", "Variant", "get_runtime"]
