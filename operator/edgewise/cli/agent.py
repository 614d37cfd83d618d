"""`edgewise agent`: the per-node artifact cache (a DaemonSet with host networking)."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

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


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("agent", help="run the node agent: the digest-verified cache of this node")
    p.add_argument("--host", default=os.environ.get(contract.AGENT_HOST_ENV, "127.0.0.1"),
                   help=f"address to bind: the node's own (default: ${contract.AGENT_HOST_ENV} or 127.0.0.1)")
    p.add_argument("--port", type=int, default=contract.AGENT_PORT)
    p.add_argument("--cache-dir", type=Path, default=Path(contract.AGENT_CACHE_DIR),
                   help="the hostPath holding the cache")
    p.add_argument("--max-cache-bytes", type=parse_size, default=parse_size("20Gi"),
                   help="evict least recently used artifacts above this size; also the most bytes "
                        "downloads may hold in flight (0: no budget)")
    p.add_argument("--keep-per-model", type=int, default=2,
                   help="newest digests of each model never evicted (rollback without download)")
    p.add_argument("--max-models", type=int, default=256,
                   help="model names whose newest digests are kept; the least recently used beyond lose it")
    p.add_argument("--file-root", type=Path, default=None,
                   help="allow file:// sources below this directory (disabled by default)")
    p.add_argument("--attempts", type=int, default=5, help="download attempts per fill, with backoff")
    p.add_argument("--timeout", type=_seconds, default=30.0, help="seconds a source may stay silent")
    p.add_argument("--sysfs-root", type=Path, default=Path("/sys"),
                   help="where the node's sysfs is: power (INA3221, RAPL) and temperatures (thermal zones, "
                        "hwmon) are read below it")
    p.add_argument("--no-verify-on-start", dest="scrub_on_start", action="store_false",
                   help="do not re-hash the cache in the background at start-up")
    auth = p.add_argument_group("callers", "who may call the agent (TokenReview of projected ServiceAccount "
                                           "tokens; see docs/node-cache.md)")
    auth.add_argument("--node-name", default=os.environ.get(contract.AGENT_NODE_NAME_ENV, ""),
                      help=f"this node: pods whose token is bound to it may use the agent "
                           f"(default: ${contract.AGENT_NODE_NAME_ENV})")
    auth.add_argument("--operator-user", action="append", default=[],
                      help="user name of the operator, e.g. system:serviceaccount:edgewise-system:edgewise-operator; "
                           "it may stage artifacts (repeatable)")
    auth.add_argument("--peer-user", action="append", default=[],
                      help="user name of the other nodes' agents, e.g. system:serviceaccount:edgewise-node:"
                           "edgewise-node-agent; they may stage and read artifacts by digest (repeatable)")
    auth.add_argument("--peer-token-file", type=Path, default=None,
                      help=f"this agent's token for its peers: a projected ServiceAccount token with audience "
                           f"{contract.AGENT_AUDIENCE} (re-read on every call); without it, no peer fetches")
    auth.add_argument("--audience", default=contract.AGENT_AUDIENCE, help="audience callers' tokens must have")
    auth.add_argument("--apiserver", default="",
                      help="apiserver URL for TokenReviews (default: in-cluster, $KUBERNETES_SERVICE_HOST)")
    auth.add_argument("--apiserver-token-file", type=Path, default=None,
                      help="the agent's own token for the apiserver (default: the in-cluster one)")
    auth.add_argument("--apiserver-ca", type=Path, default=None,
                      help="CA bundle of the apiserver (default: the in-cluster one)")
    dest = p.add_argument_group("destinations", "where downloads may go")
    dest.add_argument("--allow-host", action="append", default=[],
                      help="a source host allowed although it is loopback, link-local, a metadata service or "
                           "private under --deny-private (repeatable; the operator setting agentAllowHosts)")
    dest.add_argument("--deny-private", action="store_true",
                      help="also refuse private (RFC 1918, ULA, CGNAT) addresses not named by --allow-host")
    limits = p.add_argument_group("limits")
    limits.add_argument("--download-workers", type=int, default=4, help="downloads running at once")
    limits.add_argument("--max-downloads", type=int, default=64,
                        help="downloads queued or running; beyond, fills are refused with 429")
    limits.add_argument("--download-deadline", type=_seconds, default=7200.0,
                        help="seconds one download may take, retries included; /healthz answers 503 while "
                             "every download worker is past it")
    limits.add_argument("--telemetry-interval", type=_seconds, default=5.0,
                        help="seconds between background reads of power and temperature")
    limits.add_argument("--index-flush", type=_seconds, default=30.0,
                        help="seconds between writes of the index's use times that reads record")
    band = p.add_argument_group("bandwidth", "the default budget of downloads from sources (outside the site); "
                                             "the operator sends the site's own with each prefetch")
    band.add_argument("--bytes-per-second", type=parse_size, default=None,
                      help="byte rate of source downloads, e.g. 5M (default: no limit)")
    band.add_argument("--daily-bytes", type=parse_size, default=None,
                      help="bytes per day; past it source downloads wait for the next day (default: no cap)")
    band.add_argument("--daily-time-zone", default="UTC", help="IANA time zone whose midnight resets the cap")
    trust = p.add_argument_group("trust", "attestations of artifacts (docs/security.md); without trusted keys, "
                                          "artifacts are checked by digest only")
    trust.add_argument("--trusted-keys", type=Path, default=None,
                       help="the operator's attestation public keys: a PEM file or a directory of *.pem (two "
                            f"during a key rotation); default ${contract.TRUSTED_KEYS_ENV}")
    trust.add_argument("--require-signed-source", action="store_true",
                       help="refuse artifacts derived from a source model that was not signed")
    trust.add_argument("--plan-signing-key", type=Path, default=None,
                       help="this node's PEM private key: the agent attests each TensorRT plan it keeps (the ONNX "
                            "it was built from, the TensorRT version, this node); generated there (P-256, 0600) "
                            "when absent, its public key written beside it as <path>.pub for the pods of this "
                            "node; none: plans are not attested")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=run)


def config(args: argparse.Namespace) -> Any:
    """The agent's configuration from its flags; ValueError on a missing node name."""
    from edgewise.node import agent
    from edgewise.node.auth import Policy
    from edgewise.shared.bandwidth import Budget
    from edgewise.shared.destinations import Destinations

    if not args.node_name:
        raise ValueError(f"the agent needs its node's name: pass --node-name or set ${contract.AGENT_NODE_NAME_ENV} "
                         "(the DaemonSet sets it from spec.nodeName)")
    return agent.Config(
        host=args.host, port=args.port, cache_dir=args.cache_dir, max_bytes=args.max_cache_bytes,
        keep_per_model=args.keep_per_model, max_models=args.max_models, file_root=args.file_root,
        attempts=args.attempts, timeout=args.timeout, scrub_on_start=args.scrub_on_start,
        limits=agent.Limits(download_workers=args.download_workers, max_queued=args.max_downloads,
                            download_deadline=args.download_deadline, index_flush=args.index_flush,
                            telemetry_interval=args.telemetry_interval,
                            budget=Budget.from_wire({"bytesPerSecond": args.bytes_per_second,
                                                     "dailyBytes": args.daily_bytes,
                                                     "timeZone": args.daily_time_zone})),
        peer_token_file=args.peer_token_file,
        destinations=Destinations.of(args.allow_host, deny_private=args.deny_private),
        policy=Policy(node_name=args.node_name, operator_users=frozenset(args.operator_user),
                      peer_users=frozenset(args.peer_user)),
        sysfs_root=args.sysfs_root,
        trust=_trust(args),
        plan_signer=_plan_signer(args),
    )


