"""`kubectl edgewise status|list|promote|abort|pause|resume|retry|history|rollback|completion`.

Installed as the `kubectl-edgewise` console script, so kubectl finds it as a
plugin. Every control is a write through the Kubernetes API (an annotation the
operator acts on, or a spec patch for rollback); nothing goes around it.
`status --watch` is the CI gate: its exit code says how the rollout ended
(cli/plugin/verdict.py). The plugin needs only the base install (`pip install
edgewise`): nothing here may import the operator's or the nodes' dependencies.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any, cast

from edgewise.api.commands import COMMAND_ANNOTATION, Command
from edgewise.api.resources import GROUP, VERSION, EdgeModel
from edgewise.cli.plugin import completion
from edgewise.cli.plugin.verdict import Exit

PLURAL = EdgeModel.PLURAL


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubectl edgewise", description="Inspect and steer Edgewise rollouts.")
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    p.add_argument("-n", "--namespace", default=None, help="namespace of the EdgeModel (default: kubeconfig's)")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = sub.add_parser("status", help="per-class rollout state with the last analysis",
                            description="With --watch, follow the rollout and exit with how it ended: "
                                        "0 promoted, 3 rolled back or aborted, 4 Degraded, 5 timed out, "
                                        "1 error (e.g. not found), 2 bad arguments.")
    status.add_argument("model")
    status.add_argument("-w", "--watch", action="store_true",
                        help="follow the rollout of the current spec until it is promoted, rolled back or "
                             "Degraded, printing a line per change")
    status.add_argument("--timeout", default="10m", type=_duration,
                        help="with --watch: give up after this long (exit 5), e.g. 90s, 10m, 1h (default 10m)")
    listing = sub.add_parser("list", help="every EdgeModel with its per-class rollout state")
    listing.add_argument("-A", "--all-namespaces", action="store_true", help="in every namespace")
    history = sub.add_parser("history", help="revisions and how their rollouts ended")
    history.add_argument("model")
    for verb, text in (("promote", "skip the current step (a pause, or waiting for analysis)"),
                       ("abort", "roll the canary back to stable now"),
                       ("pause", "hold the rollout where it is"), ("resume", "continue a paused rollout"),
                       ("retry", "roll out again a revision that failed")):
        cmd = sub.add_parser(verb, help=text)
        cmd.add_argument("model")
        cmd.add_argument("--class", dest="classes", action="append", default=[],
                         help="only this hardware class (repeatable; default every class)")
        if verb == "promote":
            cmd.add_argument("--full", action="store_true", help="skip every remaining step")
    rollback = sub.add_parser("rollback", help="roll out an earlier revision again (a new canary)")
    rollback.add_argument("model")
    rollback.add_argument("--to-revision", type=int, required=True)
    shell = sub.add_parser("completion", help="shell completion script (bash or zsh)",
                           description="source <(kubectl edgewise completion bash); kubectl's own completion "
                                       "completes `kubectl edgewise` through kubectl_complete-edgewise.")
    shell.add_argument("shell", choices=completion.SHELLS)
    return p


def _duration(text: str) -> float:
    from edgewise.core.durations import seconds

    try:
        return seconds(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.action == "completion":
        print(completion.script(args.shell), end="")
        return
    from kubernetes import client

    custom = client.CustomObjectsApi(_api_client(args.kubeconfig))
    namespace = args.namespace or _default_namespace(args.kubeconfig)
    if args.action == "list":
        from edgewise.cli.plugin.listing import render_list

        items = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL) if args.all_namespaces \
            else custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        print(render_list(cast(dict[str, Any], items).get("items") or [], args.all_namespaces))
        return
    try:
        if args.action == "status" and args.watch:
            _watch(custom, namespace, args.model, args.timeout)
        obj = cast(dict[str, Any], custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                                        args.model))
    except client.ApiException as err:
        sys.exit(f"kubectl edgewise: EdgeModel {namespace}/{args.model}: {err.reason} ({err.status})")
    if args.action == "status":
        print(render_status(obj))
    elif args.action == "history":
        print(render_history(obj))
    elif args.action == "rollback":
        body = rollback_patch(obj, args.to_revision)
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, args.model, body)
        print(f"edgemodel/{args.model}: rolling out revision {args.to_revision} "
              f"(version {body['spec']['version']}) as a new canary")
    else:
        verb = "promote-full" if args.action == "promote" and args.full else args.action
        command = Command.new(verb, tuple(args.classes))
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, args.model,
                                              {"metadata": {"annotations": {COMMAND_ANNOTATION:
                                                                            command.to_annotation()}}})
        where = ", ".join(args.classes) or "every class"
        print(f"edgemodel/{args.model}: {verb} requested for {where} (command {command.id})")


def _watch(custom: Any, namespace: str, name: str, timeout: float) -> None:
    """Follow the rollout, print the final status and the verdict, and exit with the verdict's code."""
    from edgewise.cli.plugin.watch import watch_until_verdict

    verdict = watch_until_verdict(custom, namespace, name, timeout, lambda line: print(line, flush=True))
    try:
        print("\n" + render_status(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)))
    except Exception:  # noqa: BLE001 - the verdict is what counts; the table is a courtesy
        pass
    print(f"\n{verdict.exit.name if verdict.exit is not None else 'UNKNOWN'}: {verdict.reason}", flush=True)
    sys.exit(int(verdict.exit if verdict.exit is not None else Exit.ERROR))


