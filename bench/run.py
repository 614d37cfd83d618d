"""`make bench`: every benchmark, one after the other (or `make bench BENCH=serve|optimize|rollout`).

Each prints its results; docs/benchmarks.md records them with the command and the machine.
Timings never appear in tests: they live here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {
    "serve": [str(HERE / "serve" / "run.py")],
    "optimize": [str(HERE / "optimize" / "run.py")],
    "rollout": [str(HERE / "rollout" / "run.py")],
}


def main() -> int:
    chosen = sys.argv[1:] or list(BENCHES)
    unknown = [b for b in chosen if b not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    failed = []
    for name in chosen:
        print(f"== bench {name}", flush=True)
        if subprocess.run([sys.executable, *BENCHES[name]]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
