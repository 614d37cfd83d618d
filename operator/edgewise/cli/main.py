"""`edgewise` command: one binary for the operator, the node runtime and dev tools.

Each subcommand lives in its own module with `register(subparsers)`; modules
import their heavy dependencies inside the handler so `edgewise --help` is quick
and the node image need not carry the operator's libraries.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Module names under edgewise.cli, one per subcommand group.
COMMANDS = ["serve", "agent", "fetch", "dev", "operator_run", "crds", "optimize", "optimize_job"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgewise", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"edgewise.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    code = args.func(args)
    sys.exit(code or 0)