def _plan_signer(args: argparse.Namespace) -> Any:
    import logging

    from edgewise.node.trust import node_plan_key
    from edgewise.shared.trust.keys import public_key_path

    if args.plan_signing_key is None:
        return None
    try:
        signer, created = node_plan_key(args.plan_signing_key)
    except OSError as err:
        raise ValueError(f"{args.plan_signing_key}: cannot read the plan signing key ({err.strerror or err})") \
            from err
    logging.getLogger("edgewise.agent").info(
        "%s this node's plan key %s at %s; its public key: %s", "generated" if created else "loaded",
        signer.key_id[:16], args.plan_signing_key, public_key_path(args.plan_signing_key))
    return signer


def _trust(args: argparse.Namespace) -> Any:
    from edgewise.node.trust import load_trust

    trust = load_trust(args.trusted_keys, args.require_signed_source)
    if trust is None and args.require_signed_source:
        raise ValueError("--require-signed-source needs --trusted-keys: signed sources are known from attestations")
    return trust


def verifier(args: argparse.Namespace) -> Any:
    """The TokenReview client; ValueError when no apiserver is known."""
    from edgewise.node.auth import ApiServer, TokenReviewVerifier

    pod = ApiServer.in_cluster()  # each flag overrides its in-cluster default
    url = args.apiserver or (pod.url if pod else "")
    token_file = args.apiserver_token_file or (pod.token_file if pod else None)
    if not url or token_file is None:
        raise ValueError("the agent checks callers' tokens with the apiserver: run it in a pod with its "
                         "ServiceAccount token, or pass --apiserver and --apiserver-token-file")
    ca_file = args.apiserver_ca or (pod.ca_file if pod else None)
    return TokenReviewVerifier(ApiServer(url, token_file, ca_file), args.audience)


def run(args: argparse.Namespace) -> int:
    import logging

    from edgewise.node import agent

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        cfg, check = config(args), verifier(args)
    except ValueError as err:
        logging.getLogger("edgewise.agent").error("%s", err)
        return 2
    agent.run(cfg, check)
    return 0
