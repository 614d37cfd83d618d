"""`kubectl edgewise status|promote|abort|pause|resume|retry|history|rollback` — the rollout controls.

Installed as the `kubectl-edgewise` console script, so kubectl finds it as a
plugin. Every control is a write through the Kubernetes API (an annotation the
operator acts on, or a spec patch for rollback); nothing goes around it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from edgewise.api.commands import COMMAND_ANNOTATION, Command
from edgewise.api.resources import GROUP, VERSION, EdgeModel

PLURAL = EdgeModel.PLURAL


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubectl edgewise", description="Inspect and steer Edgewise rollouts.")
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    p.add_argument("-n", "--namespace", default=None, help="namespace of the EdgeModel (default: kubeconfig's)")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = sub.add_parser("status", help="per-class rollout state with the last analysis")
    status.add_argument("model")
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
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=args.kubeconfig) if args.kubeconfig \
        else config.new_client_from_config()
    namespace = args.namespace or _default_namespace(args.kubeconfig)
    custom = client.CustomObjectsApi(api)
    try:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, args.model)
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
        if cond.get("status") != "True" or cond["type"] in ("Progressing", "Degraded"):
            lines.append(f"  {cond['type']}={cond['status']} {cond.get('reason', '')}: {cond.get('message', '')}")
    header = f"{'CLASS':<16} {'STATE':<12} {'STEP':<6} {'CANARY%':<8} {'STABLE':<14} {'CANARY':<14} NODES(c/s)"
    lines += ["", header]
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
        last = c.get("lastAnalysis")
        if last:
            lines.append(f"    analysis {last['time']}: {last['message']} "
                         f"(canary pods {last.get('canaryPods', 0)}, stable pods {last.get('stablePods', 0)}"
                         f", deferred {last.get('deferredPods', 0)})")
    return "\n".join(lines)


def render_history(obj: dict[str, Any]) -> str:
    history = ((obj.get("status") or {}).get("rollout") or {}).get("history") or []
    lines = [f"{'REVISION':<9} {'VERSION':<14} {'OUTCOME':<12} {'STARTED':<21} REASON"]
    for h in history:
        lines.append(f"{h['revision']:<9} {h['version']:<14} {h['outcome']:<12} {h['startedAt']:<21} "
                     f"{h.get('reason', '')}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
