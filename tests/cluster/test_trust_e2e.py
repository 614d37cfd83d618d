"""Source trust on the real control plane, with the chart's RBAC: a model signed by a key its profile's trust
policy names deploys (SourceTrusted=True, the signer named); then a new version that is unsigned under
requireSigned, and one whose signature is not over its bytes, are refused — the condition says which, Degraded
says so once with a Warning Event — while the signed version keeps serving on every node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from operator_support import Operator, apply, condition, model_versions
from rollout_support import ARM, ORIN
from signed_source_support import MODEL, em, sign, signed_model, trusting_profile

from edgewise.devcluster import demo_models
from edgewise.devcluster.cluster import DevCluster
from edgewise.shared.trust.keys import generate_ec, private_pem, public_pem
from wait_support import wait_for


def _warnings(cluster: DevCluster, ns: str, reason: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "events", "-n", ns, "--field-selector",
                          f"involvedObject.name={MODEL},type=Warning,reason={reason}", "-o", "json").stdout
    return list(json.loads(out)["items"])


def _refused(cluster: DevCluster, ns: str, reason: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = em(cluster, ns)
        trusted, degraded = condition(obj, "SourceTrusted"), condition(obj, "Degraded")
        said = (trusted.get("status"), trusted.get("reason"), degraded.get("status"), degraded.get("reason"))
        current = obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current and said == ("False", reason, "True", reason) else None
    return wait_for(check, 90, f"SourceTrusted=False/{reason} and Degraded")  # type: ignore[return-value]


def test_a_signed_model_deploys_and_unsigned_or_badly_signed_versions_are_refused_while_it_serves(
        cluster: DevCluster, namespace: str, fleet, operator: Operator, tmp_path: Path) -> None:
    nodes = fleet({ORIN: 1, ARM: 2})
    publisher = generate_ec()
    v1 = demo_models.good(tmp_path / "v1" / "model.onnx")
    v1_sig = sign(v1, tmp_path, private_pem(publisher))
    apply(cluster, [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "signers", "namespace": namespace},
                     "data": {"publisher.pem": public_pem(publisher.public_key()).decode()}},
                    trusting_profile(namespace), signed_model(namespace, "1.0", v1, v1_sig)])
    wait_for(lambda: model_versions(cluster, namespace, MODEL) == dict.fromkeys(nodes, "1.0"), 120,
             "the signed 1.0 on every node")
    trusted = condition(em(cluster, namespace), "SourceTrusted")
    assert (trusted["status"], trusted["reason"]) == ("True", "Signed"), trusted
    assert "signed by key " in trusted["message"] and "DeploymentProfile fleet" in trusted["message"]

    # 2.0 carries no signature; the profile requires one.
    v2 = demo_models.slow(tmp_path / "v2" / "model.onnx")
    apply(cluster, signed_model(namespace, "2.0", v2, None))
    obj = _refused(cluster, namespace, "Unsigned")
    assert "requireSigned" in condition(obj, "SourceTrusted")["message"]
    operator.settle()
    assert model_versions(cluster, namespace, MODEL) == dict.fromkeys(nodes, "1.0")  # still serving, nothing moved
    warned = _warnings(cluster, namespace, "Unsigned")
    assert len(warned) == 1 and warned[0].get("count", 1) == 1, warned  # once per change, not per reconcile

    # 3.0 carries 1.0's signature: the publisher is trusted, but the signature is not over these bytes.
    apply(cluster, signed_model(namespace, "3.0", v2, v1_sig))
    obj = _refused(cluster, namespace, "BadSignature")
    operator.settle()
    assert model_versions(cluster, namespace, MODEL) == dict.fromkeys(nodes, "1.0")
    assert {c["stableVersion"] for c in em(cluster, namespace)["status"]["rollout"]["classes"]} == {"1.0"}
    assert len(_warnings(cluster, namespace, "BadSignature")) == 1

    # Back to the signed version: trusted again, and nothing was ever replaced.
    apply(cluster, signed_model(namespace, "1.0", v1, v1_sig))
    wait_for(lambda: condition(em(cluster, namespace), "SourceTrusted").get("status") == "True", 60,
             "SourceTrusted=True again")
    wait_for(lambda: condition(em(cluster, namespace), "Degraded").get("status") == "False", 60, "not Degraded")
    assert model_versions(cluster, namespace, MODEL) == dict.fromkeys(nodes, "1.0")

