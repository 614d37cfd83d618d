"""Argo CD itself judging what the real operator does: health of live EdgeModels, actions that reach it.

The examples' model walks through the states a GitOps user meets — not yet observed, a spec the
operator has not seen, a canary waiting for analysis, paused by a user, paused at a step, promoted,
aborted (rolled back), its profile deleted. At each, Argo CD's own binary evaluates the live object
with the shipped argocd-cm snippet (the same Lua sandbox the application controller uses). The
rollout commands are Argo CD's actions: `run-action` computes the object, and its change (the
command annotation) is patched onto the EdgeModel, as Argo CD's server patches it; the operator
must act on each.

EDGEWISE_ARGOCD_CAPTURE=1 also writes every live object to the customizations' testdata: that is
how charts/argocd/resource_customizations/edgewise.io/*/testdata were made.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from operator_support import Operator, apply, condition, example, get, rollout_classes, wait_status

from argocd.argocd_support import CUSTOMIZATIONS, health, list_actions, run_action
from edgewise.api.commands import COMMAND_ANNOTATION
from edgewise.devcluster.cluster import DevCluster

MODEL, PROFILE, CLASS = "defect-detector", "factory-floor", "arm-cpu"
CAPTURE = os.environ.get("EDGEWISE_ARGOCD_CAPTURE") == "1"
TESTDATA_NAMESPACE = "vision"  # the examples' own namespace, so testdata read like the examples
# States the action cases start from (actions/testdata); their expected outputs are Argo CD's results.
ACTION_INPUTS = {"canary-progressing.yaml", "paused-by-user.yaml", "canary-paused.yaml", "promoted.yaml",
                 "rolled-back.yaml", "reverted.yaml"}


def _live(cluster: DevCluster, ns: str, kind: str, name: str, where: Path, file: str, testdata: bool = True) -> Path:
    """The live object, as Argo CD's cache holds it (no managedFields), written to `where`/`file`
    (and, when capturing, to the testdata)."""
    obj = get(cluster, kind, name, "-n", ns)
    obj["metadata"].pop("managedFields", None)
    obj["metadata"].get("annotations", {}).pop("kubectl.kubernetes.io/last-applied-configuration", None)
    text = yaml.safe_dump(obj, sort_keys=False)
    path = where / file
    path.write_text(text)
    if CAPTURE and testdata:
        # The test's namespace (in metadata and in messages) becomes the examples' own.
        kept = text.replace(ns, TESTDATA_NAMESPACE)
        kind_dir = CUSTOMIZATIONS / "edgewise.io" / ("EdgeModel" if kind == "edgemodel" else "DeploymentProfile")
        (kind_dir / "testdata" / file).write_text(kept)
        if kind == "edgemodel" and file in ACTION_INPUTS:
            (kind_dir / "actions" / "testdata" / file).write_text(kept)
    return path


def _act(cluster: DevCluster, ns: str, live: Path, action: str) -> str:
    """Run `action` through Argo CD and patch what it changed onto the EdgeModel; the command's id."""
    result = run_action(live, action)
    command = result["metadata"]["annotations"][COMMAND_ANNOTATION]
    cluster.kubectl("patch", "edgemodel", MODEL, "-n", ns, "--type", "merge", "-p",
                    json.dumps({"metadata": {"annotations": {COMMAND_ANNOTATION: command}}}))
    return str(json.loads(command)["id"])


def _arm(obj: dict[str, Any]) -> dict[str, Any]:
    return rollout_classes(obj).get(CLASS, {})


