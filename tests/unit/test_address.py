"""The node-local address: one Service per model, selecting both slots, owned by the model."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from planning_support import factory_floor, fleet, model

from edgewise.api.settings import OperatorSettings
from edgewise.core import names
from edgewise.core.address import address, conflict, model_service, service_name
from edgewise.core.plan import plan_model, spec_hash
from edgewise.core.rollout.placement import place
from edgewise.core.status import compute_status

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def test_the_name_is_prefixed_and_always_a_valid_dns_label() -> None:
    assert service_name("defect-detector") == "edgewise-defect-detector"
    assert service_name("3d-pose") == "edgewise-3d-pose"  # a model may start with a digit; a Service may not
    for name in ("a" * 60, "detector.v2", "x" * 253, "a." * 30 + "b"):
        svc = service_name(name)
        assert len(svc) <= 63 and DNS_1035.match(svc), svc
    assert service_name("a" * 60) != service_name("a" * 61)  # the hash keeps shortened names apart
    assert address(model()) == "edgewise-defect-detector.vision.svc"


def test_the_service_is_node_local_selects_every_slot_and_class_and_is_owned_by_the_model() -> None:
    m = model()
    svc = model_service(m)
    spec = svc["spec"]
    assert spec["internalTrafficPolicy"] == "Local" and spec["type"] == "ClusterIP"
    assert [(p["name"], p["port"], p["targetPort"]) for p in spec["ports"]] == [("http", 8000, "http"),
                                                                             ("grpc", 8001, "grpc")]
    owner = svc["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("EdgeModel", m.metadata.name,
                                                                                 m.metadata.uid, True)
    assert svc["metadata"]["annotations"][names.SPEC_HASH_ANNOTATION] == spec_hash(svc)
    # Every pod template the planner and placement render, of every class and both slots, matches the selector.
    plan = plan_model(m, factory_floor(), fleet(jetson_orin=1, arm64_cpu=1, amd64_cpu=1), [], OperatorSettings())
    workloads = list(plan.workloads)
    placed = place(m.metadata.name, plan.classes, {}, [])
    templates = [w.manifest["spec"]["template"] for w in workloads + list(placed)]
    assert len({w.class_name for w in workloads}) == 3
    for slot in names.SLOTS:
        for t in templates:
            labels = {**t["metadata"]["labels"], names.SLOT_LABEL: slot}
            assert spec["selector"].items() <= labels.items()
    # It does not select the node agent or another model's pods.
    assert spec["selector"][names.MODEL_LABEL] == m.metadata.name
    assert spec["selector"][names.COMPONENT] == names.RUNTIME_COMPONENT


def test_the_service_is_written_once_its_hash_is_stable() -> None:
    assert model_service(model()) == model_service(model())
    assert spec_hash(model_service(model())) != spec_hash(model_service(model(name="other")))


def test_a_service_of_that_name_not_owned_by_the_model_is_reported_not_taken() -> None:
    m = model()
    assert conflict(m, frozenset({m.metadata.uid})) == ""
    why = conflict(m, frozenset({"someone-else"}))
    assert "edgewise-defect-detector" in why and "not owned" in why and "rename or delete" in why


def test_status_carries_the_address_and_an_address_condition() -> None:
    m = model()
    nodes = fleet(arm64_cpu=1)
    plan = plan_model(m, factory_floor(), nodes, [], OperatorSettings())
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ok = compute_status(m, plan, {}, now, total_nodes=1, address=address(m))
    assert ok.status.address == "edgewise-defect-detector.vision.svc"
    cond = {c.type: c for c in ok.status.conditions or []}["AddressReady"]
    assert (cond.status, cond.reason) == ("True", "ServiceReady") and ":8000" in cond.message
    taken = compute_status(m, plan, {}, now, total_nodes=1, address_problem=conflict(m, frozenset()))
    cond = {c.type: c for c in taken.status.conditions or []}["AddressReady"]
    assert taken.status.address is None and (cond.status, cond.reason) == ("False", "ServiceNameTaken")


def test_kubectl_edgewise_status_prints_the_address_and_each_class_switch_mode() -> None:
    from edgewise.cli.kubectl_plugin import render_status

    obj = {"metadata": {"name": "defect-detector", "namespace": "vision"}, "spec": {"version": "2"},
           "status": {"address": "edgewise-defect-detector.vision.svc", "rollout": {"classes": [
               {"name": "jetson", "state": "Stable", "switch": "Replace",
                "switchReason": "Auto: each pod needs a whole GPU"}]}}}
    text = render_status(obj)
    assert "address (node-local): edgewise-defect-detector.vision.svc:8000 (HTTP), :8001 (gRPC)" in text
    assert "switch Replace: Auto: each pod needs a whole GPU" in text
