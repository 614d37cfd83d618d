"""One optimization job, run by the operator in its own process with memory and time limits.

    python -m edgewise.optimize.job JOB_DIR

JOB_DIR/job.json says what to do (source and calibration by URI and sha256, the target and
the options). The job downloads them — verifying each digest, retrying with backoff — runs
the optimizer and writes JOB_DIR/report.json and, when accepted, JOB_DIR/artifact.onnx. A
failure before the optimizer (unreachable source, digest mismatch) is a report too, so the
operator always learns why.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgewise.node.download import DownloadError, download
from edgewise.optimize.errors import OptimizeError
from edgewise.optimize.gates import AccuracyGate
from edgewise.optimize.pipeline import Options, optimize
from edgewise.optimize.target import Target


@dataclass
class _FileSink:
    path: Path

    def __post_init__(self) -> None:
        self.f = open(self.path, "wb")  # noqa: SIM115 - closed by close()

    def write(self, data: bytes) -> None:
        self.f.write(data)

    def reset(self) -> None:
        self.f.seek(0)
        self.f.truncate()

    def tell(self) -> int:
        return self.f.tell()

    def close(self) -> None:
        self.f.close()


def fetch(uri: str, sha256: str, dest: Path) -> None:
    sink = _FileSink(dest)
    try:
        download(uri, sink, attempts=4, base_delay=1.0)
    finally:
        sink.close()
    got = hashlib.sha256(dest.read_bytes()).hexdigest()
    if sha256 and got != sha256:
        dest.unlink()
        raise ValueError(f"{uri}: sha256 is {got}, the spec says {sha256}; nothing was optimized or deployed")


def run(job_dir: Path) -> dict[str, Any]:
    spec = json.loads((job_dir / "job.json").read_text())
    try:
        src = job_dir / "source.onnx"
        fetch(spec["source"]["uri"], spec["source"]["sha256"], src)
        calibration = None
        if spec.get("calibration"):
            calibration = job_dir / "calibration.npz"
            fetch(spec["calibration"]["uri"], spec["calibration"].get("sha256", ""), calibration)
    except (DownloadError, ValueError, OSError) as err:
        reason = "DigestMismatch" if "sha256 is" in str(err) else "SourceUnavailable"
        return {"outcome": reason, "message": str(err)}
    t, o = spec["target"], spec["options"]
    target = Target(runtime=t["runtime"], precision=t["precision"], cpu_features=frozenset(t["cpuFeatures"]))
    options = Options(quantization=o["quantization"], keep_float=tuple(o.get("keepFloat") or ()),
                      fallback=o["fallback"], gate=AccuracyGate(min_cosine=o["minCosine"],
                                                                max_top1_drop_percent=o["maxTop1DropPercent"]),
                      max_memory_mib=o.get("maxMemoryMiB"), node_allocatable_mib=o.get("nodeAllocatableMiB"),
                      max_samples=o.get("maxSamples", 256), threads=o.get("threads", 2))
    try:
        report = optimize(src, job_dir / "artifact.onnx", target, calibration=calibration, options=options,
                          work_dir=job_dir)
    except OptimizeError as err:
        return {"outcome": err.reason, "message": str(err)}
    return json.loads(report.to_json())


def main() -> None:
    job_dir = Path(sys.argv[1])
    report = run(job_dir)
    tmp = job_dir / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    tmp.rename(job_dir / "report.json")  # the operator reads a whole report or none


if __name__ == "__main__":
    main()
