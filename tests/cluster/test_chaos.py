"""Chaos, with invariants: faults at seeded points, and a final state equal to an undisturbed run's.

The same three-phase story — a first version optimized per class, a second version (new source, new
artifacts) rolled out and promoted, a third version rolled out and promoted — runs twice on one fleet with
one operator (its built-in artifact store, real optimization workers): once undisturbed, in a reference
namespace, then with faults. The faults: the operator SIGKILLed (with its workers, as a container kill)
at 20 points drawn from a seeded random generator, the apiserver and etcd restarted mid-rollout, a node
flapping NotReady. What a fault hits depends on timing; what is checked does not: the DaemonSets (names,
slots, pod templates, artifact digests), the pods per node, the rollout history and artifacts equal the
reference's; every digest a workload fetches is one the optimizer produced, and a real `edgewise fetch`
verifies it before `edgewise serve` serves it; after recovery a fresh operator writes nothing.

A node agent killed mid-download (a source that stalls halfway) comes back with no partial artifact,
and the download completes, verified.

SEED (EDGEWISE_CHAOS_SEED) picks the kill points; a failure message names it, to replay the same plan.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_support import Operator, apply, classes, get, rollout_classes, set_node_ready
from test_agent_auth import _answers, chart_rbac, token  # noqa: F401 (chart_rbac is a fixture)

from edgewise import contract
from edgewise.devcluster import demo_models, processes
from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.podrunner import PodRunner
from edgewise.devcluster.traffic import serving
from node.cache_support import SourceServer, free_port, http
from wait_support import wait_for

SEED = int(os.environ.get("EDGEWISE_CHAOS_SEED", "20261203"))
MODEL = "detector"
ORIN, ARM = "jetson-orin", "arm64-cpu"
KILLS = 20


# -- the story ---------------------------------------------------------------------------------------


def _profile(ns: str) -> dict[str, Any]:
    # Neither class can be measured on this machine (a GPU, an ARM CPU): no speed gate, so the artifacts
    # are the same bytes in every run, whatever the load.
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "DeploymentProfile",
            "metadata": {"name": "fleet", "namespace": ns},
            "spec": {"classes": [
                {"name": "jetson", "nodeSelector": {"nvidia.com/gpu.family": "ampere"},
                 "runtime": "triton-tensorrt", "precision": "fp16"},
                {"name": "arm", "nodeSelector": {"kubernetes.io/arch": "arm64"}, "runtime": "onnxruntime",
                 "precision": "int8", "threads": 1}]}}


def _model(ns: str, version: str, src: Path) -> dict[str, Any]:
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": MODEL, "namespace": ns},
            "spec": {"profileRef": "fleet", "version": version,
                     "source": {"uri": src.as_uri(), "sha256": demo_models.sha256(src)},
                     "optimization": {"quantization": "dynamic", "accuracyGate": {"minCosine": 0.98}},
                     "rollout": {"steps": [{"percent": 50}, {"pause": {}}, {"percent": 100}],
                                 "analysis": {"provider": "none"}, "progressDeadline": "10m"}}}


def _sources(root: Path) -> dict[str, Path]:
    """The versions' source files under `root`: versions 1.0 and 3.0 share one, 2.0 has its own.
    Each run has its own paths (so its own optimization jobs) and the same bytes."""
    v1 = demo_models.good(root / "a" / "model.onnx")
    v2 = demo_models.wrong(root / "b" / "model.onnx")  # other weights: a new artifact for 2.0
    return {"1.0": v1, "2.0": v2, "3.0": v1}


def _obj(cluster: DevCluster, ns: str) -> dict[str, Any]:
    return get(cluster, "edgemodel", MODEL, "-n", ns)


def _stable_everywhere(cluster: DevCluster, ns: str, version: str) -> Callable[[], bool]:
    def check() -> bool:
        obj = _obj(cluster, ns)
        rc = rollout_classes(obj)
        arts = classes(obj)
        return (set(rc) == {"jetson", "arm"}
                and all(c["state"] == "Stable" and c.get("stableVersion") == version for c in rc.values())
                and all(a.get("artifactState") == "Ready" for a in arts.values())
                and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
                and obj["status"].get("phase") == "Ready")
    return check


def _paused(cluster: DevCluster, ns: str, version: str) -> Callable[[], bool]:
    def check() -> bool:
        rc = rollout_classes(_obj(cluster, ns))
        return set(rc) == {"jetson", "arm"} and all(
            c["state"] == "Paused" and c.get("canaryVersion") == version for c in rc.values())
    return check


def _steps(cluster: DevCluster, ns: str) -> dict[str, tuple[Any, ...]]:
    """Where each class's rollout stands: step, percent, canary version and revision."""
    return {n: (c.get("stepIndex"), c.get("percent"), c.get("canaryVersion"), c.get("canaryRevision"))
            for n, c in rollout_classes(_obj(cluster, ns)).items()}


