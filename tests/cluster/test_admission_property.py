"""Property: every spec the apiserver admits plans without raising and renders objects it accepts.

Specs are generated from the CRD schemas (`edgewise.api.crd.model_schema(..., generation=True)`:
the schema `kubectl apply` validates against, with the map-key shapes that its CEL rules check
spelled as `propertyNames`, so generated objects have a chance to pass them). The real apiserver
is the judge of what is admitted (a server-side dry run, CEL rules included); what it admits goes
through the pure planner, the rollout step and the optimization Job renderer, and every object
they render must pass a server-side dry run too. Generation is derandomized and bounded, so the
test is the same on every run and takes a minute or two on a busy 2-core machine.

Specs it found that were admitted but rendered invalid objects are kept as explicit regression
cases (REGRESSIONS below, and their admission cases in test_crd_validation.py).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from kubernetes import client as k8s

from edgewise.api import crd
from edgewise.api.base import DNS_SUBDOMAIN_PATTERN
from edgewise.api.builtin import BUILTIN_PROFILE, BUILTIN_PROFILE_NAME
from edgewise.api.model import EdgeModelSpec
from edgewise.api.profile import DeploymentProfileSpec, HardwareClass
from edgewise.api.resources import GROUP, VERSION, DeploymentProfile, EdgeModel
from edgewise.api.settings import OperatorSettings
from edgewise.core import names
from edgewise.core.observed import NodeInfo
from edgewise.core.optimization import job_manifest, job_spec, token_secret_manifest
from edgewise.core.plan import ResolvedProfile, plan_model
from edgewise.core.rollout import Observed, advance
from edgewise.core.runtimes.triton_tensorrt import CC_MAJOR, CC_MINOR
from edgewise.devcluster.cluster import DevCluster
from edgewise.kube.writes import APPLY_PATCH

EXAMPLES = 100  # generated (profile, model) pairs; each costs a few dry runs
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
PLAIN_MODEL = {"version": "1", "source": {"uri": "https://models.example.com/m.onnx", "sha256": "a" * 64}}


def json_schema(node: Any, list_cap: int = 3) -> Any:
    """A CRD schema as plain JSON Schema for hypothesis-jsonschema.

    Kubernetes extensions and docs go; objects refuse unknown fields (the apiserver does, in
    strict field validation); lists and maps are capped at `list_cap` entries, which keeps
    examples small (a smaller space, not another one: every cap is within the CRD's own).
    """
    if isinstance(node, list):
        return [json_schema(n, list_cap) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: json_schema(v, list_cap) for k, v in node.items()
           if not k.startswith("x-kubernetes-") and k not in ("description", "default", "format")}
    if out.get("exclusiveMinimum") is True:
        out["exclusiveMinimum"] = out.pop("minimum")
    if out.get("exclusiveMaximum") is True:
        out["exclusiveMaximum"] = out.pop("maximum")
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    for key in ("maxItems", "maxProperties"):
        if key in out:
            out[key] = min(out[key], list_cap)
    return out


def spec_strategy(model: type[Any], steer: Callable[[dict[str, Any]], None]) -> st.SearchStrategy[dict[str, Any]]:
    """Specs from the CRD schema; half of them steered past the cross-field CEL rules (see `steer_*`)."""

    def maybe_steer(pair: tuple[bool, dict[str, Any]]) -> dict[str, Any]:
        steered, spec = pair
        if steered:
            spec = copy.deepcopy(spec)
            steer(spec)
        return spec

    return st.tuples(st.booleans(), from_schema(json_schema(crd.model_schema(model, generation=True)))).map(
        maybe_steer)


# A schema generator knows nothing of the CEL rules that relate fields, so most raw specs are refused
# for the same few reasons. Steering edits a generated spec the way a user fixes what `kubectl apply`
# said, and only that: the values that reach rendered objects stay as generated.
def steer_profile(spec: dict[str, Any]) -> None:
    seen: set[str] = set()
    for i, c in enumerate(spec.get("classes", [])):
        if c.get("name") in seen:
            c["name"] = f"c{i}"
        seen.add(c.get("name", ""))
        if not c.get("nodeSelector") and not c.get("matchExpressions"):
            c["nodeSelector"] = {"kubernetes.io/arch": "arm64"}
        if c.get("runtime") != "onnxruntime":
            c.pop("threads", None)
        for e in c.get("matchExpressions", []):
            if e.get("operator") in ("In", "NotIn") and not e.get("values"):
                e["values"] = ["x"]
            elif e.get("operator") in ("Exists", "DoesNotExist"):
                e.pop("values", None)
            elif e.get("operator") in ("Gt", "Lt"):
                e["values"] = [str(len(e.get("values") or []))]
        for t in c.get("tolerations", []):
            if "key" not in t:
                t["operator"] = "Exists"
            if t.get("operator") == "Exists":
                t.pop("value", None)
            if "tolerationSeconds" in t:
                t["effect"] = "NoExecute"
        resources = c.get("resources", {})
        for name in [k for k in resources.get("requests", {}) if "/" in k]:
            resources.setdefault("limits", {})[name] = 1
            del resources["requests"][name]


def steer_model(spec: dict[str, Any]) -> None:
    files = [spec.get("source", {}), spec.get("optimization", {}).get("calibration", {}),
             spec.get("rollout", {}).get("analysis", {}).get("goldenInputs", {})]
    for f in files:
        if f and "sha256" not in f:
            f["sha256"] = "a" * 64
    opt = spec.get("optimization", {})
    if "jobMemory" in opt:
        opt["runIn"] = "Job"
    if opt.get("quantization") == "static" and "calibration" not in opt:
        opt["quantization"] = "auto"
    analysis = spec.get("rollout", {}).get("analysis", {})
    if analysis.get("provider") == "prometheus" and "prometheus" not in analysis:
        analysis["provider"] = "runtime"
    steps = spec.get("rollout", {}).get("steps")
    if steps is not None:
        percents = sorted({s["percent"] for s in steps if "percent" in s} - {100})
        pauses = [{"pause": s["pause"]} for s in steps if "pause" in s]
        spec["rollout"]["steps"] = [*({"percent": p} for p in percents), *pauses, {"percent": 100}]


NAMES = st.from_regex(DNS_SUBDOMAIN_PATTERN, fullmatch=True).filter(lambda n: len(n) <= 253)


def nodes_for(spec: DeploymentProfileSpec) -> list[NodeInfo]:
    """One node per class that satisfies its selector as far as labels can, with a GPU's labels."""
    out = []
    for i, hc in enumerate(spec.classes):
        labels = {"kubernetes.io/os": "linux", CC_MAJOR: "8", CC_MINOR: "7", **(hc.node_selector or {})}
        for req in hc.match_expressions or []:
            if req.operator == "In" and req.values:
                labels[req.key] = req.values[0]
            elif req.operator == "Exists":
                labels.setdefault(req.key, "1")
            elif req.operator in ("Gt", "Lt") and req.values:
                n = int(req.values[0])
                labels[req.key] = str(n + 1 if req.operator == "Gt" else n - 1)
            elif req.operator in ("NotIn", "DoesNotExist"):
                labels.pop(req.key, None)
        out.append(NodeInfo(name=f"n{i}", labels=labels, memory_mib=8192))
    return out


def builtin_nodes() -> list[NodeInfo]:
    base = {"kubernetes.io/os": "linux"}
    return [NodeInfo("jetson", {**base, "kubernetes.io/arch": "arm64", "nvidia.com/gpu.family": "ampere",
                                CC_MAJOR: "8", CC_MINOR: "7"}, memory_mib=8192),
            NodeInfo("arm", {**base, "kubernetes.io/arch": "arm64"}, memory_mib=4096),
            NodeInfo("x86", {**base, "kubernetes.io/arch": "amd64"}, memory_mib=16384)]


class Api:
    """Server-side dry runs: what the apiserver says about an object, without storing it."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.ns = namespace
        self.custom = k8s.CustomObjectsApi(api)
        self.apps = k8s.AppsV1Api(api)
        self.batch = k8s.BatchV1Api(api)
        self.core = k8s.CoreV1Api(api)

    def admit(self, plural: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The object as stored (defaults filled in), or None when the apiserver refuses it."""
        try:
            return self.custom.create_namespaced_custom_object(  # type: ignore[no-any-return]
                GROUP, VERSION, self.ns, plural, body, dry_run="All", field_validation="Strict")
        except k8s.ApiException as err:
            if err.status in (400, 422):
                return None
            raise

    def render(self, manifest: dict[str, Any]) -> None:
        """Raises when the apiserver refuses a rendered object, with its reason.

        Each object goes the way the operator writes it: DaemonSets by server-side apply
        (kube.writes), the optimization Job and its Secret by create (controller.optimize_runners).
        """
        meta = manifest["metadata"]
        create: dict[str, Callable[[], Any]] = {
            "DaemonSet": lambda: self.apps.patch_namespaced_daemon_set(
                meta["name"], self.ns, manifest, field_manager=names.FIELD_MANAGER, force=True, dry_run="All",
                field_validation="Strict", _content_type=APPLY_PATCH),
            "Job": lambda: self.batch.create_namespaced_job(self.ns, manifest, dry_run="All",
                                                            field_validation="Strict"),
            "Secret": lambda: self.core.create_namespaced_secret(self.ns, manifest, dry_run="All",
                                                                 field_validation="Strict")}
        try:
            create[manifest["kind"]]()
        except k8s.ApiException as err:
            raise AssertionError(f"the apiserver refused a rendered {manifest['kind']}: {err.body}\n"
                                 f"{manifest}") from err


def check(api: Api, profile_name: str, profile_spec: dict[str, Any], model_name: str,
          model_spec: dict[str, Any], stats: Counter[str]) -> None:
    """The property for one generated pair; counts what happened in `stats`."""
    stored_profile = api.admit(DeploymentProfile.PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": DeploymentProfile.KIND,
        "metadata": {"name": profile_name, "namespace": api.ns}, "spec": profile_spec})
    model_spec = {**model_spec, "profileRef": profile_name}  # the generated name would name nothing
    stored_model = api.admit(EdgeModel.PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": EdgeModel.KIND,
        "metadata": {"name": model_name, "namespace": api.ns}, "spec": model_spec})
    stats["profiles admitted"] += stored_profile is not None
    stats["models admitted"] += stored_model is not None
    if stored_model is None and stored_profile is not None:  # the profile still gets planned, with a plain model
        stored_model = api.admit(EdgeModel.PLURAL, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": EdgeModel.KIND,
            "metadata": {"name": "plain", "namespace": api.ns}, "spec": {**PLAIN_MODEL, "profileRef": profile_name}})
    if stored_model is None:
        return
    model = EdgeModel.model_validate(stored_model)
    model.metadata.uid = "00000000-0000-0000-0000-000000000001"  # a dry run assigns none
    if stored_profile is not None:
        spec = DeploymentProfile.model_validate(stored_profile).spec
        resolved, nodes = ResolvedProfile(profile_name, spec), nodes_for(spec)
    else:  # the model's own values still go through the built-in profile's classes
        resolved, nodes = ResolvedProfile(BUILTIN_PROFILE_NAME, BUILTIN_PROFILE, builtin=True), builtin_nodes()
    stats["pairs planned"] += 1
    stats["profiles planned"] += stored_profile is not None
    settings = OperatorSettings(namespace=api.ns, artifact_url="http://edgewise-artifacts:8090")
    plan = plan_model(model, resolved, nodes, [], settings)
    advance(model, plan, Observed(nodes, []), None, NOW)
    for workload in plan.workloads:
        api.render(workload.manifest)
        stats["daemonsets accepted"] += 1
    by_name = {n.name: n for n in nodes}
    for hc in resolved.spec.classes:
        members = [by_name[n] for c in plan.classes if c.name == hc.name for n in c.nodes]
        job = job_spec(model, hc, members)
        if job is not None:
            api.render(token_secret_manifest(job, settings, "t" * 32))
            api.render(job_manifest(job, settings, f"{api.ns}/{model.metadata.name}"))
            stats["jobs accepted"] += 1


