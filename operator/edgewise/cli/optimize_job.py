"""`edgewise optimize-job`: the entry point of an optimization Job's pod (spec.optimization.runIn: Job)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from edgewise import contract


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "optimize-job", help="run one optimization job and upload its results (inside a Kubernetes Job)",
        description=f"Reads the job from ${contract.JOB_SPEC_ENV} and the upload token from "
                    f"${contract.JOB_TOKEN_ENV}; the Job the operator creates sets both (the token from its Secret).")
    p.add_argument("--work", default=contract.JOB_WORK_DIR, help="scratch directory (an emptyDir)")
    p.add_argument("--upload", required=True, metavar="URL",
                   help="where results go: the operator's store, .../uploads/<job key>")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgewise.optimize.job import run_in_pod
    from edgewise.shared import tracing

    missing = [name for name in (contract.JOB_SPEC_ENV, contract.JOB_TOKEN_ENV) if not os.environ.get(name)]
    if missing:
        raise SystemExit(f"edgewise optimize-job: {', '.join(missing)} not set; this command runs inside the "
                         "Job the operator creates")
    tracing.configure("edgewise-optimize")  # only when OTEL_* asks for traces
    try:
        return run_in_pod(Path(args.work), args.upload, dict(os.environ))
    finally:
        tracing.flush()  # the Job's pod ends right after: send its attempts' spans first
