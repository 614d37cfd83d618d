"""The node cache's pure parts: applying watch events, what a relist reports, how requests are counted."""

from __future__ import annotations

from typing import Any

from edgewise.core.observed import NodeInfo
from edgewise.kube.client import request_kind
from edgewise.kube.node_cache import apply_event, diff


def _node(name: str, labels: dict[str, str] | None = None, ready: bool = True, heartbeat: str = "t0"
          ) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}, "resourceVersion": "7"},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                       "lastHeartbeatTime": heartbeat}]}}


def test_events_add_update_and_delete_nodes() -> None:
    nodes: dict[str, NodeInfo] = {}
    added = apply_event(nodes, "ADDED", _node("a", {"zone": "x"}))
    assert added is not None and added.type == "ADDED" and nodes["a"].labels == {"zone": "x"}
    relabelled = apply_event(nodes, "MODIFIED", _node("a", {"zone": "y"}))
    assert relabelled is not None and relabelled.type == "MODIFIED" and nodes["a"].labels == {"zone": "y"}
    not_ready = apply_event(nodes, "MODIFIED", _node("a", {"zone": "y"}, ready=False))
    assert not_ready is not None and not nodes["a"].ready
    deleted = apply_event(nodes, "DELETED", _node("a"))
    assert deleted is not None and deleted.type == "DELETED" and deleted.node.name == "a" and nodes == {}


def test_a_heartbeat_changes_nothing_planning_sees_so_it_is_not_reported() -> None:
    nodes: dict[str, NodeInfo] = {}
    apply_event(nodes, "ADDED", _node("a", {"zone": "x"}, heartbeat="t0"))
    assert apply_event(nodes, "MODIFIED", _node("a", {"zone": "x"}, heartbeat="t1")) is None
    assert "a" in nodes


def test_deleting_an_unknown_node_reports_nothing() -> None:
    nodes: dict[str, NodeInfo] = {}
    assert apply_event(nodes, "DELETED", _node("ghost")) is None


def test_a_relist_reports_what_changed_while_the_watch_was_away() -> None:
    old = {"a": NodeInfo("a", {"zone": "x"}), "b": NodeInfo("b"), "c": NodeInfo("c")}
    new = {"a": NodeInfo("a", {"zone": "y"}), "b": NodeInfo("b"), "d": NodeInfo("d")}
    changes = {(c.type, c.node.name) for c in diff(old, new)}
    assert changes == {("MODIFIED", "a"), ("DELETED", "c"), ("ADDED", "d")}


def test_requests_are_counted_by_verb_and_resource() -> None:
    assert request_kind("GET", "https://h:6443/api/v1/nodes?limit=500") == ("list", "nodes")
    assert request_kind("GET", "https://h:6443/api/v1/nodes?watch=True&resourceVersion=9") == ("watch", "nodes")
    assert request_kind("GET", "https://h:6443/api/v1/nodes/n1") == ("get", "nodes")
    assert request_kind("GET", "https://h/apis/apps/v1/namespaces/a/daemonsets?labelSelector=x") == (
        "list", "daemonsets")
    assert request_kind("PATCH", "https://h/apis/edgewise.io/v1alpha1/namespaces/a/edgemodels/m/status") == (
        "patch", "edgemodels/status")
    assert request_kind("POST", "https://h/api/v1/namespaces/a/events") == ("create", "events")
    assert request_kind("GET", "https://h/api/v1/namespaces/a") == ("get", "namespaces")
