"""Label requirements: node-affinity semantics, negation, and the first-match DNF."""

from __future__ import annotations

import itertools
import random

import pytest
from planning_support import profile_of

from edgewise.api.builtin import BUILTIN_PROFILE
from edgewise.core.classify import classify
from edgewise.core.observed import NodeInfo
from edgewise.core.selector import (
    MAX_TERMS,
    AffinityTooComplex,
    Requirement,
    class_term,
    first_match_terms,
    simplify,
    terms_match,
)

R = Requirement


@pytest.mark.parametrize(
    ("req", "labels", "expected"),
    [
        (R("a", "In", ("1", "2")), {"a": "2"}, True),
        (R("a", "In", ("1",)), {"a": "3"}, False),
        (R("a", "In", ("1",)), {}, False),
        (R("a", "NotIn", ("1",)), {}, True),  # absent label satisfies NotIn, as in node affinity
        (R("a", "NotIn", ("1",)), {"a": "1"}, False),
        (R("a", "Exists"), {"a": ""}, True),
        (R("a", "Exists"), {}, False),
        (R("a", "DoesNotExist"), {}, True),
        (R("a", "DoesNotExist"), {"a": "x"}, False),
        (R("a", "Gt", ("7",)), {"a": "8"}, True),
        (R("a", "Gt", ("7",)), {"a": "7"}, False),
        (R("a", "Gt", ("7",)), {"a": "ampere"}, False),  # not an integer: never matches
        (R("a", "Gt", ("7",)), {}, False),
        (R("a", "Lt", ("7",)), {"a": "-3"}, True),
        (R("a", "Lt", ("7",)), {"a": "7"}, False),
    ],
)
def test_requirement_semantics(req: Requirement, labels: dict[str, str], expected: bool) -> None:
    assert req.matches(labels) is expected


VALUES = ["", "1", "2", "3", "7", "8"]


@pytest.mark.parametrize(
    "req",
    [
        R("a", "In", ("1", "2")),
        R("a", "NotIn", ("2",)),
        R("a", "Exists"),
        R("a", "DoesNotExist"),
        R("a", "Gt", ("2",)),
        R("a", "Lt", ("3",)),
        R("a", "Lt", ("0",)),  # found by the admission property test: its negation was `Gt -1`
        R("a", "Lt", ("1",)),
    ],
)
def test_negation_is_exact_on_integer_labels(req: Requirement) -> None:
    for value in [None, *VALUES[1:]]:
        labels = {} if value is None else {"a": value}
        assert any(n.matches(labels) for n in req.negated()) is not req.matches(labels), labels


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ({R("a", "Exists"), R("a", "DoesNotExist")}, None),
        ({R("a", "In", ("1", "2")), R("a", "In", ("2", "3"))}, {R("a", "In", ("2",))}),
        ({R("a", "In", ("1",)), R("a", "NotIn", ("1",))}, None),
        ({R("a", "In", ("1", "2")), R("a", "NotIn", ("1",))}, {R("a", "In", ("2",))}),
        ({R("a", "NotIn", ("1",)), R("a", "NotIn", ("2",))}, {R("a", "NotIn", ("1", "2"))}),
        ({R("a", "NotIn", ("1",)), R("a", "DoesNotExist")}, {R("a", "DoesNotExist")}),
        ({R("a", "In", ("1",)), R("a", "Exists")}, {R("a", "In", ("1",))}),
        ({R("a", "Gt", ("2",)), R("a", "Lt", ("3",))}, None),
        ({R("a", "Gt", ("2",)), R("a", "Gt", ("5",))}, {R("a", "Gt", ("5",))}),
        ({R("a", "In", ("1", "8", "x")), R("a", "Gt", ("2",))}, {R("a", "In", ("8",))}),
        ({R("a", "Gt", ("1",)), R("a", "DoesNotExist")}, None),
        ({R("a", "Exists"), R("a", "NotIn", ("1",))}, {R("a", "Exists"), R("a", "NotIn", ("1",))}),
        ({R("a", "In", ("1",)), R("b", "Exists")}, {R("a", "In", ("1",)), R("b", "Exists")}),
    ],
)
def test_simplify_merges_and_detects_contradictions(term: set[Requirement], expected: set | None) -> None:
    assert simplify(term) == (None if expected is None else frozenset(expected))