def _api_client(kubeconfig: str | None) -> Any:
    from kubernetes import config

    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    try:
        return config.new_client_from_config()
    except config.ConfigException:  # a CI job running in a pod, with its ServiceAccount
        from kubernetes import client

        config.load_incluster_config()
        return client.ApiClient()


def complete_main() -> None:
    """`kubectl_complete-edgewise WORD... CURRENT`: kubectl's plugin completion convention."""
    print(completion.candidates(build_parser(), sys.argv[1:], _lookup).render(), end="")


def _lookup(kind: str, flags: Mapping[str, str]) -> list[str]:
    """Names for completion; nothing when the cluster does not answer quickly (never an error on a TAB)."""
    try:
        from kubernetes import client

        kubeconfig = flags.get("kubeconfig") or os.environ.get("KUBECONFIG")
        namespace = flags.get("namespace")
        api = _api_client(kubeconfig)
        if kind == "namespaces":
            found = client.CoreV1Api(api).list_namespace(_request_timeout=3).items
            return sorted(str(n.metadata.name) for n in found if n.metadata)
        listed = cast(dict[str, Any], client.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, VERSION, namespace or _default_namespace(kubeconfig), PLURAL, _request_timeout=3))
        return sorted(o["metadata"]["name"] for o in listed["items"])
    except Exception:  # noqa: BLE001
        return []


def _default_namespace(kubeconfig: str | None) -> str:
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        return str(active["context"].get("namespace") or "default")
    except Exception:
        return "default"


def rollback_patch(obj: dict[str, Any], revision: int) -> dict[str, Any]:
    history = ((obj.get("status") or {}).get("rollout") or {}).get("history") or []
    record = next((h for h in history if h.get("revision") == revision), None)
    if record is None:
        known = ", ".join(str(h.get("revision")) for h in history) or "none"
        sys.exit(f"kubectl edgewise: revision {revision} is not in the history (known: {known})")
    source = {"uri": record["sourceUri"]}
    if record.get("sourceSha256"):
        source["sha256"] = record["sourceSha256"]
    return {"spec": {"version": record["version"], "source": source}}