def _observed(obj: dict[str, Any]) -> bool:
    return bool(obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"])


def _handled(command_id: str):
    return lambda o: ((o.get("status") or {}).get("rollout") or {}).get("lastCommand") == command_id


def _enabled(actions: dict[str, bool]) -> set[str]:
    return {name for name, disabled in actions.items() if not disabled}


def test_argocd_follows_a_rollout_and_its_actions_reach_the_operator(
    cluster: DevCluster, namespace: str, fleet, operator: Operator, tmp_path: Path
) -> None:
    fleet({"arm64-cpu": 2})
    docs = example("factory-floor-profile.yaml", namespace) + example("defect-detector.yaml", namespace)
    model = docs[1]

    # Synced before the operator has looked: no status yet.
    operator.stop()
    apply(cluster, docs)
    assert health(_live(cluster, namespace, "edp", PROFILE, tmp_path, "new.yaml")).status == "Progressing"
    new = health(_live(cluster, namespace, "edgemodel", MODEL, tmp_path, "new.yaml"))
    assert new.status == "Progressing" and "Waiting for the Edgewise operator" in new.message
    operator.start()

    wait_status(cluster, namespace, MODEL, lambda o: _observed(o) and o["status"].get("phase") == "Ready", "Ready")
    ready = health(_live(cluster, namespace, "edgemodel", MODEL, tmp_path, "ready.yaml"))
    assert ready.status == "Healthy" and "2.1.0" in ready.message, ready
    wait_for_profile = health(_live(cluster, namespace, "edp", PROFILE, tmp_path, "matched.yaml"))
    assert wait_for_profile.status == "Healthy" and f"{CLASS}=2" in wait_for_profile.message, wait_for_profile

    # Git moves to a new version before the operator sees it: the old status says nothing about it.
    operator.stop()
    model["spec"]["version"] = "2.2.0"
    apply(cluster, model)
    ahead = health(_live(cluster, namespace, "edgemodel", MODEL, tmp_path, "generation-ahead.yaml"))
    assert ahead.status == "Progressing" and "generation 2" in ahead.message, ahead
    operator.start()

    # The canary waits for a passing analysis (the simulated pods answer none): Progressing.
    wait_status(cluster, namespace, MODEL, lambda o: _observed(o) and _arm(o).get("canaryVersion") == "2.2.0"
                and _arm(o).get("state") == "Progressing", "canary of 2.2.0")
    live = _live(cluster, namespace, "edgemodel", MODEL, tmp_path, "canary-progressing.yaml")
    assert health(live).status == "Progressing"
    assert _enabled(list_actions(live)) == {"promote", "promote-full", "abort", "pause"}

    # pause / resume through Argo CD.
    handled = _handled(_act(cluster, namespace, live, "pause"))
    wait_status(cluster, namespace, MODEL, lambda o: handled(o) and _arm(o).get("pausedByUser")
                and _arm(o).get("state") == "Paused", "paused by Argo CD's action")
    live = _live(cluster, namespace, "edgemodel", MODEL, tmp_path, "paused-by-user.yaml")
    paused = health(live)
    assert paused.status == "Suspended" and "paused by a user" in paused.message, paused
    assert _enabled(list_actions(live)) == {"promote", "promote-full", "abort", "resume"}
    handled = _handled(_act(cluster, namespace, live, "resume"))
    wait_status(cluster, namespace, MODEL, lambda o: handled(o) and not _arm(o).get("pausedByUser")
                and _arm(o).get("state") == "Progressing", "resumed")
    assert "Resumed" in _events(cluster, namespace)

    # promote skips the analysis wait; the next step is the example's 10-minute pause: Suspended.
    live = _live(cluster, namespace, "edgemodel", MODEL, tmp_path, "resumed.yaml", testdata=False)
    handled = _handled(_act(cluster, namespace, live, "promote"))
    wait_status(cluster, namespace, MODEL, lambda o: handled(o) and _arm(o).get("state") == "Paused"
                and _arm(o).get("stepIndex") == 1, "at the pause step")
    at_pause = health(_live(cluster, namespace, "edgemodel", MODEL, tmp_path, "canary-paused.yaml"))
    assert at_pause.status == "Suspended" and "pause 10m" in at_pause.message, at_pause

    # promote-full: every node on 2.2.0, Healthy, nothing left to act on but nothing to retry either.
    live = tmp_path / "canary-paused.yaml"
    handled = _handled(_act(cluster, namespace, live, "promote-full"))
    wait_status(cluster, namespace, MODEL, lambda o: handled(o) and _arm(o).get("state") == "Stable"
                and _arm(o).get("stableVersion") == "2.2.0" and o["status"].get("phase") == "Ready", "2.2.0 promoted")
    live = _live(cluster, namespace, "edgemodel", MODEL, tmp_path, "promoted.yaml")
    promoted = health(live)
    assert promoted.status == "Healthy" and "2.2.0" in promoted.message, promoted
    assert _enabled(list_actions(live)) == set()

    # A new version, aborted through Argo CD: rolled back, Degraded with the operator's message; retry applies.
    model["spec"]["version"] = "2.3.0"
    apply(cluster, model)
    wait_status(cluster, namespace, MODEL, lambda o: _observed(o) and _arm(o).get("canaryVersion") == "2.3.0",
                "canary of 2.3.0")
    live = _live(cluster, namespace, "edgemodel", MODEL, tmp_path, "canary-2.3.0.yaml", testdata=False)
    handled = _handled(_act(cluster, namespace, live, "abort"))
    wait_status(cluster, namespace, MODEL, lambda o: handled(o) and _arm(o).get("state") == "RolledBack"
                and o["status"].get("phase") == "Degraded", "2.3.0 rolled back")
    live = _live(cluster, namespace, "edgemodel", MODEL, tmp_path, "rolled-back.yaml")
    rolled_back = health(live)
    assert rolled_back.status == "Degraded", rolled_back
    assert "RolledBack" in rolled_back.message and "rolled back to 2.2.0" in rolled_back.message, rolled_back
    assert _enabled(list_actions(live)) == {"retry"}
    handled = _handled(_act(cluster, namespace, live, "retry"))
    wait_status(cluster, namespace, MODEL, lambda o: handled(o) and _arm(o).get("canaryVersion") == "2.3.0"
                and _arm(o).get("state") == "Progressing", "2.3.0 retried")
    live = _live(cluster, namespace, "edgemodel", MODEL, tmp_path, "retried.yaml")
    assert health(live).status == "Progressing"

    # Rolled back again, then Git reverts to the stable version (the GitOps way back): Argo CD says
    # what the operator's Degraded condition says.
    handled = _handled(_act(cluster, namespace, live, "abort"))
    wait_status(cluster, namespace, MODEL, lambda o: handled(o) and _arm(o).get("state") == "RolledBack",
                "2.3.0 rolled back again")
    model["spec"]["version"] = "2.2.0"
    apply(cluster, model)
    obj = wait_status(cluster, namespace, MODEL, lambda o: _observed(o) and not _arm(o).get("canaryRevision"),
                      "back on 2.2.0 in Git")
    reverted = health(_live(cluster, namespace, "edgemodel", MODEL, tmp_path, "reverted.yaml"))
    degraded = condition(obj, "Degraded").get("status") == "True"
    assert reverted.status == ("Degraded" if degraded else "Healthy"), (reverted, condition(obj, "Degraded"))
    assert _enabled(list_actions(tmp_path / "reverted.yaml")) == set()  # nothing to retry: Git moved on

    # The profile is deleted: Degraded, with the operator's reason; what runs keeps running.
    cluster.kubectl("delete", "edp", PROFILE, "-n", namespace)
    wait_status(cluster, namespace, MODEL, lambda o: condition(o, "ProfileResolved").get("status") == "False",
                "ProfileNotFound")
    missing = health(_live(cluster, namespace, "edgemodel", MODEL, tmp_path, "profile-missing.yaml"))
    assert missing.status == "Degraded" and "ProfileNotFound" in missing.message, missing
    assert f"DeploymentProfile {PROFILE} not found" in missing.message


def _events(cluster: DevCluster, ns: str) -> str:
    return cluster.kubectl("get", "events", "-n", ns, "--field-selector", f"involvedObject.name={MODEL}",
                           "-o", "custom-columns=REASON:.reason", "--no-headers").stdout