def test_every_admitted_spec_plans_and_renders_objects_the_apiserver_accepts(
        cluster: DevCluster, namespace: str) -> None:
    from operator_support import install_crds

    install_crds(cluster)
    stats: Counter[str] = Counter()
    with cluster.api_client() as client:
        api = Api(client, namespace)

        # No shrinking: with a dry run per step it takes minutes. A failure shows the example as generated;
        # minimize it by hand into REGRESSIONS (or test_crd_validation.py when admission should refuse it).
        @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck),
                  phases=[Phase.explicit, Phase.reuse, Phase.generate])
        @given(profile_name=NAMES, profile=spec_strategy(DeploymentProfileSpec, steer_profile), model_name=NAMES,
               model=spec_strategy(EdgeModelSpec, steer_model))
        def prop(profile_name: str, profile: dict[str, Any], model_name: str, model: dict[str, Any]) -> None:
            check(api, profile_name, profile, model_name, model, stats)

        prop()
    print("admission property:", dict(stats))  # shown with -s: how much got through to planning
    # Not vacuous: enough generated specs got through admission to exercise planning and rendering.
    assert stats["profiles planned"] >= 10 and stats["daemonsets accepted"] >= 20, stats


# Specs the property found admitted that rendered objects the apiserver refused, kept as they were found.
ARM = {"kubernetes.io/arch": "arm64"}
REGRESSIONS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    # `Lt 0` in an earlier class: the later class's affinity said "not Lt 0" as `Gt -1`, a value node
    # affinity refuses (label values cannot be negative). Found against the CRDs before issue 15.
    ("lt-zero-in-an-earlier-class", {"classes": [
        {"name": "a", "runtime": "onnxruntime", "nodeSelector": ARM,
         "matchExpressions": [{"key": "rank", "operator": "Lt", "values": ["0"]}]},
        {"name": "b", "runtime": "onnxruntime", "nodeSelector": ARM}]}, PLAIN_MODEL),
    # Integer quantities, as YAML users write them, and a device plugin's resource in limits.
    ("integer-quantities", {"classes": [
        {"name": "a", "runtime": "onnxruntime", "nodeSelector": ARM,
         "resources": {"requests": {"cpu": "2", "ephemeral-storage": 1011},
                       "limits": {"example.com/dongle": 1, "memory": 2**31}}}]}, PLAIN_MODEL),
    # A Job-run optimization with the smallest memory the CRD admits.
    ("smallest-job-memory", {"classes": [{"name": "a", "runtime": "onnxruntime", "nodeSelector": ARM}]},
     {**PLAIN_MODEL, "optimization": {"runIn": "Job", "jobMemory": "256Mi"}}),
]


