"""Image settings: pull secrets reach every pod the operator renders; the Jetson images share one NGC release."""

from __future__ import annotations

from typing import Any

import pytest
from planning_support import factory_floor, fleet, model, profile_of
from pydantic import ValidationError

from edgewise.api.settings import OperatorSettings
from edgewise.core.agent import agent_daemonset
from edgewise.core.optimization import job_manifest, job_spec
from edgewise.core.plan import plan_model

FLEET = fleet(jetson_orin=1, arm64_cpu=1)
SECRETS = ("regcred", "mirror-pull")


def _pods(settings: OperatorSettings) -> dict[str, dict[str, Any]]:
    """Every pod template the operator renders, by what it is."""
    plan = plan_model(model(), factory_floor(), FLEET, [], settings)
    pods = {w.manifest["metadata"]["labels"]["edgewise.io/runtime"]: w.manifest["spec"]["template"]["spec"]
            for w in plan.workloads}
    intel = profile_of({"name": "intel", "nodeSelector": {"kubernetes.io/arch": "amd64"}, "runtime": "openvino"})
    (openvino,) = plan_model(model(), intel, fleet(amd64_cpu=1), [], settings).workloads
    pods["openvino"] = openvino.manifest["spec"]["template"]["spec"]
    pods["agent"] = agent_daemonset(settings)["spec"]["template"]["spec"]
    spec = job_spec(model(optimization={"runIn": "Job"}), factory_floor().spec.classes[-1], FLEET)
    assert spec is not None
    pods["job"] = job_manifest(spec, settings, who="vision/defect-detector")["spec"]["template"]["spec"]
    return pods


def test_pull_secrets_reach_the_agent_runtime_and_job_pods() -> None:
    pods = _pods(OperatorSettings(image_pull_secrets=SECRETS))
    assert set(pods) == {"onnxruntime", "triton-tensorrt", "openvino", "agent", "job"}
    for what, pod in pods.items():
        assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror-pull"}], what


def test_without_pull_secrets_pods_carry_no_field_and_keep_their_hash() -> None:
    pods = _pods(OperatorSettings())
    assert all("imagePullSecrets" not in pod for pod in pods.values())
    # An upgrade that sets no secrets must not roll every DaemonSet: the rendered spec is unchanged.
    assert agent_daemonset(OperatorSettings(image_pull_secrets=())) == agent_daemonset(OperatorSettings())


def test_pull_secrets_come_from_a_comma_list_in_the_environment() -> None:
    s = OperatorSettings.from_env({"EDGEWISE_IMAGE_PULL_SECRETS": " regcred, mirror-pull ,"})
    assert s.image_pull_secrets == SECRETS
    assert OperatorSettings.from_env({"EDGEWISE_IMAGE_PULL_SECRETS": ""}).image_pull_secrets == ()


def test_the_runtime_images_follow_the_team_names() -> None:
    pods = _pods(OperatorSettings(image_registry="mirror.local:5000"))
    ort, trt = pods["onnxruntime"], pods["triton-tensorrt"]
    assert ort["containers"][0]["image"] == ort["initContainers"][0]["image"] == \
        "mirror.local:5000/edgewise/onnxruntime:0.1.0"
    ov = pods["openvino"]
    assert ov["containers"][0]["image"] == ov["initContainers"][0]["image"] == \
        "mirror.local:5000/edgewise/node-openvino:0.1.0"
    assert pods["agent"]["containers"][0]["image"] == "mirror.local:5000/edgewise/agent:0.1.0"
    assert trt["containers"][0]["image"] == "mirror.local:5000/nvidia/tritonserver:25.01-py3-igpu"
    assert trt["initContainers"][0]["image"] == "mirror.local:5000/edgewise/triton-jetson:25.01-0.1.0"


def test_one_ngc_release_decides_both_jetson_images() -> None:
    s = OperatorSettings.from_env({"EDGEWISE_NGC_RELEASE": "25.03"})
    assert s.triton_image == "nvidia/tritonserver:25.03-py3-igpu"
    assert s.tensorrt_fetch_image == "edgewise/triton-jetson:25.03-0.1.0"
    # An explicit image wins; one with no release in its tag is not second-guessed.
    assert OperatorSettings(triton_image="acme/triton:custom").triton_image == "acme/triton:custom"


def test_jetson_images_of_different_releases_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"different NGC releases \(24\.08, 25\.01\).*EDGEWISE_NGC_RELEASE"):
        OperatorSettings(triton_image="nvidia/tritonserver:24.08-py3-igpu")
    with pytest.raises(ValidationError, match="ngc_release"):
        OperatorSettings(ngc_release="2501")


def test_the_agent_runs_in_its_own_namespace() -> None:
    s = OperatorSettings.from_env({"EDGEWISE_NAMESPACE": "ops", "EDGEWISE_AGENT_NAMESPACE": "ops-node"})
    ds = agent_daemonset(s)
    assert (s.namespace, ds["metadata"]["namespace"]) == ("ops", "ops-node")
    assert agent_daemonset(OperatorSettings())["metadata"]["namespace"] == "edgewise-node"


def test_the_retired_node_image_setting_is_an_error_not_ignored() -> None:
    with pytest.raises(ValueError, match="EDGEWISE_NODE_IMAGE: .*EDGEWISE_AGENT_IMAGE.*EDGEWISE_ONNXRUNTIME_IMAGE"):
        OperatorSettings.from_env({"EDGEWISE_NODE_IMAGE": "edgewise/node:0.1.0"})
