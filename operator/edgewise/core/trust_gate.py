"""The source-trust gate: may this EdgeModel's source deploy, and what its status and Events say.

Pure. The shell (controller/reconcile.py) reads the trust policy's ConfigMap, fetches the model and its
signature bundle, and verifies them (shared/trust/source_signature.check_signature); this module
decides from what it found. Which policy applies: the profile's spec.trustPolicy, else the operator's
settings (trust_policy_config_map, require_signed_sources).

A refusal deploys nothing new: the shell marks every class as waiting (as for a refused artifact),
so what serves keeps serving (core/rollout/all_classes.py, `Observed.waiting_for_artifact`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edgewise.api.model import Source
from edgewise.api.profile import TrustPolicy as ApiTrustPolicy
from edgewise.api.settings import OperatorSettings
from edgewise.shared.trust.policy import SignatureCheck, SourceTrust, TrustPolicy, decide

# When the signature could not be checked (bundle or model unreachable, a digest that does not match
# the pin, a ConfigMap that cannot be read): nothing new deploys until it can be, and it is retried.
NOT_CHECKED = "SignatureNotChecked"
RETRY_SECONDS = 60.0


@dataclass(frozen=True)
class PolicyRef:
    """Which trust policy applies to a model, before its ConfigMap is read."""

    config_map: tuple[str, str] | None  # (namespace, name) of the accepted signers; None: no signer named
    require_signed: bool
    origin: str  # for messages: where the policy comes from


@dataclass(frozen=True)
class Gate:
    """The gate's verdict: a condition (type SOURCE_TRUSTED) and whether the model may deploy."""

    allowed: bool
    status: str  # True | False | Unknown (the condition's status)
    reason: str  # Signed | Unsigned | BadSignature | UnknownSigner | SignatureNotChecked
    message: str
    signer: str = ""
    # An Unsigned model deploys, but a person should know: a Warning Event on the transition into it.
    # (A refusal is Degraded, whose own Warning Event says it.)
    warn: bool = False
    retry_after: float | None = None
    bundle_sha256: str = ""  # the bundle that said so (Signed only; the shell fills it in): attestations bind it


def resolve_policy(profile_policy: ApiTrustPolicy | None, profile_name: str, namespace: str,
                   settings: OperatorSettings) -> PolicyRef:
    """The profile's trustPolicy (its ConfigMap in the profile's namespace), else the operator's."""
    if profile_policy is not None:
        cm = (namespace, profile_policy.config_map) if profile_policy.config_map else None
        return PolicyRef(cm, profile_policy.require_signed, f"the trustPolicy of DeploymentProfile {profile_name}")
    cm = None
    if settings.trust_policy_config_map:
        ns, _, name = settings.trust_policy_config_map.rpartition("/")
        cm = (ns or settings.namespace, name)
    return PolicyRef(cm, settings.require_signed_sources, "the operator's trust policy")


def needs_check(source: Source) -> bool:
    """Only a model that carries a signature makes the shell fetch and verify anything."""
    return source.signature is not None


def gate(source: Source, policy: TrustPolicy, ref: PolicyRef, check: SignatureCheck | None = None,
         problem: str = "") -> Gate:
    """The verdict on `source`: `check` is what verifying its bundle found (None when it carries none);
    `problem` says why it could not be verified (then `check` is ignored)."""
    if source.signature is not None and problem:
        return Gate(False, "Unknown", NOT_CHECKED,
                    f"the source model's signature could not be checked against {ref.origin}: {problem}; "
                    "nothing new is deployed, what is serving keeps serving, and it is tried again",
                    retry_after=RETRY_SECONDS)
    decision = decide(policy, check if source.signature is not None else None)
    message = f"{decision.message} ({ref.origin})"
    if decision.trust is SourceTrust.SIGNED:
        return Gate(True, "True", decision.trust.value, message, decision.signer)
    if not decision.allowed:
        message += "; what is serving keeps serving"
    return Gate(decision.allowed, "False", decision.trust.value, message, decision.signer,
                warn=decision.allowed and decision.trust is SourceTrust.UNSIGNED)


def held_classes(verdict: Gate | None, class_names: Iterable[str]) -> frozenset[str]:
    """Classes that must not start a new revision: all of them when the source is refused. They are passed
    to the rollout as waiting for their artifact, which keeps what each runs (nothing, if nothing ran)."""
    return frozenset(class_names) if verdict is not None and not verdict.allowed else frozenset()