@pytest.mark.parametrize(("case", "profile", "model"), REGRESSIONS, ids=[c[0] for c in REGRESSIONS])
def test_regressions_the_property_found(cluster: DevCluster, namespace: str, case: str, profile: dict[str, Any],
                                        model: dict[str, Any]) -> None:
    from operator_support import install_crds

    install_crds(cluster)
    stats: Counter[str] = Counter()
    with cluster.api_client() as client:
        check(Api(client, namespace), "p", profile, "m", model, stats)
    assert stats["profiles planned"] == 1 and stats["daemonsets accepted"] >= 1, stats  # the case was exercised


def test_the_generation_schema_is_the_crd_schema_plus_key_shapes() -> None:
    """What the generator draws from is what `kubectl apply` validates, with key shapes spelled out."""
    for model, resource in ((DeploymentProfileSpec, DeploymentProfile), (EdgeModelSpec, EdgeModel)):
        served = crd.resource_schema(resource)["properties"]["spec"]
        generated = crd.model_schema(model, generation=True)
        assert set(served["properties"]) == set(generated["properties"])
    hc = crd.model_schema(HardwareClass, generation=True)
    assert hc["properties"]["nodeSelector"]["propertyNames"]["pattern"].startswith("^(")
    assert "propertyNames" not in crd.model_schema(HardwareClass)["properties"]["nodeSelector"]
