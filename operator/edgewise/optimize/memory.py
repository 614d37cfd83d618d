"""Peak memory of serving an artifact, measured in a fresh process that loads and runs it.

A separate process is the only honest measure: the optimizer's own process already holds
both models, the quantizer's buffers and numpy's caches. The child reports its high-water
mark (VmHWM, or ru_maxrss where /proc is missing) before loading the model (the interpreter
and ONNX Runtime) and after one session load plus inference on a real sample.

The runtime is the target's: ONNX Runtime's CPU provider, or OpenVINO (`--runtime openvino`,
compiled as `openvino_session` compiles it for the gates and for serving).

Run as `python -m edgewise.optimize.memory MODEL [--inputs SAMPLE.npz] [--threads N] [--runtime R]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Memory:
    peak_mib: float  # whole process: interpreter + ONNX Runtime + model + one inference
    baseline_mib: float  # the same process before loading the model

    @property
    def model_mib(self) -> float:
        """What the model itself costs: session, weights, arena of one inference."""
        return max(0.0, self.peak_mib - self.baseline_mib)


def _high_water_kib() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def measure(model: Path, sample: Path | dict[str, np.ndarray], threads: int = 2,
            timeout: float = 600.0, runtime: str = "onnxruntime", device: str = "CPU") -> Memory:
    """Load and run `model` on `sample` (a .npz path or arrays of one sample) in a child process."""
    with tempfile.TemporaryDirectory(prefix="edgewise-mem-") as tmp:
        if isinstance(sample, dict):
            path = Path(tmp) / "sample.npz"
            np.savez(path, **sample)  # type: ignore[arg-type]
            sample = path
        cmd = [sys.executable, "-m", "edgewise.optimize.memory", str(model), "--inputs", str(sample),
               "--threads", str(threads)]
        if runtime == "openvino":
            cmd += ["--runtime", "openvino", "--device", device]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return Memory(peak_mib=report["peak_kib"] / 1024.0, baseline_mib=report["baseline_kib"] / 1024.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgewise.optimize.memory")
    parser.add_argument("model")
    parser.add_argument("--inputs", required=True, help=".npz with one sample per input name")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runtime", choices=["onnxruntime", "openvino"], default="onnxruntime")
    parser.add_argument("--device", default="CPU", help="OpenVINO device")
    args = parser.parse_args(argv)

    with np.load(args.inputs) as npz:
        feed = {name: npz[name] for name in npz.files}
    if args.runtime == "openvino":
        import openvino  # noqa: F401 - the runtime's own memory belongs to the baseline, as ONNX Runtime's does

        from edgewise.optimize import openvino_session

        baseline = _high_water_kib()
        openvino_session.session(Path(args.model), args.threads, args.device).run(None, feed)
        print(json.dumps({"baseline_kib": baseline, "peak_kib": _high_water_kib()}))
        return 0

    import onnxruntime as ort

    baseline = _high_water_kib()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    sess.run(None, feed)
    print(json.dumps({"baseline_kib": baseline, "peak_kib": _high_water_kib()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