def _promote(cluster: DevCluster, ns: str) -> None:
    out = subprocess.run([sys.executable, "-m", "edgewise.cli.kubectl_plugin", "--kubeconfig",
                          str(cluster.kubeconfig), "-n", ns, "promote", MODEL], capture_output=True, text=True,
                         check=True, timeout=120)
    assert "promote requested" in out.stdout, out


class Faults:
    """What the story does at its fault points: nothing (the reference run), or faults."""

    def after_apply(self, phase: str) -> None: ...
    def while_paused(self, phase: str) -> None: ...
    def after_promote(self, phase: str) -> None: ...


def _wait(cluster: DevCluster, ns: str, check: Callable[[], bool], what: str, timeout: float = 240) -> None:
    """wait_for, and when it fails, what the model and its workloads looked like (to debug a seed)."""
    try:
        wait_for(check, timeout, f"{ns}: {what} (seed {SEED})")
    except pytest.fail.Exception as failed:
        obj = _obj(cluster, ns)
        workloads = {d["metadata"]["name"]: (d["metadata"].get("generation"), d["status"],
                                              d["spec"]["template"]["spec"].get("affinity"))
                     for d in get(cluster, "daemonsets", "-n", ns)["items"]}
        pytest.fail(f"{failed}\nstatus: {json.dumps(obj.get('status'), indent=1)}\n"
                    f"daemonsets: {json.dumps(workloads, indent=1)}")


def _run_story(cluster: DevCluster, ns: str, sources: dict[str, Path], faults: Faults) -> dict[str, Any]:
    """Run the three versions; where each class stood once each version was everywhere."""
    apply(cluster, [_profile(ns), _model(ns, "1.0", sources["1.0"])])
    faults.after_apply("1.0")
    _wait(cluster, ns, _stable_everywhere(cluster, ns, "1.0"), "1.0 optimized and everywhere")
    milestones = {"1.0": _milestone(cluster, ns)}
    for version in ("2.0", "3.0"):
        apply(cluster, _model(ns, version, sources[version]))
        faults.after_apply(version)
        _wait(cluster, ns, _paused(cluster, ns, version), f"{version} paused at 50%")
        faults.while_paused(version)
        _promote(cluster, ns)
        faults.after_promote(version)
        _wait(cluster, ns, _stable_everywhere(cluster, ns, version), f"{version} promoted")
        milestones[version] = _milestone(cluster, ns)
    return milestones


def _milestone(cluster: DevCluster, ns: str) -> dict[str, Any]:
    """What a finished version looks like: each class's stable slot and revision, and the workloads."""
    return {"classes": {n: (c.get("stableSlot"), c.get("stableRevision"), c.get("stableVersion"))
                        for n, c in rollout_classes(_obj(cluster, ns)).items()},
            "daemonsets": sorted(d["metadata"]["name"] for d in get(cluster, "daemonsets", "-n", ns)["items"])}


def _events(cluster: DevCluster, ns: str) -> str:
    """The model's events in order: what the operator did, for a failure message."""
    return cluster.kubectl("get", "events", "-n", ns, "--sort-by=.lastTimestamp", "-o",
                           "custom-columns=T:.lastTimestamp,N:.count,REASON:.reason,MESSAGE:.message",
                           "--no-headers").stdout


