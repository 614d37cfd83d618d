"""`edgewise agent`: the per-node artifact cache (a DaemonSet with host networking)."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from edgewise import contract

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str) -> int | None:
    """'20Gi', '500M', '1048576' -> bytes (Kubernetes quantity suffixes); '0' or '' -> no budget."""
    match = re.fullmatch(r"\s*(\d+)\s*([kKmMgGtT]i?)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 20Gi, 500M, 1048576)")
    value = int(match.group(1)) * _UNITS[(match.group(2) or "").lower()]
    return value or None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("agent", help="run the node agent: the digest-verified cache of this node")
    p.add_argument("--host", default=os.environ.get(contract.AGENT_HOST_ENV, "127.0.0.1"),
                   help=f"address to bind: the node's own (default: ${contract.AGENT_HOST_ENV} or 127.0.0.1)")
    p.add_argument("--port", type=int, default=contract.AGENT_PORT)
    p.add_argument("--cache-dir", type=Path, default=Path(contract.AGENT_CACHE_DIR),
                   help="the hostPath holding the cache")
    p.add_argument("--max-cache-bytes", type=parse_size, default=parse_size("20Gi"),
                   help="evict least recently used artifacts above this size (0: never evict)")
    p.add_argument("--keep-per-model", type=int, default=2,
                   help="newest digests of each model never evicted (rollback without download)")
    p.add_argument("--file-root", type=Path, default=None,
                   help="allow file:// sources below this directory (disabled by default)")
    p.add_argument("--attempts", type=int, default=5, help="download attempts per fill, with backoff")
    p.add_argument("--no-verify-on-start", dest="scrub_on_start", action="store_false",
                   help="do not re-hash the cache in the background at start-up")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from edgewise.node import agent

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    agent.run(
        host=args.host, port=args.port, cache_dir=args.cache_dir, max_bytes=args.max_cache_bytes,
        keep_per_model=args.keep_per_model, file_root=args.file_root, attempts=args.attempts,
        scrub_on_start=args.scrub_on_start,
    )
    return 0
