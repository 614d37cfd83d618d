"""GitOps end to end: Argo CD syncs the model from git, and its health follows the real rollout.

Argo CD's application controller, repo server and API server (hack/argocd, core mode: processes
on this machine, no UI) run against the test cluster with Debian's redis and a git repository
served by `git http-backend` on loopback. Edgewise's argocd-cm snippet is all that teaches Argo CD
about EdgeModels. The model's pods are real `edgewise serve` processes (the pod runner), with real
traffic, so the operator's analysis measures real latencies:

- the first commit syncs and the Application turns Healthy;
- a new version with a pause step: Progressing until the operator has seen it, then Suspended;
  `promote-full` run through Argo CD's API server reaches the operator, and the Application is Healthy;
- a commit that regresses (a much slower model) is rolled back by the operator by itself, and the
  Application shows Degraded with the rollback's message, while Git still says the new version;
- `abort` through Argo CD rolls a held canary back: Degraded, "aborted by a user".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from operator_support import Operator, get, rollout_classes
from rollout_support import MODEL, edgemodel, profile

from argocd.git_http import commit_tree
from argocd.gitops_support import ArgoCD, running_argocd
from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.podrunner import PodRunner
from edgewise.devcluster.traffic import Traffic, serving
from wait_support import wait_for

APP = "models"
EXAMPLE_APP = Path(__file__).resolve().parents[2] / "examples" / "argocd" / "application.yaml"


def _files(ns: str, model: dict[str, Any]) -> dict[str, str]:
    return {"profile.yaml": yaml.safe_dump(profile(ns)), "model.yaml": yaml.safe_dump(model)}


def _model_health(argo: ArgoCD) -> dict[str, Any]:
    """The EdgeModel's health as the Application records it (status.resources, persisted by the controller)."""
    app = argo.app(APP)
    for res in app.get("status", {}).get("resources") or []:
        if res.get("kind") == "EdgeModel" and res.get("name") == MODEL:
            return dict(res.get("health") or {})
    return {}


SEEN: list[tuple[str, str, str, str]] = []  # (revision, sync, health, the EdgeModel's health message) in order


def _app_is(argo: ArgoCD, health: str, revision: str, message: str = "") -> dict[str, Any] | None:
    """The Application, once synced to `revision` with `health` (and the EdgeModel's message has `message`)."""
    app = argo.app(APP)
    status = app.get("status", {})
    model = next((dict(r.get("health") or {}) for r in status.get("resources") or []
                  if r.get("kind") == "EdgeModel" and r.get("name") == MODEL), {})
    seen = (str(status.get("sync", {}).get("revision", ""))[:8], str(status.get("sync", {}).get("status")),
            str(status.get("health", {}).get("status")), str(model.get("message", "")))
    if not SEEN or SEEN[-1] != seen:
        SEEN.append(seen)
    synced = status.get("sync", {}).get("status") == "Synced" and status.get("sync", {}).get("revision") == revision
    if synced and status.get("health", {}).get("status") == health and message in model.get("message", ""):
        return app
    return None