def render_status(obj: dict[str, Any]) -> str:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    rollout = status.get("rollout") or {}
    steps = len(((spec.get("rollout") or {}).get("steps")) or [])
    lines = [f"EdgeModel {meta['namespace']}/{meta['name']}: version {spec.get('version')}, "
             f"phase {status.get('phase', '-')}, revision {rollout.get('revision', 0)}, "
             f"ready {status.get('ready', '-')}"]
    if status.get("address"):
        lines.append(f"  address (node-local): {status['address']}:8000 (HTTP), :8001 (gRPC)")
    for cond in status.get("conditions") or []:
        # SourceTrusted=True too: it names the source's signer (docs/security.md).
        if cond.get("status") != "True" or cond["type"] in ("Progressing", "Degraded", "SourceTrusted"):
            lines.append(f"  {cond['type']}={cond['status']} {cond.get('reason', '')}: {cond.get('message', '')}")
    header = f"{'CLASS':<16} {'STATE':<12} {'STEP':<6} {'CANARY%':<8} {'STABLE':<14} {'CANARY':<14} NODES(c/s)"
    lines += ["", header]
    served = {c.get("name"): c for c in status.get("classes") or []}
    for c in rollout.get("classes") or []:
        step = f"{c.get('stepIndex', 0) + 1}/{steps}" if c.get("canaryRevision") else "-"
        stable = f"{c.get('stableVersion') or '-'} ({c.get('stableSlot', 'a')})"
        lines.append(f"{c['name']:<16} {c.get('state', '-'):<12} {step:<6} {str(c.get('percent', 0)) + '%':<8} "
                     f"{stable:<14} {c.get('canaryVersion') or '-':<14} "
                     f"{c.get('canaryNodes', 0)}/{c.get('stableNodes', 0)}")
        if c.get("message"):
            lines.append(f"    {c['message']}")
        if c.get("switch"):
            lines.append(f"    switch {c['switch']}: {c.get('switchReason', '')}")
        lines += _artifact_line(served.get(c["name"]) or {})
        tally = c.get("tally")
        if tally and tally.get("version") in (c.get("canaryVersion"), spec.get("version")):
            kinds = [f"{tally.get(k, 0)} {what}" for k, what in (
                ("failedPods", "failed"), ("crashLooped", "crash-looped"), ("failedAnalysis", "failed analysis"),
                ("timedOut", "timed out")) if tally.get(k)]
            lines.append(f"    nodes that tried {tally['version']}: {tally.get('tried', 0)}"
                         + (f" ({', '.join(kinds)})" if kinds else ", none failed"))
        last = c.get("lastAnalysis")
        if last:
            lines.append(f"    analysis {last['time']}: {last['message']} "
                         f"(canary pods {last.get('canaryPods', 0)}, stable pods {last.get('stablePods', 0)}"
                         f", deferred {last.get('deferredPods', 0)})")
        lines += _site_lines(c)
    return "\n".join(lines)


def _artifact_line(c: dict[str, Any]) -> list[str]:
    """The optimized artifact a class serves and who attested it (none when it serves the source itself)."""
    if not c.get("attestation") or not c.get("artifactDigest"):
        return []
    attested = "not attested" if c["attestation"] == "none" else f"attested by {c['attestation']}"
    return [f"    artifact sha256:{c['artifactDigest'][:12]} ({c.get('precision') or '-'}), {attested}"]


def _site_lines(c: dict[str, Any]) -> list[str]:
    """A class's per-site progress (rollouts with site steps), one line per site in rollout order."""
    sites = c.get("sites") or []
    if not sites:
        return []
    out = [f"    {'SITE':<20} {'NODES':<6} {'CANARY':<7} {'READY':<6} VERDICT"]
    for p in sites:
        name = (p.get("site") or '""') + (" *" if p.get("canarySite") else "")
        out.append(f"    {name:<20} {p.get('nodes', 0):<6} {p.get('canaryNodes', 0):<7} {p.get('readyNodes', 0):<6} "
                   f"{p.get('verdict') or '-'}")
    out.append("    (* canary site; \"\": nodes without the site label)")
    return out


def render_history(obj: dict[str, Any]) -> str:
    history = ((obj.get("status") or {}).get("rollout") or {}).get("history") or []
    lines = [f"{'REVISION':<9} {'VERSION':<14} {'OUTCOME':<12} {'STARTED':<21} REASON"]
    for h in history:
        lines.append(f"{h['revision']:<9} {h['version']:<14} {h['outcome']:<12} {h['startedAt']:<21} "
                     f"{h.get('reason', '')}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