def test_builtin_profile_affinities_stay_small() -> None:
    terms = [class_term(c) for c in BUILTIN_PROFILE.classes]
    jetson, arm, amd = (first_match_terms(t, terms[:i]) for i, t in enumerate(terms))
    assert jetson == [
        frozenset({R("kubernetes.io/arch", "In", ("arm64",)), R("nvidia.com/gpu.family", "Exists")})
    ]
    assert arm == [
        frozenset({R("kubernetes.io/arch", "In", ("arm64",)), R("nvidia.com/gpu.family", "DoesNotExist")})
    ]
    assert amd == [frozenset({R("kubernetes.io/arch", "In", ("amd64",))})]


def test_a_class_shadowed_by_an_earlier_one_gets_no_terms() -> None:
    earlier = frozenset({R("kubernetes.io/arch", "In", ("arm64",))})
    same = frozenset({R("kubernetes.io/arch", "In", ("arm64",)), R("x", "Exists")})
    assert first_match_terms(same, [earlier]) == []


def test_entangled_profiles_are_refused_not_expanded_without_bound() -> None:
    earlier = [frozenset({R(f"k{i}-{j}", "Exists") for j in range(3)}) for i in range(8)]
    with pytest.raises(AffinityTooComplex, match=str(MAX_TERMS)):
        first_match_terms(frozenset({R("z", "Exists")}), earlier)


# -- the property that matters: the scheduler and the classifier agree ---------------------------

KEYS = ["arch", "family", "cc", "vendor"]
OPS = ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]


def _random_class(rng: random.Random, i: int) -> dict:
    exprs = []
    for key in rng.sample(KEYS, rng.randint(1, 3)):
        op = rng.choice(OPS)
        values = {
            "In": rng.sample(VALUES[1:], rng.randint(1, 2)),
            "NotIn": rng.sample(VALUES[1:], 1),
            "Gt": [rng.choice(VALUES[1:])],
            "Lt": [rng.choice(VALUES[1:])],
        }.get(op)
        exprs.append({"key": key, "operator": op, **({"values": values} if values else {})})
    return {"name": f"c{i}", "runtime": "onnxruntime", "matchExpressions": exprs}


def _all_label_sets() -> list[dict[str, str]]:
    choices = [None, "1", "2", "3", "7", "8"]
    out = []
    for combo in itertools.product(choices, repeat=len(KEYS)):
        out.append({k: v for k, v in zip(KEYS, combo, strict=True) if v is not None})
    return out


def test_affinity_of_each_class_selects_exactly_the_nodes_classified_into_it() -> None:
    """For 150 random 2–4-class profiles and every combination of labels (6^4 nodes)."""
    rng = random.Random(20241122)
    nodes = [NodeInfo(name=f"n{i}", labels=labels) for i, labels in enumerate(_all_label_sets())]
    for _ in range(150):
        profile = profile_of(*(_random_class(rng, i) for i in range(rng.randint(2, 4)))).spec
        result = classify(profile, nodes)
        terms = [class_term(c) for c in profile.classes]
        for i, hc in enumerate(profile.classes):
            affinity = first_match_terms(terms[i], terms[:i])
            members = {n.name for n in result.members(hc.name).nodes}
            selected = {n.name for n in nodes if terms_match(affinity, n.labels)}
            assert selected == members, (hc.name, profile.to_api())


def test_negations_carry_only_values_the_apiserver_accepts() -> None:
    """Label values cannot be negative: node affinity refuses `Gt -1` (a DaemonSet the planner once rendered)."""
    for req in (R("a", "Lt", ("0",)), R("a", "Lt", ("1",)), R("a", "Gt", ("0",))):
        for n in req.negated():
            assert all(v.isdigit() for v in n.values), (req, n)
