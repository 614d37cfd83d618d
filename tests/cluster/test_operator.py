"""The operator on the real control plane and simulated fleet: examples in, per-class workloads out."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import urllib.error
import urllib.request

from operator_support import (
    Operator,
    apply,
    classes,
    condition,
    example,
    exists,
    get,
    pods_by_node,
    wait_status,
)

from edgewise.devcluster import processes
from edgewise.devcluster.cluster import DevCluster
from wait_support import wait_for

FLEET = {"jetson-orin": 2, "jetson-xavier": 1, "arm64-cpu": 3, "amd64-cpu": 1}
ORIN, XAVIER, ARM, AMD = ("jetson-orin", "jetson-xavier", "arm64-cpu", "amd64-cpu")


def _of(nodes: list[str], device: str) -> list[str]:
    return sorted(n for n in nodes if device in n)


def _ready(obj: dict) -> bool:
    return (
        obj.get("status", {}).get("phase") == "Ready"
        and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
    )


def _factory_floor(cluster: DevCluster, ns: str) -> dict:
    apply(cluster, example("factory-floor-profile.yaml", ns) + example("defect-detector.yaml", ns))
    return wait_status(cluster, ns, "defect-detector", _ready, "Ready")


def _sel(cls: str, model: str = "defect-detector") -> str:
    return f"edgewise.io/model={model},edgewise.io/class={cls}"


def test_examples_run_the_right_runtime_on_exactly_the_matching_nodes(
    cluster: DevCluster, namespace: str, fleet, operator: Operator
) -> None:
    nodes = fleet(FLEET)
    em = _factory_floor(cluster, namespace)
    status = em["status"]
    assert (status["ready"], status["matchedNodes"], status["unmatchedNodes"]) == ("6/6", 6, 1)
    assert status["stableVersion"] == "2.1.0" and "canaryVersion" not in status
    for type_ in ("Ready", "ProfileResolved", "NodesMatched"):
        assert condition(em, type_)["status"] == "True", type_
    assert condition(em, "Degraded")["status"] == "False"

    ds = {d["metadata"]["name"]: d for d in get(cluster, "daemonsets", "-n", namespace)["items"]}
    assert sorted(ds) == [
        "defect-detector-arm-cpu-a",
        "defect-detector-jetson-orin-sm87-a",
        "defect-detector-x86-vnni-a",
    ]
    orin = ds["defect-detector-jetson-orin-sm87-a"]["spec"]["template"]["spec"]
    assert orin["runtimeClassName"] == "nvidia" and orin["containers"][0]["image"].endswith("-igpu")
    assert orin["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    arm = ds["defect-detector-arm-cpu-a"]["spec"]["template"]["spec"]
    assert arm["containers"][0]["command"] == ["edgewise", "serve"]
    sc = arm["containers"][0]["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["capabilities"] == {"drop": ["ALL"]}
    assert "nodeAffinity" in arm["affinity"]
    owner = ds["defect-detector-arm-cpu-a"]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("EdgeModel", em["metadata"]["uid"])

    # Pods run (admitted by the `restricted` namespace) on exactly the nodes of their class.
    assert sorted(pods_by_node(cluster, namespace, _sel("jetson-orin"))) == _of(nodes, ORIN)
    assert sorted(pods_by_node(cluster, namespace, _sel("arm-cpu"))) == _of(nodes, ARM)
    assert sorted(pods_by_node(cluster, namespace, _sel("x86-vnni"))) == _of(nodes, AMD)
    on_xavier = pods_by_node(cluster, namespace, "edgewise.io/model=defect-detector")
    assert not set(on_xavier) & set(_of(nodes, XAVIER))  # matches no class: left alone

    table = cluster.kubectl("get", "em", "-n", namespace).stdout.split()
    assert table[:6] == ["NAME", "VERSION", "PHASE", "STABLE", "CANARY", "READY"]
    assert ["defect-detector", "2.1.0", "Ready", "2.1.0", "6/6"] == table[7:12]
    edp = get(cluster, "edp", "factory-floor", "-n", namespace)
    assert edp["status"]["summary"] == "jetson-orin=2 arm-cpu=3 x86-vnni=1"
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=defect-detector"
    ).stdout
    assert "WorkloadCreated" in events and "Ready" in events


def test_a_new_labelled_node_joins_its_class_without_touching_the_workload(
    cluster: DevCluster, namespace: str, fleet, operator: Operator
) -> None:
    fleet({ARM: 2, AMD: 1})
    _factory_floor(cluster, namespace)
    ds_before = get(cluster, "daemonset", "defect-detector-arm-cpu-a", "-n", namespace)
    grown = fleet({ARM: 3, AMD: 1})  # one more ARM board joins
    new = _of(grown, ARM)[-1]
    wait_for(lambda: new in pods_by_node(cluster, namespace, _sel("arm-cpu")), 60, f"a pod on {new}")
    em = wait_status(cluster, namespace, "defect-detector", lambda o: o["status"].get("ready") == "4/4", "4/4 ready")
    arm = classes(em)["arm-cpu"]
    assert (arm["matchedNodes"], arm["readyPods"]) == (3, 3)
    ds_after = get(cluster, "daemonset", "defect-detector-arm-cpu-a", "-n", namespace)
    assert ds_after["metadata"]["generation"] == ds_before["metadata"]["generation"]  # no spec write


def test_changing_a_profile_class_replans_the_workloads(
    cluster: DevCluster, namespace: str, fleet, operator: Operator
) -> None:
    nodes = fleet({ARM: 2, AMD: 1, ORIN: 1})
    _factory_floor(cluster, namespace)
    profile = example("factory-floor-profile.yaml", namespace)[0]
    changed = copy.deepcopy(profile)
    profile_classes = changed["spec"]["classes"]
    profile_classes[1]["threads"] = 2  # arm-cpu: fewer threads
    del profile_classes[2]  # x86-vnni dropped: the amd64 box is no longer served
    apply(cluster, changed)

    def threads(name: str) -> str:
        args = get(cluster, "daemonset", name, "-n", namespace)["spec"]["template"]["spec"]["containers"][0]["args"]
        return str(args[args.index("--threads") + 1])

    def replanned() -> bool:
        if exists(cluster, "daemonset", "defect-detector-x86-vnni-a", "-n", namespace):
            return False
        # A new pod template is a new revision: it goes out as a canary in the other slot, while the
        # stable workload keeps serving what it served.
        return exists(cluster, "daemonset", "defect-detector-arm-cpu-b", "-n", namespace) and \
            threads("defect-detector-arm-cpu-b") == "2"

    wait_for(replanned, 60, "the x86 workload removed and an arm-cpu canary with the new threads")
    assert threads("defect-detector-arm-cpu-a") == "4"
    em = wait_status(
        cluster,
        namespace,
        "defect-detector",
        lambda o: o["status"].get("unmatchedNodes") == 1 and _ready(o),
        "re-planned and Ready",
    )
    assert [c["name"] for c in em["status"]["classes"]] == ["jetson-orin", "arm-cpu"]
    assert sorted(pods_by_node(cluster, namespace, _sel("arm-cpu"))) == _of(nodes, ARM)
    events = cluster.kubectl("get", "events", "-n", namespace).stdout
    assert "WorkloadDeleted" in events and "WorkloadUpdated" in events


def test_deleting_the_model_garbage_collects_everything_it_owned(
    cluster: DevCluster, namespace: str, fleet, operator: Operator
) -> None:
    fleet({ARM: 2, AMD: 1})
    _factory_floor(cluster, namespace)
    assert get(cluster, "daemonsets", "-n", namespace)["items"]
    cluster.kubectl("delete", "edgemodel", "defect-detector", "-n", namespace, "--wait=true")
    wait_for(
        lambda: not get(cluster, "daemonsets", "-n", namespace)["items"],
        60,
        "the garbage collector to delete the DaemonSets",
    )
    wait_for(
        lambda: not get(cluster, "pods", "-n", namespace, "-l", "edgewise.io/model=defect-detector")["items"],
        60,
        "the pods to go",
    )
    assert exists(cluster, "edp", "factory-floor", "-n", namespace)  # the profile is the user's, not owned


def test_an_operator_restart_writes_nothing(cluster: DevCluster, namespace: str, fleet, operator: Operator) -> None:
    fleet({ORIN: 1, ARM: 2, AMD: 1})
    _factory_floor(cluster, namespace)
    operator.settle()

    def versions() -> dict[str, str]:
        objs = [
            get(cluster, "edgemodel", "defect-detector", "-n", namespace),
            get(cluster, "edp", "factory-floor", "-n", namespace),
            get(cluster, "daemonset", operator.settings_agent(), "-n", operator.agent_namespace),
            *get(cluster, "daemonsets", "-n", namespace)["items"],
        ]
        return {f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["resourceVersion"] for o in objs}

    before = versions()
    operator.restart()
    log = operator.settle()
    drained = [line for line in log.splitlines() if "queue drained" in line]
    assert drained and all("writes since start=0 {}" in line for line in drained), log[-2000:]
    assert all("writes=0" in line for line in log.splitlines() if "reconciled edgemodel" in line), log[-2000:]
    assert versions() == before


def test_a_missing_profile_is_reported_and_deletes_nothing(
    cluster: DevCluster, namespace: str, fleet, operator: Operator
) -> None:
    fleet({ARM: 2})
    em = _factory_floor(cluster, namespace)
    uids = {d["metadata"]["name"]: d["metadata"]["uid"] for d in get(cluster, "daemonsets", "-n", namespace)["items"]}
    cluster.kubectl("delete", "edp", "factory-floor", "-n", namespace)
    em = wait_status(
        cluster,
        namespace,
        "defect-detector",
        lambda o: condition(o, "ProfileResolved").get("status") == "False",
        "ProfileResolved=False",
    )
    resolved = condition(em, "ProfileResolved")
    assert resolved["reason"] == "ProfileNotFound" and "factory-floor not found" in resolved["message"]
    assert em["status"]["phase"] == "Degraded" and condition(em, "Degraded")["reason"] == "ProfileNotFound"
    assert em["status"]["ready"] == "2/2"  # still serving
    operator.settle()
    still = {d["metadata"]["name"]: d["metadata"]["uid"] for d in get(cluster, "daemonsets", "-n", namespace)["items"]}
    assert still == uids
    assert len(pods_by_node(cluster, namespace, _sel("arm-cpu"))) == 2
    warnings = cluster.kubectl("get", "events", "-n", namespace, "--field-selector", "type=Warning").stdout
    assert "ProfileNotFound" in warnings
    # The profile comes back: the model recovers by itself.
    apply(cluster, example("factory-floor-profile.yaml", namespace))
    wait_status(
        cluster,
        namespace,
        "defect-detector",
        lambda o: _ready(o) and condition(o, "ProfileResolved").get("status") == "True",
        "recovered",
    )


def test_a_model_whose_profile_never_existed_is_pending(
    cluster: DevCluster, namespace: str, operator: Operator
) -> None:
    model = example("defect-detector.yaml", namespace)[0]
    model["spec"]["profileRef"] = "no-such-profile"
    apply(cluster, model)
    em = wait_status(
        cluster,
        namespace,
        "defect-detector",
        lambda o: o.get("status", {}).get("phase") == "Pending",
        "Pending",
    )
    assert condition(em, "ProfileResolved")["status"] == "False"
    assert "no-such-profile not found" in condition(em, "ProfileResolved")["message"]
    assert get(cluster, "daemonsets", "-n", namespace)["items"] == []


def test_a_profile_matching_no_nodes_says_so_with_zero_counts(
    cluster: DevCluster, namespace: str, fleet, operator: Operator
) -> None:
    fleet({ARM: 1, AMD: 1})
    profile = {
        "apiVersion": "edgewise.io/v1alpha1",
        "kind": "DeploymentProfile",
        "metadata": {"name": "riscv", "namespace": namespace},
        "spec": {
            "classes": [
                {
                    "name": "riscv-cpu",
                    "runtime": "onnxruntime",
                    "nodeSelector": {"kubernetes.io/arch": "riscv64"},
                }
            ]
        },
    }
    model = example("defect-detector.yaml", namespace)[0]
    model["spec"]["profileRef"] = "riscv"
    apply(cluster, [profile, model])
    em = wait_status(
        cluster,
        namespace,
        "defect-detector",
        lambda o: condition(o, "NodesMatched").get("status") == "False",
        "NodesMatched=False",
    )
    matched = condition(em, "NodesMatched")
    assert matched["reason"] == "NoMatchingNodes"
    assert "riscv-cpu needs kubernetes.io/arch=riscv64" in matched["message"]
    assert (em["status"]["phase"], em["status"]["ready"], em["status"]["matchedNodes"]) == (
        "Pending",
        "0/0",
        0,
    )
    assert em["status"]["classes"][0]["matchedNodes"] == 0
    # The workload exists with no pods, so a matching node would be served the moment it joins.
    ds = get(cluster, "daemonset", "defect-detector-riscv-cpu-a", "-n", namespace)
    assert ds["status"].get("desiredNumberScheduled", 0) == 0


def test_builtin_profile_splits_jetsons_by_compute_capability(
    cluster: DevCluster, namespace: str, fleet, operator: Operator
) -> None:
    nodes = fleet(FLEET)
    apply(cluster, example("text-embedder-builtin.yaml", namespace))
    em = wait_status(cluster, namespace, "text-embedder", _ready, "Ready")
    assert em["status"]["profile"] == "built-in" and em["status"]["ready"] == "7/7"
    cs = classes(em)
    assert cs["jetson"]["computeCapabilities"] == ["7.2", "8.7"]
    assert cs["jetson"]["workloads"] == ["text-embedder-jetson-sm72-a", "text-embedder-jetson-sm87-a"]
    assert (cs["arm64-cpu"]["precision"], cs["amd64-cpu"]["runtime"]) == ("int8", "onnxruntime")
    sm72 = "edgewise.io/model=text-embedder,edgewise.io/variant=sm72"
    assert sorted(pods_by_node(cluster, namespace, sm72)) == _of(nodes, XAVIER)
    fetch = get(cluster, "daemonset", "text-embedder-jetson-sm72-a", "-n", namespace)["spec"]["template"]["spec"][
        "initContainers"
    ][0]
    assert {"name": "EDGEWISE_GPU_COMPUTE_CAPABILITY", "value": "7.2"} in fetch["env"]
    assert sorted(pods_by_node(cluster, namespace, _sel("arm64-cpu", "text-embedder"))) == _of(nodes, ARM)


def test_the_node_agent_runs_on_every_node_and_comes_back(cluster: DevCluster, fleet, operator: Operator) -> None:
    nodes = fleet({ARM: 1, ORIN: 1})
    name = operator.settings_agent()
    wait_for(
        lambda: set(nodes) <= set(pods_by_node(cluster, operator.agent_namespace, "app.kubernetes.io/name=" + name)),
        60,
        "agent pods on the new nodes",
    )
    pod = get(cluster, "daemonset", name, "-n", operator.agent_namespace)["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and [v["name"] for v in pod["volumes"] if "hostPath" in v] == ["cache"]
    cluster.kubectl("delete", "daemonset", name, "-n", operator.agent_namespace)
    wait_for(lambda: exists(cluster, "daemonset", name, "-n", operator.agent_namespace), 60, "the agent re-created")


def _probe(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""  # not listening (yet)


def test_the_liveness_probe_reports_the_work_loop(operator: Operator) -> None:
    status, body = _probe(operator.liveness_url)
    assert status == 200, body
    work = json.loads(body)["work"]
    assert work["healthy"] is True and work["problems"] == []
    assert [w["index"] for w in work["workers"]] == [0, 1] and all(w["alive"] for w in work["workers"])
    assert work["oldestQueuedSeconds"] < 600  # the default limit; the first pass has drained the queue


def test_the_liveness_probe_fails_when_no_worker_takes_the_keys(operator: Operator, tmp_path) -> None:
    """The same operator, but with no worker: kopf still serves HTTP, the work probe answers 500."""
    url = f"http://127.0.0.1:{processes.free_port()}/healthz"
    with open(tmp_path / "operator.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edgewise", "operator", "run", "--kubeconfig",
                                 str(operator.kubeconfig), "--operator-namespace", operator.namespace,
                                 "--agent-namespace", operator.agent_namespace, "--workers", "0",
                                 "--liveness", url], stdout=log, stderr=subprocess.STDOUT)
    def answered() -> tuple[int, str] | None:
        assert proc.poll() is None, (tmp_path / "operator.log").read_text()
        got = _probe(url)
        return got if got[0] else None

    try:
        status, body = wait_for(answered, 60, "the probe to answer", interval=0.5)  # type: ignore[misc]
        assert status == 500, body
        assert proc.poll() is None  # the probe failing is the only sign: the process itself runs on
        assert "no worker is running" in (tmp_path / "operator.log").read_text()
    finally:
        processes.terminate(proc)
