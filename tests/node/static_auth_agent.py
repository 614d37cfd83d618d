"""`edgewise agent` with a fixed table of tokens in place of the apiserver's TokenReview.

Only for tests that run the agent as a process without a control plane (tests/node):
everything else — flags, authorization rules, handlers — is the real agent. The
TokenReview itself is tested against a real apiserver in tests/cluster/test_agent_auth.py.

    python static_auth_agent.py TOKENS.json <flags of `edgewise agent`>

TOKENS.json maps a token to the caller a TokenReview would report: {"user", "node", "pod"}.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from edgewise.cli import agent as cli
from edgewise.node import agent
from edgewise.node.auth import Caller


class StaticVerifier:
    def __init__(self, table: dict[str, dict[str, str]]) -> None:
        self.table = table

    async def verify(self, token: str) -> Caller | None:
        entry = self.table.get(token)
        return Caller(**entry) if entry else None


def main() -> None:
    tokens = json.loads(Path(sys.argv[1]).read_text())
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["agent", *sys.argv[2:]])
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    agent.run(cli.config(args), StaticVerifier(tokens))


if __name__ == "__main__":
    main()
