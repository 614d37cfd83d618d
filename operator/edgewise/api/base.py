"""Building blocks shared by every API type.

The Python models are the one source of truth of the API: `edgewise.api.crd`
turns them into the CRD schemas, so every constraint is written once, here.
Field names are snake_case in Python and camelCase on the wire (aliases), the
Kubernetes convention.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel


def cel(rule: str, message: str, field_path: str | None = None, reason: str | None = None) -> dict[str, str]:
    """One CEL `x-kubernetes-validations` entry.

    `message` is what `kubectl apply` prints when the rule fails, so it says what
    to change, not what the rule computes.
    """
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    """`json_schema_extra` carrying CEL rules, for a model's config or a field."""
    return {"x-kubernetes-validations": list(rules)}


# Go-style durations as Kubernetes users write them ("90s", "10m", "1h30m").
# One part of a Go-style duration: (number)(fraction)(unit); core.durations parses with it.
# At most 9 digits a part, so CEL's duration() (Go's time.ParseDuration) never overflows on one.
DURATION_PART = r"([0-9]{1,9}([.][0-9]{1,9})?)(ms|s|m|h)"
DURATION_PATTERN = rf"^({DURATION_PART})+$"
Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=32)]


def duration_bounds(minimum: str, maximum: str, what: str) -> dict[str, Any]:
    """CEL bounds of a Duration field: too short makes an operator loop spin, too long overflows time math.

    Written with CEL's own duration() (Go's time.ParseDuration), the parser Kubernetes uses.
    """
    return validations(cel(f"duration(self) >= duration('{minimum}') && duration(self) <= duration('{maximum}')",
                           f"{what} must be between {minimum} and {maximum}, e.g. 30s, 5m or 1h30m"))


# Kubernetes' own name rules (k8s.io/apimachinery/pkg/util/validation), as RE2 patterns that Python's
# re reads the same way. No backslashes ([.] for a dot), so they can go into CEL strings as they are.
DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
# RFC 1123 DNS label, the shape of names that end up inside object names and label values.
DNS_LABEL_PATTERN = rf"^{DNS_LABEL}$"
# RFC 1123 DNS subdomain (object names); the 253-character total is a maxLength.
DNS_SUBDOMAIN_PATTERN = rf"^{DNS_LABEL}([.]{DNS_LABEL})*$"
# Label keys and other qualified names are [prefix/]name: a DNS subdomain, "/", a 63-character name.
QUALIFIED_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY_PATTERN = rf"^({DNS_LABEL}([.]{DNS_LABEL})*/)?{QUALIFIED_NAME}$"
LABEL_KEY_MAX = 253 + 1 + 63
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"


def label_key_rule(var: str) -> str:
    """CEL: `var` is a label key. The pattern bounds the name and each DNS label; the prefix is <= 253."""
    return f"{var}.matches('{LABEL_KEY_PATTERN}') && (!{var}.contains('/') || {var}.indexOf('/') <= 253)"


LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=LABEL_KEY_MAX, pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_PATTERN)]

# A Kubernetes quantity ("500m", "1Gi", "1.5") or a plain integer, never negative. The pattern is
# the quantity grammar of k8s.io/apimachinery/pkg/api/resource without a sign; CEL's isQuantity()
# has the last word (QUANTITY_RULE), the pattern tells a generator and a reader the shape.
QUANTITY_PATTERN = r"^([0-9]{1,18}([.][0-9]{0,9})?|[.][0-9]{1,9})(([KMGTPE]i)|[mkMGTPE]|([eE][0-9]{1,2}))?$"
QUANTITY_RULE = cel("isQuantity(string(self)) && !quantity(string(self)).isLessThan(quantity('0'))",
                    "must be a Kubernetes quantity that is not negative, e.g. 500m, 2, 256Mi or 1Gi")
Quantity = Annotated[
    Annotated[int, Field(ge=0)] | Annotated[str, StringConstraints(max_length=32, pattern=QUANTITY_PATTERN)],
    Field(json_schema_extra=validations(QUANTITY_RULE)),
]

# A memory size in binary units, as people write them for limits ("512Mi", "8Gi").
MEMORY_PATTERN = r"^[0-9]{1,9}(Ki|Mi|Gi|Ti)$"
Memory = Annotated[str, StringConstraints(pattern=MEMORY_PATTERN, max_length=32)]


def memory_mib(quantity: str) -> int:
    """Kubernetes memory quantity → MiB (the suffixes nodes report; 0 when absent or unparseable)."""
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 ** 2, "k": 1000 / 2 ** 20, "M": 1e6 / 2 ** 20,
             "G": 1e9 / 2 ** 20}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            try:
                return int(float(quantity[: -len(suffix)]) * factor)
            except ValueError:
                return 0
    return int(int(quantity) / 2 ** 20) if quantity.isdigit() else 0

SHA256_PATTERN = r"^[a-f0-9]{64}$"
Sha256 = Annotated[str, StringConstraints(pattern=SHA256_PATTERN, min_length=64, max_length=64)]


class ApiModel(BaseModel):
    """Base of every API object: camelCase aliases, tolerant of unknown fields.

    Unknown fields are ignored rather than refused: the apiserver already prunes
    and validates, and an older operator must still read objects written against
    a newer CRD.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_api(self) -> dict[str, Any]:
        """The wire form: camelCase, without unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def nested(model: type[ApiModel], description: str) -> Any:
    """A sub-object that is always present, with its own defaults.

    The CRD's default is the sub-object with all its defaults filled in, so the
    apiserver stores them even when the user omits it (and validates the CEL
    rules against a complete object); Python gets the same through the factory.
    Both read the values from the same field declarations.
    """
    return Field(default_factory=model, description=description,
                 json_schema_extra={"default": model().to_api()})
