"""The whole chain of trust on the real control plane: a signed source, an int8 artifact the operator attests
with its own key, fetch containers that verify that attestation with the keys the operator renders into them
(the pod runner runs them as a kubelet would), and a replaced attestation refused on the node while the pod
that verified before keeps serving. Its own module: its operator has a signing key, the module's shared one
does not, and two operators must not reconcile the same models."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import tritonclient.http as triton_http
from operator_support import apply, classes, condition, get, model_versions, rollout_classes, running_operator
from rollout_support import ARM
from signed_source_support import MODEL, em, sign, signed_model, trusting_profile

from edgewise.devcluster import demo_models, processes
from edgewise.devcluster.cluster import DevCluster
from edgewise.devcluster.podrunner import PodProcesses, PodRunner
from edgewise.devcluster.traffic import serving
from edgewise.shared.trust import dsse
from edgewise.shared.trust.keys import generate_ec, private_pem, public_pem
from edgewise.shared.trust.statement import DerivedModel, Statement
from wait_support import wait_for

NODE_KEYS = "edgewise-attestation-keys"  # the ConfigMap of the operator's public key(s) that nodes trust


def test_a_signed_model_runs_as_an_attested_artifact_that_each_node_verifies_before_serving(
        cluster: DevCluster, namespace: str, fleet, tmp_path: Path) -> None:
    nodes = fleet({ARM: 2})
    publisher, operator_key = generate_ec(), generate_ec()
    key_file = tmp_path / "operator-attestation.pem"
    key_file.write_bytes(private_pem(operator_key))
    port = processes.free_port()
    args = ["--artifact-dir", str(tmp_path / "artifacts"), "--artifact-listen", f"127.0.0.1:{port}",
            "--artifact-url", f"http://127.0.0.1:{port}"]
    env = {"EDGEWISE_ATTESTATION_KEY_FILE": str(key_file), "EDGEWISE_NODE_TRUSTED_KEYS_CONFIG_MAP": NODE_KEYS}
    src = demo_models.good(tmp_path / "v1" / "model.onnx")
    model = signed_model(namespace, "1.0", src, sign(src, tmp_path, private_pem(publisher)))
    model["spec"]["optimization"] = {"quantization": "auto", "accuracyGate": {"minCosine": 0.98}}
    profile = trusting_profile(namespace)
    profile["spec"]["classes"] = [{**c, "precision": "int8"} for c in profile["spec"]["classes"]
                                  if c["name"] == "arm"]
    (tmp_path / "operator").mkdir()
    with running_operator(cluster, tmp_path / "operator", args, env):
        apply(cluster, [_config_map(namespace, "signers", {"publisher.pem": public_pem(publisher.public_key())}),
                        _config_map(namespace, NODE_KEYS, {"operator.pem": public_pem(operator_key.public_key())}),
                        profile, model])

        def attested() -> dict[str, Any] | None:
            obj = em(cluster, namespace)
            arm = classes(obj).get("arm", {})
            return obj if arm.get("artifactState") == "Ready" and arm.get("attestation") else None

        obj = wait_for(attested, 180, "the arm class's artifact, attested")
        arm = classes(obj)["arm"]
        assert arm["attestation"] == f"key {operator_key.key_id[:16]}", arm
        digest = arm["artifactDigest"]
        assert digest != demo_models.sha256(src) and condition(obj, "SourceTrusted")["reason"] == "Signed"
        stored = tmp_path / "artifacts" / "store" / "sha256" / f"{digest}.intoto.json"
        statement = Statement.parse(dsse.Envelope.parse(stored.read_bytes()).payload)
        assert statement.subject_sha256 == digest and isinstance(statement.predicate, DerivedModel)
        assert statement.predicate.source_sha256 == demo_models.sha256(src)
        assert statement.predicate.source_signature is not None  # the signer the operator checked
        assert "accuracy" in statement.predicate.gates

        out = subprocess.run([sys.executable, "-m", "edgewise.cli.kubectl_plugin", "--kubeconfig",
                              str(cluster.kubeconfig), "-n", namespace, "status", MODEL],
                             capture_output=True, text=True, check=True).stdout
        assert "SourceTrusted=True Signed" in out and f"attested by key {operator_key.key_id[:16]}" in out, out

        # Each node's fetch container verifies the attestation with the operator's public key, then serves.
        wait_for(lambda: all(v == "1.0" for v in model_versions(cluster, namespace, MODEL).values())
                 and len(model_versions(cluster, namespace, MODEL)) == len(nodes), 120, "1.0 on both nodes")
        ds = get(cluster, "daemonsets", "-n", namespace)["items"][0]
        fetch_args = ds["spec"]["template"]["spec"]["initContainers"][0]["args"]
        assert "--trusted-keys" in fetch_args and fetch_args[fetch_args.index("--source-sha256") + 1] == \
            demo_models.sha256(src)
        with cluster.api_client() as api, PodRunner(api, tmp_path / "pods", namespace,
                                                    f"edgewise.io/model={MODEL}").start() as runner:
            wait_for(lambda: serving(runner, 2), 120, "both nodes serving the verified artifact")

            # The store's attestation is replaced by one signed with a key nobody trusts: a pod that starts
            # now refuses the artifact, and the other node's pod, verified before, keeps serving.
            genuine = dsse.Envelope.parse(stored.read_bytes())
            forged = dsse.sign(genuine.payload, genuine.payload_type, generate_ec())
            stored.write_bytes(forged.to_json())
            (victim, kept) = sorted(runner.running().values(), key=lambda p: p.node)
            cluster.kubectl("delete", "pod", "-n", namespace, victim.name, "--wait=false")

            def refused() -> str:
                return next((p.error for p in runner.running().values()
                             if p.node == victim.node and p.uid != victim.uid and p.error), "")

            error = wait_for(refused, 120, "the new pod's fetch refusing the artifact")
            assert "fetch exited" in str(error) and "which is not among the 1 trusted key(s)" in str(error), error
            assert operator_key.key_id[:16] in str(error), error  # the key it trusts, named
            assert kept.uid in runner.running() and serving_one(kept)

            # A version whose artifact is the one now carrying that attestation (same source, same target):
            # its canary's fetch refuses it, the pod's status says why (the runner reports the failed init
            # container as a kubelet does), and the class rolls back quoting the fetch. (Which pods serve
            # meanwhile is not this part's question: 1.0's artifact carries the same refused attestation, and
            # kwok marks a pod Ready before the runner has run its init containers, so here a make-before-break
            # switch completes on a canary a kubelet would have held.)
            v2 = copy.deepcopy(model)
            v2["spec"]["version"] = "2.0"
            v2["spec"]["rollout"]["analysis"] = {"interval": "2s", "failureLimit": 1}
            apply(cluster, v2)

            def rolled_back() -> dict[str, Any] | None:
                arm = rollout_classes(em(cluster, namespace)).get("arm", {})
                return arm if arm.get("state") == "RolledBack" else None

            arm = wait_for(rolled_back, 180, "2.0 rolled back")
            assert "init container fetch failed" in arm["message"], arm
            assert "which is not among the 1 trusted key(s)" in arm["message"], arm


def _config_map(ns: str, name: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
            "data": {k: v.decode() for k, v in data.items()}}


def serving_one(pod: PodProcesses) -> bool:
    return bool(triton_http.InferenceServerClient(f"{pod.pod_ip}:8000", network_timeout=5).is_server_ready())
