"""Label requirements with the exact semantics of Kubernetes node affinity.

Used twice, and the two must agree: the classifier evaluates them in Python,
and the planner renders them as DaemonSet node affinity for the scheduler. A
node belongs to the first class it matches, so the affinity of class k is
"matches k and none of the classes before it". Node affinity has no NOT, so
that formula is expanded into a disjunction of terms (DNF) built from the
negated requirements (In ↔ NotIn, Exists ↔ DoesNotExist, Gt n ↔ Lt n+1 or
absent), and simplified so typical profiles stay a handful of terms.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edgewise.api.profile import HardwareClass

# Beyond this many terms a class's affinity is refused (profile too entangled to express).
MAX_TERMS = 64


class AffinityTooComplex(ValueError):
    """The first-match rule of a profile needs more node-affinity terms than allowed."""


@dataclass(frozen=True, order=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.operator == "In":
            return present and value in self.values
        if self.operator == "NotIn":
            return not present or value not in self.values
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        if self.operator in ("Gt", "Lt"):
            number, bound = _int(value), _int(self.values[0]) if self.values else None
            if not present or number is None or bound is None:
                return False
            return number > bound if self.operator == "Gt" else number < bound
        raise ValueError(f"unknown operator {self.operator}")

    def negated(self) -> tuple[Requirement, ...]:
        """Requirements whose disjunction holds exactly when this one does not.

        Exact except for Gt/Lt on a label whose value is not an integer: node
        affinity cannot say "not an integer", so such nodes fall out of both.
        """
        op, key, values = self.operator, self.key, self.values
        if op == "In":
            return (Requirement(key, "NotIn", values),)
        if op == "NotIn":
            return (Requirement(key, "In", values),)
        if op == "Exists":
            return (Requirement(key, "DoesNotExist"),)
        if op == "DoesNotExist":
            return (Requirement(key, "Exists"),)
        bound = int(values[0])
        if op == "Lt" and bound <= 0:
            # A label value cannot be negative (it starts alphanumeric), so `Lt 0` holds for no node and
            # its negation for every one; `Gt -1` would say so in a value the apiserver refuses.
            return (Requirement(key, "DoesNotExist"), Requirement(key, "Exists"))
        flipped = Requirement(key, "Lt", (str(bound + 1),)) if op == "Gt" else Requirement(
            key, "Gt", (str(bound - 1),))
        return (Requirement(key, "DoesNotExist"), flipped)

    def to_api(self) -> dict[str, object]:
        out: dict[str, object] = {"key": self.key, "operator": self.operator}
        if self.values:
            out["values"] = list(self.values)
        return out


Term = frozenset[Requirement]  # all must hold


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def class_term(hc: HardwareClass) -> Term:
    """The requirements of one class (nodeSelector entries become `In [value]`)."""
    reqs = {Requirement(k, "In", (v,)) for k, v in (hc.node_selector or {}).items()}
    for expr in hc.match_expressions or []:
        values = tuple(sorted(set(expr.values or []))) if expr.operator in ("In", "NotIn") else tuple(
            expr.values or [])
        reqs.add(Requirement(expr.key, expr.operator, values))
    return frozenset(reqs)


def term_matches(term: Iterable[Requirement], labels: Mapping[str, str]) -> bool:
    return all(r.matches(labels) for r in term)


def terms_match(terms: Iterable[Term], labels: Mapping[str, str]) -> bool:
    """Node affinity semantics: terms are ORed; an empty list matches nothing."""
    return any(t and term_matches(t, labels) for t in terms)


def first_match_terms(own: Term, earlier: list[Term]) -> list[Term]:
    """DNF of `own AND NOT e1 AND NOT e2 ...`, simplified; [] when nothing can match.

    Raises AffinityTooComplex when the simplified result exceeds MAX_TERMS.
    """
    terms: list[Term] = [own]
    for prior in earlier:
        alternatives = [alt for req in sorted(prior) for alt in req.negated()]
        expanded = []
        for term, alt in itertools.product(terms, alternatives):
            simplified = simplify(term | {alt})
            if simplified is not None:
                expanded.append(simplified)
        terms = _drop_subsumed(expanded)
        if len(terms) > MAX_TERMS:
            raise AffinityTooComplex(
                f"the first-match rule needs more than {MAX_TERMS} node-affinity terms; "
                "give the classes fewer requirements or reorder them")
    return sorted(terms, key=lambda t: sorted(t))


def simplify(term: Iterable[Requirement]) -> Term | None:
    """An equivalent term with at most a few requirements per key; None if unsatisfiable."""
    by_key: dict[str, list[Requirement]] = {}
    for req in term:
        by_key.setdefault(req.key, []).append(req)
    out: set[Requirement] = set()
    for key, reqs in by_key.items():
        merged = _merge_key(key, reqs)
        if merged is None:
            return None
        out.update(merged)
    return frozenset(out)


def _merge_key(key: str, reqs: list[Requirement]) -> list[Requirement] | None:
    exists: bool | None = None
    allowed: set[str] | None = None
    forbidden: set[str] = set()
    gt: int | None = None
    lt: int | None = None
    for r in reqs:
        if r.operator == "Exists":
            if exists is False:
                return None
            exists = True
        elif r.operator == "DoesNotExist":
            if exists is True:
                return None
            exists = False
        elif r.operator == "In":
            allowed = set(r.values) if allowed is None else allowed & set(r.values)
        elif r.operator == "NotIn":
            forbidden |= set(r.values)
        elif r.operator == "Gt":
            bound = int(r.values[0])
            gt = bound if gt is None else max(gt, bound)
        elif r.operator == "Lt":
            bound = int(r.values[0])
            lt = bound if lt is None else min(lt, bound)
    needs_value = allowed is not None or gt is not None or lt is not None
    if exists is False:
        return None if needs_value else [Requirement(key, "DoesNotExist")]
    if gt is not None and lt is not None and lt - gt <= 1:
        return None
    if allowed is not None:
        keep = {v for v in allowed - forbidden if _in_bounds(v, gt, lt)}
        return [Requirement(key, "In", tuple(sorted(keep)))] if keep else None
    out = []
    if gt is not None:
        out.append(Requirement(key, "Gt", (str(gt),)))
    if lt is not None:
        out.append(Requirement(key, "Lt", (str(lt),)))
    if exists and not out:
        out.append(Requirement(key, "Exists"))
    if forbidden:
        out.append(Requirement(key, "NotIn", tuple(sorted(forbidden))))
    return out


def _in_bounds(value: str, gt: int | None, lt: int | None) -> bool:
    if gt is None and lt is None:
        return True
    number = _int(value)
    if number is None:
        return False
    return (gt is None or number > gt) and (lt is None or number < lt)


def _drop_subsumed(terms: list[Term]) -> list[Term]:
    """Remove duplicates and terms implied by a weaker one (B ⊆ A means A adds nothing to A or B)."""
    unique = sorted(set(terms), key=len)
    kept: list[Term] = []
    for term in unique:
        if not any(k <= term for k in kept):
            kept.append(term)
    return kept


def affinity(terms: list[Term]) -> dict[str, object]:
    """The pod `affinity` stanza requiring one of `terms`."""
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [r.to_api() for r in sorted(t)]} for t in terms]}}}
