"""The planner: (model, profile, nodes, existing workloads, settings) → desired objects.

Pure and deterministic. Per hardware class it renders one DaemonSet (per
variant, see `runtimes`) whose node affinity selects exactly the nodes the
classifier assigned to the class, so the scheduler and the status agree. New
nodes with the right labels get pods from the DaemonSet controller without
the operator writing anything.

Safety rules, because deleting a serving workload is the one mistake that
takes a fleet offline (the planner states them as `keep` and the class errors;
`core/rollout/placement.deletions` is where they decide what goes):
- an unresolved profile (missing, deleted) plans nothing and deletes nothing;
- a class whose affinity cannot be expressed keeps its existing workloads;
- only workloads of classes that were removed from (or can no longer match in)
  a resolved profile are deleted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from edgewise.api.profile import DeploymentProfileSpec, HardwareClass
from edgewise.api.resources import API_VERSION, EdgeModel
from edgewise.api.settings import OperatorSettings
from edgewise.core import guards, names
from edgewise.core.classify import Classification, classify
from edgewise.core.observed import NodeInfo, Workload
from edgewise.core.runtimes import Artifact, PodContext, Variant, get_runtime
from edgewise.core.selector import AffinityTooComplex, Term, affinity, class_term, first_match_terms, simplify


@dataclass(frozen=True)
class ResolvedProfile:
    """The profile a model uses: a DeploymentProfile, or the built-in one."""

    name: str
    spec: DeploymentProfileSpec
    builtin: bool = False
    generation: int = 0


@dataclass(frozen=True)
class WorkloadPlan:
    name: str
    class_name: str
    variant: str
    slot: str
    nodes: tuple[str, ...]
    manifest: dict[str, Any]

    @property
    def spec_hash(self) -> str:
        return str(self.manifest["metadata"]["annotations"][names.SPEC_HASH_ANNOTATION])


@dataclass(frozen=True)
class ClassPlan:
    name: str
    runtime: str
    precision: str
    image: str
    artifact: Artifact
    nodes: tuple[str, ...] = ()
    untolerated: tuple[str, ...] = ()
    rejected: tuple[str, ...] = ()  # nodes of the class the runtime cannot serve (see message)
    workloads: tuple[WorkloadPlan, ...] = ()
    compute_capabilities: tuple[str, ...] = ()
    error: str = ""  # the class could not be planned; its existing workloads are kept
    error_reason: str = ""  # condition reason of `error` (ClassError when empty)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelPlan:
    profile: ResolvedProfile | None
    classes: tuple[ClassPlan, ...] = ()
    unmatched: tuple[str, ...] = ()
    keep: tuple[str, ...] = field(default=())  # owned workloads left untouched (unresolved profile, errors)

    @property
    def workloads(self) -> tuple[WorkloadPlan, ...]:
        return tuple(w for c in self.classes for w in c.workloads)


def plan_model(
    model: EdgeModel,
    profile: ResolvedProfile | None,
    nodes: Sequence[NodeInfo],
    existing: Sequence[Workload],
    settings: OperatorSettings,
    artifacts: Mapping[str, Artifact] | None = None,
    classification: Classification | None = None,
) -> ModelPlan:
    """Desired workloads of `model`. `profile=None` means the referenced profile is missing.

    `classification` is `classify(profile.spec, nodes)` when the caller has it already.
    """
    if profile is None:
        return ModelPlan(profile=None, keep=tuple(sorted(w.name for w in existing)))
    classification = classification or classify(profile.spec, nodes)
    slots = _slots(existing)
    earlier: list[Term] = []
    classes = []
    for hc in profile.spec.classes:
        own = class_term(hc)
        artifact = (artifacts or {}).get(hc.name) or default_artifact(model)
        classes.append(_plan_class(model, hc, own, list(earlier), classification, slots, settings, artifact))
        earlier.append(own)
    errored = {c.name for c in classes if c.error}
    keep = sorted(w.name for w in existing if w.labels.get(names.CLASS_LABEL) in errored)
    return ModelPlan(profile=profile, classes=tuple(classes),
                     unmatched=tuple(n.name for n in classification.unmatched), keep=tuple(keep))


def default_artifact(model: EdgeModel) -> Artifact:
    """Until an optimized artifact exists for a class, it serves the source model."""
    return Artifact(uri=model.spec.source.uri, sha256=model.spec.source.digest(), precision="fp32")


def _slots(existing: Sequence[Workload]) -> dict[tuple[str, str], str]:
    """(class, variant) → slot already in use, so a re-plan never renames a serving workload."""
    out: dict[tuple[str, str], str] = {}
    for w in sorted(existing, key=lambda w: w.name):
        key = (w.labels.get(names.CLASS_LABEL, ""), w.labels.get(names.VARIANT_LABEL, ""))
        slot = w.labels.get(names.SLOT_LABEL, "")
        if slot in names.SLOTS:
            out.setdefault(key, slot)
    return out


def _plan_class(model: EdgeModel, hc: HardwareClass, own: Term, earlier: list[Term],
                classification: Classification, slots: Mapping[tuple[str, str], str],
                settings: OperatorSettings, artifact: Artifact) -> ClassPlan:
    runtime = get_runtime(hc.runtime)
    members = classification.members(hc.name)
    precision = hc.effective_precision()
    ctx = PodContext(model=model.metadata.name, version=model.spec.version, hardware=hc, precision=precision,
                     artifact=artifact, settings=settings, variant=Variant(key=""),
                     source_sha256=model.spec.source.digest())
    base = ClassPlan(
        name=hc.name, runtime=hc.runtime, precision=precision, image=runtime.image(ctx), artifact=artifact,
        nodes=tuple(n.name for n in members.nodes), untolerated=tuple(n.name for n in members.untolerated))
    refused = guards.refusal(hc, base.image, members.nodes, settings)
    if refused is not None:
        return replace(base, error=refused.message, error_reason=refused.reason)
    try:
        terms = first_match_terms(own, earlier)
    except AffinityTooComplex as err:
        return replace(base, error=f"class {hc.name}: {err}")
    if not terms:
        return replace(base, notes=(f"class {hc.name} matches no node that an earlier class does not "
                                     "already take; nothing runs for it",))
    split = runtime.split(members.nodes, hc)
    notes = [f"{node.name}: {why}" for node, why in split.rejected]
    serving_source = artifact.sha256 == model.spec.source.digest()
    if hc.runtime in ("onnxruntime", "openvino") and precision != artifact.precision and serving_source:
        notes.append(f"serving the {artifact.precision} source model until an optimized {precision} "
                     "artifact exists")
    workloads = []
    for variant in split.variants:
        variant_ctx = replace(ctx, variant=variant)
        variant_terms = [t for t in (simplify(t | set(variant.requirements)) for t in terms) if t is not None]
        if not variant_terms:
            continue
        slot = slots.get((hc.name, variant.key), names.DEFAULT_SLOT)
        manifest = daemonset(model, variant_ctx, runtime.pod_spec(variant_ctx), variant_terms, slot)
        workloads.append(WorkloadPlan(
            name=manifest["metadata"]["name"], class_name=hc.name, variant=variant.key, slot=slot,
            nodes=tuple(n.name for n in variant.nodes), manifest=manifest))
    return replace(base, workloads=tuple(workloads), notes=tuple(notes),
                   rejected=tuple(node.name for node, _ in split.rejected),
                   compute_capabilities=tuple(v.value for v in split.variants if v.value))


def daemonset(model: EdgeModel, ctx: PodContext, pod_spec: dict[str, Any], terms: list[Term], slot: str
              ) -> dict[str, Any]:
    """The DaemonSet of one class (variant, slot), owned by the EdgeModel."""
    meta = model.metadata
    hc = ctx.hardware
    variant = ctx.variant.key
    name = names.workload_name(meta.name, hc.name, slot, variant)
    selector = {names.MODEL_LABEL: meta.name, names.CLASS_LABEL: hc.name, names.SLOT_LABEL: slot}
    if variant:
        selector[names.VARIANT_LABEL] = variant
    labels = {
        names.APP_NAME: meta.name,
        names.PART_OF: "edgewise",
        names.MANAGED_BY: names.MANAGER,
        names.COMPONENT: names.RUNTIME_COMPONENT,
        names.RUNTIME_LABEL: hc.runtime,
        names.VERSION_LABEL: model.spec.version,
        **selector,
    }
    spec = dict(pod_spec)
    spec["affinity"] = affinity(terms)
    if hc.tolerations:
        spec["tolerations"] = [t.to_api() for t in hc.tolerations]
    manifest: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": name,
            "namespace": meta.namespace,
            "labels": labels,
            "annotations": {
                names.ARTIFACT_ANNOTATION: ctx.artifact.sha256,
                names.PRECISION_ANNOTATION: ctx.precision,
            },
            "ownerReferences": [{
                "apiVersion": API_VERSION, "kind": EdgeModel.KIND, "name": meta.name, "uid": meta.uid,
                "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "selector": {"matchLabels": selector},
            "revisionHistoryLimit": 3,
            # The rollout moves pods by changing node affinity (core/rollout/placement.py); OnDelete keeps
            # every pod the new affinity still selects, so a step restarts exactly the nodes it moves.
            "updateStrategy": {"type": "OnDelete"},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {names.ARTIFACT_ANNOTATION: ctx.artifact.sha256},
                },
                "spec": spec,
            },
        },
    }
    manifest["metadata"]["annotations"][names.SPEC_HASH_ANNOTATION] = spec_hash(manifest)
    return manifest


def spec_hash(manifest: Mapping[str, Any]) -> str:
    """Hash of everything Edgewise sets, so "unchanged" is one string comparison.

    Comparing the live object field by field would trip over the defaults the
    apiserver adds and normalised quantities; the hash avoids spurious writes.
    """
    body = json.loads(json.dumps(manifest))
    body["metadata"].get("annotations", {}).pop(names.SPEC_HASH_ANNOTATION, None)
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]
