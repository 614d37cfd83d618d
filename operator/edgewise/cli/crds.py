"""`edgewise crds`: print or write the CRDs generated from the API models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("crds", help="print or write the CustomResourceDefinitions (generated from the API)")
    p.add_argument("--out", type=Path, action="append", default=[], metavar="DIR",
                   help="write one file per CRD into DIR (repeatable, e.g. crds and charts/edgewise/crds); "
                        "without it, print a multi-document YAML stream")
    p.add_argument("--check", action="store_true",
                   help="with --out: write nothing, fail if a file differs from what would be written")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgewise.api.crd import rendered

    files = rendered()
    if not args.out:
        sys.stdout.write("---\n".join(files.values()))
        return 0
    stale = []
    for directory in args.out:
        for name, text in files.items():
            path = directory / name
            if args.check:
                if not path.exists() or path.read_text() != text:
                    stale.append(path)
                continue
            directory.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    for path in stale:
        print(f"{path} is out of date: run `edgewise crds --out {path.parent}`", file=sys.stderr)
    return 1 if stale else 0
