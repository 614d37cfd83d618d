"""One optimization job, run by the operator in its own process with memory and time limits.

    python -m edgewise.optimize.job JOB_DIR

JOB_DIR/job.json says what to do (source and calibration by URI and sha256, the target and
the options). The job downloads them — verifying each digest, retrying with backoff — runs
the optimizer and writes JOB_DIR/report.json and, when accepted, JOB_DIR/artifact.onnx. A
failure before the optimizer (unreachable source, digest mismatch) is a report too, so the
operator always learns why.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from edgewise.node.download import DigestMismatchError, DownloadError, download_file
from edgewise.optimize.errors import OptimizeError
from edgewise.optimize.gates import AccuracyGate
from edgewise.optimize.pipeline import Options, optimize
from edgewise.optimize.target import Target


def run(job_dir: Path) -> dict[str, Any]:
    spec = json.loads((job_dir / "job.json").read_text())
    try:
        src = job_dir / "source.onnx"
        download_file(spec["source"]["uri"], src, spec["source"]["sha256"])
        calibration = None
        if spec.get("calibration"):
            calibration = job_dir / "calibration.npz"
            download_file(spec["calibration"]["uri"], calibration, spec["calibration"].get("sha256", ""))
    except DigestMismatchError as err:
        return {"outcome": "DigestMismatch", "message": f"{err}; nothing was optimized or deployed"}
    except (DownloadError, OSError) as err:
        return {"outcome": "SourceUnavailable", "message": str(err)}
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