def test_argocd_syncs_from_git_and_its_health_follows_the_rollout(
    cluster: DevCluster, namespace: str, fleet, operator: Operator, models: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    fleet({"arm64-cpu": 2})
    good, slow, golden = models["good"], models["slow"], models["golden"]
    work = tmp_path / "argocd"
    with running_argocd(cluster, work, with_api_server=True) as argo, \
            cluster.api_client() as api, \
            PodRunner(api, tmp_path / "pods", namespace, f"edgewise.io/model={MODEL}").start() as runner, \
            Traffic(runner, MODEL):
        repo, clone = work / "git" / f"{APP}.git", work / "clone"
        try:
            # 1. The first commit: synced, and Healthy once every node serves 1.0.
            sha = commit_tree(repo, clone, _files(namespace, edgemodel(namespace, "1.0", good, golden)), "1.0")
            # examples/argocd/application.yaml is a valid Application (the API server checks it against
            # Argo CD's CRD), with the automated sync and self-heal this one has.
            example = yaml.safe_load((EXAMPLE_APP).read_text())
            example["metadata"]["namespace"] = argo.namespace
            argo.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(example))
            assert example["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
            argo.application(APP, argo.git.url(APP), ".", namespace)
            wait_for(lambda: _app_is(argo, "Healthy", sha), 240, "the Application synced and Healthy on 1.0")
            wait_for(lambda: serving(runner, 2), 120, "two pods serving 1.0")

            # 2. A new version that stops at a pause. Until the operator has seen it (it is down for a moment,
            # so Argo CD surely looks in between), Progressing; then the pause holds it: Suspended.
            v2 = edgemodel(namespace, "2.0", good, golden, steps=[{"percent": 50}, {"pause": {}}, {"percent": 100}])
            operator.stop()
            sha = commit_tree(repo, clone, _files(namespace, v2), "2.0, held at a pause")
            argo.refresh(APP)
            wait_for(lambda: _app_is(argo, "Progressing", sha, "observe generation 2"), 120,
                     "Progressing: the operator has not seen 2.0 yet")
            operator.start()
            wait_for(lambda: _app_is(argo, "Suspended", sha, "paused until"), 180, "Suspended at the pause")

            # promote-full, through Argo CD's API server: the operator promotes 2.0 everywhere. (A plain
            # promote skips one step per class, and the profile's Jetson class, with no node, is a step
            # behind: its analysis has no canary pod to measure.)
            listed = argo.cli("app", "actions", "list", APP, "--kind", "EdgeModel", "--group", "edgewise.io",
                              "--resource-name", MODEL, "--namespace", namespace)
            assert "promote" in listed and "retry" in listed, listed
            argo.cli("app", "actions", "run", APP, "promote-full", "--kind", "EdgeModel", "--group", "edgewise.io",
                     "--resource-name", MODEL, "--namespace", namespace)
            wait_for(lambda: _app_is(argo, "Healthy", sha, "2.0"), 180, "Healthy on 2.0 after promote-full")
            obj = get(cluster, "edgemodel", MODEL, "-n", namespace)
            assert all(c["stableVersion"] == "2.0" for c in rollout_classes(obj).values()
                       if c.get("stableRevision")), obj["status"]["rollout"]
            assert str(obj["status"]["rollout"]["lastCommand"]).startswith("argocd-promote-full-")

            # 3. A regression: the operator rolls it back by itself; Argo CD says Degraded, with why.
            v3 = edgemodel(namespace, "3.0-slow", slow, golden)
            sha = commit_tree(repo, clone, _files(namespace, v3), "3.0: slower")
            argo.refresh(APP)
            app = wait_for(lambda: _app_is(argo, "Degraded", sha, "rolled back to 2.0"), 240,
                           "Degraded after the rollback")
            message = _model_health(argo)["message"]
            assert message.startswith("RolledBack: ") and "latency" in message, message
            assert app["status"]["sync"]["status"] == "Synced"  # Git's spec is what the cluster holds

            # 4. A good version held at a pause, aborted through Argo CD: rolled back, Degraded, and why.
            v4 = edgemodel(namespace, "4.0", good, golden, steps=[{"percent": 50}, {"pause": {}}, {"percent": 100}])
            sha = commit_tree(repo, clone, _files(namespace, v4), "4.0, held at a pause")
            argo.refresh(APP)
            wait_for(lambda: _app_is(argo, "Suspended", sha, "paused until"), 180, "4.0 Suspended at the pause")
            argo.cli("app", "actions", "run", APP, "abort", "--kind", "EdgeModel", "--group", "edgewise.io",
                     "--resource-name", MODEL, "--namespace", namespace)
            wait_for(lambda: _app_is(argo, "Degraded", sha, "4.0 rolled back to 2.0: aborted by a user"), 180,
                     "Degraded after abort")
            obj = get(cluster, "edgemodel", MODEL, "-n", namespace)
            assert str(obj["status"]["rollout"]["lastCommand"]).startswith("argocd-abort-")
            assert obj["status"]["rollout"]["history"][-1]["outcome"] == "Aborted"
        except BaseException:
            status = argo.app(APP).get("status", {})
            print("application:", json.dumps({k: status.get(k) for k in ("sync", "health", "resources",
                                                                        "conditions", "operationState")}, indent=1))
            print("edgemodel:", json.dumps(get(cluster, "edgemodel", MODEL, "-n", namespace).get("status"), indent=1))
            print("seen:", *SEEN, sep="\n  ")
            print(argo.logs())
            raise