# -- the invariants ----------------------------------------------------------------------------------


def _normal(value: Any, ns: str, root: Path) -> Any:
    """`value` with what differs between the runs by construction (namespace, source paths) made equal."""
    text = json.dumps(value, sort_keys=True).replace(str(root), "<sources>").replace(ns, "<ns>")
    return json.loads(text)


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two JSON values differ, path by path: a readable failure message."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in _diff(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {json.dumps(a)} != {json.dumps(b)}"]


def _fetch_digest(ds: dict[str, Any]) -> str:
    args = ds["spec"]["template"]["spec"]["initContainers"][0]["args"]
    return str(args[args.index("--sha256") + 1])


def _final_state(cluster: DevCluster, ns: str, root: Path) -> dict[str, Any]:
    """What must not depend on faults: workloads, pods per node, rollout outcome, artifacts."""
    obj = _obj(cluster, ns)
    daemonsets = {}
    for ds in get(cluster, "daemonsets", "-n", ns)["items"]:
        meta = ds["metadata"]
        # The spec-hash annotation hashes the namespace and the owner's uid too: the template is compared whole.
        daemonsets[meta["name"]] = {"labels": meta.get("labels", {}), "annotations": {
            k: v for k, v in (meta.get("annotations") or {}).items()
            if k.startswith("edgewise.io/") and k != "edgewise.io/spec-hash"},
            "template": ds["spec"]["template"], "digest": _fetch_digest(ds)}
    pods: dict[str, list[tuple[str, str, str]]] = {}
    for p in get(cluster, "pods", "-n", ns, "-l", f"edgewise.io/model={MODEL}")["items"]:
        if p["metadata"].get("deletionTimestamp") or p["status"].get("phase") != "Running":
            continue
        labels = p["metadata"]["labels"]
        owner = p["metadata"]["ownerReferences"][0]["name"]
        pods.setdefault(p["spec"]["nodeName"], []).append((owner, labels["edgewise.io/version"],
                                                           labels.get("controller-revision-hash", "")))
    history = [(h["revision"], h["version"], h["outcome"]) for h in obj["status"]["rollout"]["history"]]
    return _normal({
        "daemonsets": daemonsets,
        # Nodes by name are shared by both runs: the same node must run the same workload and version.
        # and the same pod template (its hash: the revision the DaemonSet controller stamped on it).
        "pods": {n: sorted(running) for n, running in pods.items()},
        "rollout": {n: (c["state"], c.get("stableVersion"), c.get("stableSlot"), c.get("stableRevision"))
                    for n, c in rollout_classes(obj).items()},
        "history": history,
        "artifacts": {n: (c.get("artifactDigest"), c.get("precision"), c.get("artifactState"))
                      for n, c in classes(obj).items()},
        "phase": obj["status"]["phase"], "ready": obj["status"]["ready"],
    }, ns, root)


def _check_no_duplicates_and_verified(cluster: DevCluster, ns: str) -> None:
    obj = _obj(cluster, ns)
    produced = {c["artifactDigest"] for c in classes(obj).values()} | {obj["spec"]["source"]["sha256"]}
    names = [d["metadata"]["name"] for d in get(cluster, "daemonsets", "-n", ns)["items"]]
    assert len(names) == len(set(names)) and set(names) <= {
        f"{MODEL}-{c}-{s}" for c in ("jetson-sm87", "arm") for s in "ab"}, names
    for ds in get(cluster, "daemonsets", "-n", ns)["items"]:
        assert _fetch_digest(ds) in produced, (ds["metadata"]["name"], _fetch_digest(ds), produced)
    per_node: dict[tuple[str, str], int] = {}
    for p in get(cluster, "pods", "-n", ns, "-l", f"edgewise.io/model={MODEL}")["items"]:
        if not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") == "Running":
            key = (p["spec"]["nodeName"], p["metadata"]["labels"]["edgewise.io/class"])
            per_node[key] = per_node.get(key, 0) + 1
    assert all(n == 1 for n in per_node.values()), per_node  # one serving pod per node and class


