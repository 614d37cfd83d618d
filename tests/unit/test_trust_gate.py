"""The source-trust gate: which policy applies, the verdict on each kind of source, its condition and Events,
and that a refused source deploys nothing new while what serves keeps serving."""

from __future__ import annotations

import datetime as dt

from planning_support import model
from test_rollout_model import NODES, PROFILE, ROLLOUT, SETTINGS, live, run

from edgewise.api.model import Source
from edgewise.api.profile import TrustPolicy as ApiTrustPolicy
from edgewise.api.settings import OperatorSettings
from edgewise.api.status import DEGRADED, SOURCE_TRUSTED
from edgewise.core import names
from edgewise.core.plan import plan_model
from edgewise.core.rollout import Observed, advance
from edgewise.core.status import compute_status
from edgewise.core.trust_gate import NOT_CHECKED, PolicyRef, gate, held_classes, needs_check, resolve_policy
from edgewise.shared.trust.policy import SignatureCheck, TrustPolicy

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
SHA = "a" * 64
UNSIGNED = Source(uri="https://models.example/m.onnx", sha256=SHA)
SIGNED = Source.model_validate({"uri": "https://models.example/m.onnx", "sha256": SHA,
                                "signature": {"uri": "https://models.example/m.sig", "sha256": "b" * 64}})
LAX = PolicyRef(None, False, "the operator's trust policy")
STRICT = PolicyRef(("vision", "signers"), True, "the trustPolicy of DeploymentProfile p")
KEYS = TrustPolicy(public_keys=(b"-----BEGIN PUBLIC KEY-----\n",))


# ---- which policy ---------------------------------------------------------------------------------

def test_the_profiles_policy_wins_and_its_config_map_is_in_the_profiles_namespace() -> None:
    settings = OperatorSettings(trust_policy_config_map="edgewise-system/op-signers", require_signed_sources=True)
    ref = resolve_policy(ApiTrustPolicy(config_map="signers", require_signed=False), "p", "vision", settings)
    assert (ref.config_map, ref.require_signed) == (("vision", "signers"), False)
    assert "DeploymentProfile p" in ref.origin
    # A profile policy without a ConfigMap names no signer: the operator's ConfigMap does not leak into it.
    assert resolve_policy(ApiTrustPolicy(), "p", "vision", settings).config_map is None


def test_without_a_profile_policy_the_operators_settings_apply() -> None:
    settings = OperatorSettings(trust_policy_config_map="trust/op-signers", require_signed_sources=True)
    ref = resolve_policy(None, "p", "vision", settings)
    assert (ref.config_map, ref.require_signed) == (("trust", "op-signers"), True)
    bare = resolve_policy(None, "p", "vision", OperatorSettings(trust_policy_config_map="op-signers"))
    assert bare.config_map == ("edgewise-system", "op-signers")  # a bare name: the operator's namespace
    off = resolve_policy(None, "p", "vision", OperatorSettings())
    assert (off.config_map, off.require_signed) == (None, False)


# ---- the verdict ----------------------------------------------------------------------------------

def test_unsigned_by_default_deploys_with_a_warning() -> None:
    v = gate(UNSIGNED, TrustPolicy(), LAX)
    assert (v.allowed, v.status, v.reason, v.warn) == (True, "False", "Unsigned", True)
    assert "allows unsigned" in v.message and "operator's trust policy" in v.message
    assert not needs_check(UNSIGNED) and needs_check(SIGNED)


def test_unsigned_under_require_signed_deploys_nothing() -> None:
    v = gate(UNSIGNED, TrustPolicy(require_signed=True), STRICT)
    assert (v.allowed, v.status, v.reason, v.warn) == (False, "False", "Unsigned", False)
    assert "requireSigned" in v.message and "keeps serving" in v.message


def test_each_kind_of_signature_has_its_reason() -> None:
    signed = gate(SIGNED, KEYS, STRICT, SignatureCheck("verified", "key 0123"))
    assert (signed.allowed, signed.status, signed.reason, signed.signer) == (True, "True", "Signed", "key 0123")
    bad = gate(SIGNED, KEYS, LAX, SignatureCheck("bad_signature", "key 0123"))
    unknown = gate(SIGNED, KEYS, LAX, SignatureCheck("unknown_signer", "key 4567"))
    assert (bad.allowed, bad.status, bad.reason) == (False, "False", "BadSignature")
    assert (unknown.allowed, unknown.status, unknown.reason) == (False, "False", "UnknownSigner")
    assert not bad.warn and not unknown.warn  # refusals are said by Degraded's Warning


