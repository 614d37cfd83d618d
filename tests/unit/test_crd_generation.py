"""The CRDs are generated from the models, committed, and structurally sound."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from planning_support import REPO

from edgewise.api import crd
from edgewise.api.model import EdgeModelSpec
from edgewise.api.profile import DeploymentProfileSpec
from edgewise.api.resources import RESOURCES, DeploymentProfile, EdgeModel

CRD_DIRS = [REPO / "crds", REPO / "charts" / "edgewise" / "crds"]


@pytest.mark.parametrize("directory", CRD_DIRS, ids=lambda p: str(p.relative_to(REPO)))
def test_committed_crds_equal_what_the_models_generate(directory: Path) -> None:
    for name, text in crd.rendered().items():
        path = directory / name
        assert path.exists(), f"{path} missing: run `edgewise crds --out {directory.relative_to(REPO)}`"
        assert path.read_text() == text, (
            f"{path} is stale: run `edgewise crds --out {directory.relative_to(REPO)}`"
        )


def test_cli_check_detects_a_stale_copy(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "edgewise", "crds", "--out", str(tmp_path)]
    assert subprocess.run(run, capture_output=True).returncode == 0
    assert subprocess.run([*run, "--check"], capture_output=True).returncode == 0
    (tmp_path / crd.filename(EdgeModel)).write_text("stale")
    result = subprocess.run([*run, "--check"], capture_output=True, text=True)
    assert result.returncode == 1 and "out of date" in result.stderr


def _walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for key, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def _schema(resource: type) -> dict[str, Any]:
    return crd.crd(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.KIND)
def test_every_field_is_described_for_kubectl_explain(resource: type) -> None:
    missing = [
        path
        for path, node in _walk(_schema(resource))
        if path.count(".") >= 2 and not path.endswith(("[]", "{}")) and not node.get("description")
    ]
    assert missing == []


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.KIND)
def test_schema_is_structural(resource: type) -> None:
    for path, node in _walk(_schema(resource)):
        # propertyNames and patternProperties are not in the apiextensions schema: the apiserver would
        # drop them silently, and map keys would go unchecked.
        assert not {"$ref", "anyOf", "oneOf", "allOf", "title", "$defs", "propertyNames",
                    "patternProperties"} & set(node), path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        assert node.get("type") != "null", path
        if node.get("type") == "object" and path not in (".metadata",):
            assert "properties" in node or "additionalProperties" in node, f"{path}: object without fields"
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.KIND)
def test_spec_lists_and_maps_are_bounded_for_cel_cost(resource: type) -> None:
    spec = _schema(resource)["properties"]["spec"]
    for path, node in _walk(spec, ".spec"):
        if node.get("type") == "array":
            assert "maxItems" in node, path
        if node.get("type") == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, path
        if (node.get("type") == "string" or node.get("x-kubernetes-int-or-string")) and "enum" not in node:
            assert "maxLength" in node, path


def test_constrained_map_keys_need_a_cel_rule() -> None:
    """Key shapes become CEL rules in the CRD; a key shape without a rule is refused, not dropped."""
    from typing import Annotated

    from pydantic import Field, StringConstraints

    from edgewise.api.base import ApiModel

    class Unchecked(ApiModel):
        """A map whose keys have a shape and no rule."""

        labels: dict[Annotated[str, StringConstraints(pattern="^[a-z]+$")], str] = Field(description="Labels.")

    with pytest.raises(crd.SchemaError, match="need a CEL rule on the map"):
        crd.model_schema(Unchecked)
    assert crd.model_schema(Unchecked, generation=True)["properties"]["labels"]["propertyNames"] == {
        "pattern": "^[a-z]+$"}


def test_defaults_in_the_schema_are_what_the_python_models_produce() -> None:
    spec = _schema(EdgeModel)["properties"]["spec"]["properties"]
    assert spec["rollout"]["default"] == EdgeModelSpec.model_fields["rollout"].default_factory().to_api()
    assert spec["optimization"]["default"]["quantization"] == "auto"
    assert spec["rollout"]["properties"]["analysis"]["properties"]["interval"]["default"] == "1m"
    status = _schema(EdgeModel)["properties"]["status"]
    assert all("default" not in node for _, node in _walk(status)), "the apiserver must not invent status"


def test_cross_field_rules_are_cel_validations_with_messages() -> None:
    text = "\n".join(crd.rendered().values())
    for message in [
        "an http(s) uri needs sha256",
        "static int8 quantization needs calibration",
        "step percents must strictly increase",
        "the last step must be {percent: 100}",
        "class names must be unique",
        "a step sets exactly one of percent, sites, sitesPercent or pause",
        "operators Gt and Lt need exactly one integer value",
        "a class needs a nodeSelector",
        "threads applies only to the onnxruntime and openvino runtimes",
        "EdgeModel names are at most",
    ]:
        assert message in text, message
    for _, node in _walk(_schema(EdgeModel)):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"] and rule["rule"]


def test_names_printer_columns_and_subresources() -> None:
    em = crd.crd(EdgeModel)["spec"]
    assert em["group"] == "edgewise.io" and em["scope"] == "Namespaced"
    assert em["names"]["shortNames"] == ["em"]
    assert crd.crd(DeploymentProfile)["spec"]["names"]["shortNames"] == ["edp"]
    version = em["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:5] == ["Version", "Phase", "Stable", "Canary", "Ready"] and columns[-1] == "Age"
    conditions = _schema(EdgeModel)["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == [
        "type"
    ]


def test_generated_yaml_parses_back_to_the_same_object() -> None:
    for resource in RESOURCES:
        assert yaml.safe_load(crd.render(resource)) == crd.crd(resource)


def test_profile_schema_mentions_every_runtime() -> None:
    runtime = _schema(DeploymentProfile)["properties"]["spec"]["properties"]["classes"]["items"][
        "properties"
    ]["runtime"]
    assert runtime["enum"] == ["triton-tensorrt", "onnxruntime", "openvino"]
    device = _schema(DeploymentProfile)["properties"]["spec"]["properties"]["classes"]["items"]["properties"]["device"]
    assert device["enum"] == ["CPU", "GPU", "NPU", "AUTO"]
    assert DeploymentProfileSpec.model_fields["classes"].is_required()