def _versions(cluster: DevCluster, operator: Operator, namespaces: list[str]) -> dict[str, str]:
    objs = [get(cluster, "daemonset", operator.settings_agent(), "-n", operator.agent_namespace)]
    for ns in namespaces:
        objs += [_obj(cluster, ns), get(cluster, "edp", "fleet", "-n", ns),
                 *get(cluster, "daemonsets", "-n", ns)["items"]]
    return {f"{o['metadata'].get('namespace')}/{o['kind']}/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
            for o in objs}


# -- the faults --------------------------------------------------------------------------------------


class Chaos(Faults):
    """20 operator kills spread over the phases, the apiserver and etcd restarted while a rollout is
    paused mid-way, a node flapping NotReady before a promotion. Every fault is recorded."""

    # Kills per fault point: optimization and first placement of each version, then its promotion.
    PLAN = {("1.0", "apply"): 6, ("2.0", "apply"): 4, ("2.0", "promote"): 3,
            ("3.0", "apply"): 4, ("3.0", "promote"): 3}

    def __init__(self, cluster: DevCluster, operator: Operator, ns: str, flapper: str) -> None:
        assert sum(self.PLAN.values()) == KILLS
        self.cluster, self.operator, self.ns, self.flapper = cluster, operator, ns, flapper
        self.rng = random.Random(SEED)
        self.survived: list[str] = []

    def after_apply(self, phase: str) -> None:
        self._kills(phase, self.PLAN[(phase, "apply")])

    def after_promote(self, phase: str) -> None:
        self._kills(phase, self.PLAN[(phase, "promote")])

    def while_paused(self, phase: str) -> None:
        component = {"2.0": "kube-apiserver", "3.0": "etcd"}[phase]
        where = _steps(self.cluster, self.ns)
        self.cluster.restart(component)
        self.survived.append(f"{component} restarted with {phase} paused at 50%")
        if phase == "3.0":
            for i in range(self.rng.randint(2, 3)):
                set_node_ready(self.cluster, self.flapper, False, "uplink lost (chaos)")
                wait_for(lambda: _node_ready(self.cluster, self.flapper) is False, 60, f"{self.flapper} NotReady")
                set_node_ready(self.cluster, self.flapper, True)
                wait_for(lambda: _node_ready(self.cluster, self.flapper) is True, 60, f"{self.flapper} Ready")
                self.survived.append(f"{self.flapper} flapped NotReady ({i + 1})")
        # The rollout is still paused where it was, whatever happened meanwhile.
        wait_for(_paused(self.cluster, self.ns, phase), 120, f"{phase} still paused after the faults")
        assert _steps(self.cluster, self.ns) == where, (where, self.survived)

    def _kills(self, phase: str, n: int) -> None:
        for _ in range(n):
            if self.rng.random() < 0.5:
                delay = round(self.rng.uniform(0.0, 3.0), 2)
                time.sleep(delay)  # where the kill lands, not what is checked
                point = f"{delay}s after the (re)start"
            else:
                k = self.rng.randint(1, 3)
                writes = _write_lines_seen(self.operator, self.ns, k)
                point = f"after {writes} reconcile(s) with writes in {self.ns} (aimed at {k})"
            self.operator.kill()
            self.survived.append(f"operator SIGKILL during {phase}: {point}")
            self.operator.start()


def _write_lines_seen(operator: Operator, ns: str, k: int, timeout: float = 6) -> int:
    """Wait (at most `timeout`) until the operator's log shows `k` reconciles of `ns` that wrote something;
    how many it showed. Not reaching `k` only moves the kill point: the phase may have been done."""
    def count() -> int:
        return sum(1 for line in operator.log().splitlines()
                   if f"reconciled edgemodel {ns}/" in line and "writes=0" not in line)
    deadline = time.monotonic() + timeout
    while count() < k and time.monotonic() < deadline:
        time.sleep(0.1)
    return count()