def test_a_signature_that_could_not_be_checked_holds_and_is_retried() -> None:
    v = gate(SIGNED, KEYS, STRICT, None, problem="https://models.example/m.sig: connection refused")
    assert (v.allowed, v.status, v.reason) == (False, "Unknown", NOT_CHECKED)
    assert v.retry_after and "connection refused" in v.message
    # A problem is only about a signature: an unsigned model has nothing to fetch.
    assert gate(UNSIGNED, TrustPolicy(), LAX, problem="ignored").reason == "Unsigned"


def test_held_classes_are_all_classes_only_when_refused() -> None:
    assert held_classes(gate(UNSIGNED, TrustPolicy(), LAX), ["a", "b"]) == frozenset()
    assert held_classes(gate(UNSIGNED, TrustPolicy(require_signed=True), STRICT), ["a", "b"]) == {"a", "b"}
    assert held_classes(None, ["a"]) == frozenset()


# ---- status and Events ----------------------------------------------------------------------------

def _status(m, verdict, existing=()):
    plan = plan_model(m, PROFILE, NODES, list(existing), SETTINGS)
    return compute_status(m, plan, {}, T0, total_nodes=len(NODES), trust=verdict)


def test_the_condition_and_one_warning_per_change() -> None:
    m = model(version="1", profile_ref="p", rollout=ROLLOUT)
    first = _status(m, gate(UNSIGNED, TrustPolicy(), LAX))
    cond = {c.type: c for c in first.status.conditions or []}
    assert (cond[SOURCE_TRUSTED].status, cond[SOURCE_TRUSTED].reason) == ("False", "Unsigned")
    assert [(e.type, e.reason) for e in first.events if e.reason == "Unsigned"] == [("Warning", "Unsigned")]
    again = _status(m.model_copy(update={"status": first.status}), gate(UNSIGNED, TrustPolicy(), LAX))
    assert not [e for e in again.events if e.reason == "Unsigned"]  # unchanged: no second Event
    signed = _status(m.model_copy(update={"status": first.status}),
                     gate(SIGNED, KEYS, LAX, SignatureCheck("verified", "key 0123")))
    assert ("Normal", "SourceTrusted") in [(e.type, e.reason) for e in signed.events]


def test_a_refusal_is_degraded_with_the_reason_and_one_warning() -> None:
    m = model(version="1", profile_ref="p", rollout=ROLLOUT)
    result = _status(m, gate(UNSIGNED, TrustPolicy(require_signed=True), STRICT))
    cond = {c.type: c for c in result.status.conditions or []}
    assert (cond[DEGRADED].status, cond[DEGRADED].reason) == ("True", "Unsigned")
    assert result.status.phase == "Degraded"
    warnings = [e for e in result.events if e.type == "Warning" and e.reason == "Unsigned"]
    assert len(warnings) == 1 and "requireSigned" in warnings[0].message
    assert _status(m, None).status.conditions and SOURCE_TRUSTED not in {
        c.type for c in _status(m, None).status.conditions or []}


# ---- a refused source deploys nothing new ---------------------------------------------------------

def test_a_refused_new_version_keeps_the_previous_one_serving() -> None:
    first = run("1")
    existing = live([w.manifest for w in first.apply])
    m = model(version="2", profile_ref="p", rollout=ROLLOUT)
    m = m.model_copy(update={"status": m.status.model_copy(update={"rollout": first.status})})
    plan = plan_model(m, PROFILE, NODES, existing, SETTINGS)
    verdict = gate(UNSIGNED, TrustPolicy(require_signed=True), STRICT)
    held = held_classes(verdict, [c.name for c in plan.classes])
    result = advance(m, plan, Observed(NODES, existing, waiting_for_artifact=held), None, T0)
    assert not result.delete
    assert {w.name: w.manifest["metadata"]["labels"][names.VERSION_LABEL] for w in result.apply} == \
        {w.name: "1" for w in existing}
    # Allowed, the same reconcile starts version 2's canary.
    moved = advance(m, plan, Observed(NODES, existing), None, T0)
    assert "2" in {w.manifest["metadata"]["labels"][names.VERSION_LABEL] for w in moved.apply}


def test_a_refused_first_version_deploys_nothing() -> None:
    m = model(version="1", profile_ref="p", rollout=ROLLOUT)
    plan = plan_model(m, PROFILE, NODES, [], SETTINGS)
    held = held_classes(gate(SIGNED, KEYS, LAX, SignatureCheck("bad_signature", "key 0")),
                        [c.name for c in plan.classes])
    assert advance(m, plan, Observed(NODES, [], waiting_for_artifact=held), None, T0).apply == ()
