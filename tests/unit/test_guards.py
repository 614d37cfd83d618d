"""What a profile's class may ask the operator to run: images, tolerations, resources (pure).

Anyone who may write a DeploymentProfile chose any image, a toleration of every taint and any
requests, rendered as given under the operator's ServiceAccount. Now the operator's settings
bound all three, and a class asking for more is refused with a condition that says what to do.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from planning_support import model, observed_from, profile_of

from edgewise.api.settings import OperatorSettings
from edgewise.core import guards
from edgewise.core.observed import NodeInfo, Taint
from edgewise.core.plan import plan_model
from edgewise.core.quantities import BadQuantity, parse_quantity
from edgewise.core.rollout.placement import deletions
from edgewise.core.status import compute_status

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = OperatorSettings()
ARM = {"kubernetes.io/arch": "arm64"}


def _node(name: str, cpu: str = "4", memory: str = "8Gi", **extra: str) -> NodeInfo:
    return NodeInfo(name, dict(ARM), allocatable={"cpu": cpu, "memory": memory, "pods": "110", **extra})


def _class(**fields: Any) -> dict[str, Any]:
    return {"name": "arm", "runtime": "onnxruntime", "nodeSelector": ARM, **fields}


def _plan(cls: dict[str, Any], nodes: list[NodeInfo] | None = None, settings: OperatorSettings = SETTINGS,
          existing: tuple = ()):  # noqa: ANN202 - a ModelPlan
    return plan_model(model(), profile_of(cls), nodes if nodes is not None else [_node("arm-0")],
                      list(existing), settings)


def _degraded(cls: dict[str, Any], nodes: list[NodeInfo] | None = None, settings: OperatorSettings = SETTINGS):
    plan = _plan(cls, nodes, settings)
    status = compute_status(model(), plan, {}, NOW, total_nodes=1).status
    return next(c for c in status.conditions or [] if c.type == "Degraded"), plan


# -- quantities --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "value"), [
    ("500m", Decimal("0.5")), ("2", Decimal(2)), ("1.5Gi", Decimal(1536 * 2**20)), ("256Mi", Decimal(2**28)),
    ("1k", Decimal(1000)), ("2e3", Decimal(2000)), ("100n", Decimal("1e-7")), (3, Decimal(3)),
])
def test_quantities_parse_as_the_apiserver_reads_them(text: str | int, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "1 Gi", "Gi", "1GB", "1.2.3", "ten"])
def test_what_is_not_a_quantity_is_refused(text: str) -> None:
    with pytest.raises(BadQuantity, match="not a Kubernetes quantity"):
        parse_quantity(text)


# -- images ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("image", "repo"), [
    ("edgewise/node:0.1.0", "edgewise/node"), ("mirror.local:5000/acme/ort:7", "mirror.local:5000/acme/ort"),
    ("mirror.local:5000/acme/ort", "mirror.local:5000/acme/ort"),
    ("acme/ort@sha256:" + "a" * 64, "acme/ort"), ("acme/ort:7@sha256:" + "a" * 64, "acme/ort"),
])
def test_the_repository_of_an_image_drops_tag_and_digest(image: str, repo: str) -> None:
    assert guards.repository(image) == repo


def test_only_the_operators_images_and_allowed_repositories_may_be_named() -> None:
    s = OperatorSettings(image_registry="mirror.local", allowed_images=("ghcr.example/acme/ort", "reg.example/ml/*"))
    assert guards.image_allowed("mirror.local/edgewise/agent:0.0.9", s)  # another tag of the operator's own
    assert guards.image_allowed("mirror.local/nvidia/tritonserver:24.09-py3-igpu", s)
    assert not guards.image_allowed("edgewise/node:0.1.0", s)  # not through the site's mirror
    assert guards.image_allowed("ghcr.example/acme/ort:1", s)
    assert guards.image_allowed("reg.example/ml/any/thing:2", s)
    assert not guards.image_allowed("reg.example/mlx:2", s)
    assert not guards.image_allowed("ghcr.example/acme/ort-evil:1", s)
    assert not guards.image_allowed("attacker.example/miner:latest", s)


def test_a_class_naming_an_image_the_settings_do_not_allow_is_refused() -> None:
    degraded, plan = _degraded(_class(image="attacker.example/miner:latest"))
    assert plan.workloads == ()
    assert (degraded.status, degraded.reason) == ("True", "ImageNotAllowed")
    assert "attacker.example/miner:latest" in degraded.message and "security.allowedImages" in degraded.message
    allowed = OperatorSettings(allowed_images=("attacker.example/miner",))
    assert [_pod_image(w) for w in _plan(_class(image="attacker.example/miner:latest"),
                                         settings=allowed).workloads] == ["attacker.example/miner:latest"]


def _pod_image(w: Any) -> str:
    return str(w.manifest["spec"]["template"]["spec"]["containers"][0]["image"])


def test_a_refused_class_keeps_what_already_serves() -> None:
    serving = _plan(_class())
    existing = tuple(observed_from(w.manifest, desired=1, ready=1) for w in serving.workloads)
    plan = _plan(_class(image="attacker.example/miner:latest"), existing=existing)
    assert deletions(plan.classes, existing, plan.workloads) == () and plan.keep == tuple(w.name for w in existing)


# -- tolerations -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("toleration", [{"operator": "Exists"}, {"operator": "Exists", "effect": "NoSchedule"}])
def test_tolerating_every_taint_is_an_explicit_opt_in(toleration: dict[str, str]) -> None:
    degraded, plan = _degraded(_class(tolerations=[toleration]))
    assert plan.workloads == () and degraded.reason == "TolerationNotAllowed"
    assert "control-plane" in degraded.message and "security.allowKeylessTolerations" in degraded.message
    opted_in = _plan(_class(tolerations=[toleration]), settings=OperatorSettings(allow_keyless_tolerations=True))
    assert opted_in.workloads and opted_in.workloads[0].manifest["spec"]["template"]["spec"]["tolerations"]


def test_a_toleration_that_names_its_taint_needs_no_opt_in() -> None:
    tainted = NodeInfo("arm-0", dict(ARM), taints=(Taint("edge", "", "NoSchedule"),))
    plan = _plan(_class(tolerations=[{"key": "edge", "operator": "Exists"}]), [tainted])
    assert len(plan.workloads) == 1 and not plan.classes[0].error


# -- resources ---------------------------------------------------------------------------------------------

def test_requests_that_fit_every_node_of_the_class_are_rendered() -> None:
    plan = _plan(_class(resources={"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "8Gi"}}),
                 [_node("arm-0"), _node("arm-1", cpu="2", memory="8Gi")])
    assert len(plan.workloads) == 1 and not plan.classes[0].error


def test_requests_beyond_a_nodes_allocatable_are_refused_and_name_the_nodes() -> None:
    nodes = [_node("arm-big", cpu="64", memory="256Gi"), _node("arm-0"), _node("arm-1")]
    degraded, plan = _degraded(_class(resources={"requests": {"cpu": "16", "memory": "1Ti"}}), nodes)
    assert plan.workloads == () and degraded.reason == "ResourcesDoNotFit"
    assert "cpu 16 is more than node(s) arm-0 (4), arm-1 (4) can allocate" in degraded.message
    assert "memory 1Ti is more than node(s) arm-0 (8Gi), arm-1 (8Gi), arm-big (256Gi)" in degraded.message
    assert "lower resources.requests/limits" in degraded.message


def test_a_limit_without_a_request_counts_as_the_request() -> None:
    degraded, _ = _degraded(_class(resources={"limits": {"cpu": "100"}}))
    assert degraded.reason == "ResourcesDoNotFit" and "cpu 100" in degraded.message


def test_a_resource_no_node_of_the_class_has_is_refused() -> None:
    degraded, _ = _degraded(_class(resources={"requests": {"example.com/fpga": "1"}}))
    assert degraded.reason == "ResourcesDoNotFit" and "example.com/fpga 1 is more than" in degraded.message
    fpga_node = _node("arm-0", **{"example.com/fpga": "2"})
    fits = _plan(_class(resources={"requests": {"example.com/fpga": "1"}}), [fpga_node])
    assert fits.workloads


def test_nodes_that_report_no_allocatable_are_not_judged() -> None:
    plan = _plan(_class(resources={"requests": {"cpu": "100"}}), [NodeInfo("arm-0", dict(ARM))])
    assert plan.workloads and not plan.classes[0].error


def test_a_quantity_that_does_not_parse_is_refused_with_what_is_wrong() -> None:
    # Admission refuses it first (the CRD's quantity pattern); the planner's own parser says why too.
    with pytest.raises(ValueError, match="String should match pattern"):
        _degraded(_class(resources={"requests": {"cpu": "lots"}}))
    with pytest.raises(BadQuantity, match="'lots' is not a Kubernetes quantity"):
        parse_quantity("lots")


def test_the_settings_come_from_the_environment_the_chart_sets() -> None:
    s = OperatorSettings.from_env({"EDGEWISE_ALLOWED_IMAGES": "ghcr.example/acme/ort, reg.example/ml/*",
                                   "EDGEWISE_PROMETHEUS_ADDRESSES": "http://prom:9090",
                                   "EDGEWISE_ALLOW_KEYLESS_TOLERATIONS": "true",
                                   "EDGEWISE_LOCAL_SOURCE_DIRS": ""})
    assert s.allowed_images == ("ghcr.example/acme/ort", "reg.example/ml/*")
    assert s.prometheus_addresses == ("http://prom:9090",) and s.allow_keyless_tolerations
    assert s.local_source_dirs == ()
    defaults = OperatorSettings.from_env({})
    assert (defaults.allowed_images, defaults.prometheus_addresses, defaults.allow_keyless_tolerations,
            defaults.local_source_dirs) == ((), (), False, ())