def _node_ready(cluster: DevCluster, node: str) -> bool | None:
    conds = get(cluster, "node", node)["status"].get("conditions") or []
    ready = next((c for c in conds if c["type"] == "Ready"), None)
    return None if ready is None else ready["status"] == "True"


# -- the tests ---------------------------------------------------------------------------------------


@pytest.fixture
def two_namespaces(cluster: DevCluster) -> Iterator[tuple[str, str]]:
    made = []
    for role in ("ref", "chaos"):
        name = f"t-{role}-{random.Random().getrandbits(24):06x}"
        cluster.kubectl("create", "namespace", name)
        cluster.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
        made.append(name)
    wait_for(lambda: all(_has_default_sa(cluster, n) for n in made), 60, "default ServiceAccounts")
    try:
        yield made[0], made[1]
    finally:
        for name in made:
            cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _has_default_sa(cluster: DevCluster, ns: str) -> bool:
    return cluster.kubectl("get", "serviceaccount", "default", "-n", ns, check=False).returncode == 0


def test_faults_at_seeded_points_end_in_the_undisturbed_state_with_no_extra_writes(
        cluster: DevCluster, two_namespaces: tuple[str, str], fleet, store_operator: Operator,
        tmp_path: Path) -> None:
    ref_ns, chaos_ns = two_namespaces
    nodes = fleet({ORIN: 2, ARM: 2})
    ref_root, chaos_root = tmp_path / "ref", tmp_path / "chaos"
    ref_sources = _sources(ref_root)
    chaos_sources = {}
    for version, path in ref_sources.items():  # the same bytes at other paths
        target = chaos_root / path.relative_to(ref_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        chaos_sources[version] = target

    ref_milestones = _run_story(cluster, ref_ns, ref_sources, Faults())
    reference = _final_state(cluster, ref_ns, ref_root)
    _check_no_duplicates_and_verified(cluster, ref_ns)
    # The reference leaves the fleet to the chaos run: each Jetson has one GPU, and a pod holds it.
    cluster.kubectl("delete", "edgemodel", MODEL, "-n", ref_ns, "--wait=true")
    wait_for(lambda: not get(cluster, "pods", "-n", ref_ns, "-l", f"edgewise.io/model={MODEL}")["items"], 120,
             "the reference's pods to go")

    flapper = sorted(n for n in nodes if ARM in n)[0]
    chaos = Chaos(cluster, store_operator, chaos_ns, flapper)
    milestones = _run_story(cluster, chaos_ns, chaos_sources, chaos)
    kills = sum(1 for f in chaos.survived if "SIGKILL" in f)
    assert kills == KILLS, chaos.survived
    print(f"chaos seed {SEED}: survived {len(chaos.survived)} faults:\n  " + "\n  ".join(chaos.survived))

    assert milestones == ref_milestones, (f"seed {SEED}: {_diff(milestones, ref_milestones)}; faults: "
                                          f"{chaos.survived}\nevents:\n{_events(cluster, chaos_ns)}")
    final = _final_state(cluster, chaos_ns, chaos_root)
    assert final == reference, (f"seed {SEED}: {_diff(final, reference)}; faults: {chaos.survived}\n"
                                f"events:\n{_events(cluster, chaos_ns)}")
    _check_no_duplicates_and_verified(cluster, chaos_ns)

    # After recovery: a fresh operator finds nothing to do.
    store_operator.settle()
    before = _versions(cluster, store_operator, [chaos_ns])
    store_operator.kill()
    store_operator.start()
    log = store_operator.settle()
    drained = [line for line in log.splitlines() if "queue drained" in line]
    assert drained and all("writes since start=0 {}" in line for line in drained), log[-3000:]
    assert all("writes=0" in line for line in log.splitlines() if "reconciled edgemodel" in line), log[-3000:]
    assert _versions(cluster, store_operator, [chaos_ns]) == before

    # What the ARM boards serve is what the optimizer produced, fetched and verified by a real `edgewise fetch`.
    arm_ds = next(d for d in get(cluster, "daemonsets", "-n", chaos_ns)["items"]
                  if d["metadata"]["labels"].get("edgewise.io/class") == "arm"
                  and d["status"].get("desiredNumberScheduled"))
    digest = _fetch_digest(arm_ds)
    assert digest == classes(_obj(cluster, chaos_ns))["arm"]["artifactDigest"]
    with cluster.api_client() as api, PodRunner(api, tmp_path / "pods", chaos_ns,
                                                f"edgewise.io/model={MODEL},edgewise.io/class=arm").start() as runner:
        wait_for(lambda: serving(runner, 2), 120, "both ARM boards serving")
        for pod in runner.running().values():
            served = next((pod.workdir / "volumes" / "models").rglob("model.onnx"))
            assert hashlib.sha256(served.read_bytes()).hexdigest() == digest


AGENT_MODEL = b"weights of a model the agent downloads slowly " * 40000  # ~1.8 MB


def test_an_agent_killed_mid_download_keeps_no_partial_artifact_and_completes_verified(
        cluster: DevCluster, namespace: str, fleet, chart_rbac, tmp_path: Path) -> None:  # noqa: F811
    nodes = fleet({ARM: 1})
    source = SourceServer().start()
    try:
        digest = hashlib.sha256(AGENT_MODEL).hexdigest()
        uri = source.add("/slow.onnx", AGENT_MODEL)
        source.stall.add("/slow.onnx")  # half the body, then nothing: the download is in flight
        own = tmp_path / "agent-sa.token"
        own.write_text(token(cluster, namespace, chart_rbac["node-agent"]))
        state = cluster.state()
        assert state is not None
        port = free_port()
        cache = tmp_path / "cache"
        argv = [sys.executable, "-m", "edgewise", "agent", "--host", "127.0.0.1", "--port", str(port),
                "--cache-dir", str(cache), "--node-name", nodes[0],
                "--operator-user", f"system:serviceaccount:{namespace}:{chart_rbac['operator']}",
                "--apiserver", state.server, "--apiserver-token-file", str(own),
                "--apiserver-ca", str(cluster.pki / "ca.crt"), "--allow-host", "127.0.0.1"]
        url = f"http://127.0.0.1:{port}"
        operator = token(cluster, namespace, chart_rbac["operator"], contract.AGENT_AUDIENCE)
        body = json.dumps({"uri": uri, "sha256": digest, "model": MODEL, "namespace": namespace}).encode()

        def listed() -> list[str]:
            status, _, raw = http("GET", url + "/v1/artifacts", token=operator)
            assert status == 200, raw
            return [e["sha256"] for e in json.loads(raw)["artifacts"]]

        agent = processes.start("agent", argv, tmp_path / "logs")
        try:
            wait_for(lambda: _answers(url), 60, "the agent to listen")
            status, _, raw = http("POST", url + contract.AGENT_PREFETCH_PATH, body, token=operator)
            assert status in (200, 202), raw
            assert source.half_sent.wait(60), "the source never sent half the model"
            os.killpg(agent.pid, signal.SIGKILL)  # mid-download
            wait_for(lambda: not processes.alive(agent), 30, "the agent to die")
            assert not (cache / "sha256" / digest).exists()

            source.stall.discard("/slow.onnx")  # the source recovers
            source.release.set()
            agent = processes.start("agent", argv, tmp_path / "logs")
            wait_for(lambda: _answers(url), 60, "the agent to listen again")
            assert digest not in listed()  # the partial download was never adopted
            status, _, raw = http("POST", url + contract.AGENT_PREFETCH_PATH, body, token=operator)
            assert status in (200, 202), raw
            wait_for(lambda: digest in listed(), 90, "the download to complete after the restart")
            blob = cache / "sha256" / digest
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == digest
            assert not [p for p in (cache / "tmp").iterdir() if p.name.endswith(".part")]
        finally:
            processes.stop(agent)
    finally:
        source.stop()
