"""The artifact store is a seam: an EdgeModel names an OCI registry and its artifacts live there.

Against the real registry the artifact tests start: a tiny model is optimized in a worker
process, pushed, and pulled back by the URI the class would deploy.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from kubernetes.client import ApiClient
from onnx import TensorProto, helper, numpy_helper
from registry_support import Registry

from edgewise.api.profile import DeploymentProfileSpec
from edgewise.api.resources import EdgeModel
from edgewise.api.settings import OperatorSettings
from edgewise.artifacts.builtin import BuiltinStore
from edgewise.artifacts.factory import ArtifactStores, UnknownStore
from edgewise.artifacts.oci import OciStore
from edgewise.controller.artifacts import ArtifactManager
from edgewise.core.class_artifact import ArtifactState, ClassArtifact
from edgewise.core.classify import classify
from edgewise.core.observed import NodeInfo
from edgewise.core.optimization import job_spec
from edgewise.kube.writes import Writes
from edgewise.shared import oci
from wait_support import wait_for

CPU = {"name": "cpu", "nodeSelector": {"kubernetes.io/arch": "amd64"}, "runtime": "onnxruntime",
       "precision": "int8"}
NODES = [NodeInfo("x86-0", {"kubernetes.io/arch": "amd64"})]
PROFILE = DeploymentProfileSpec.model_validate({"classes": [CPU]})


def _tiny_matmul(path: Path) -> Path:
    """x[N, 64] · W[64, 64] → y: enough weights for dynamic int8 to be worth it."""
    weights = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])],
        initializer=[numpy_helper.from_array(weights, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def _model(uri: str, sha: str, store: str | None) -> EdgeModel:
    optimization: dict[str, object] = {"quantization": "dynamic"}
    if store:
        optimization["artifactStore"] = store
    return EdgeModel.model_validate({
        "apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel",
        "metadata": {"name": "m", "namespace": "ns", "uid": "u"},
        "spec": {"version": "1", "source": {"uri": uri, "sha256": sha}, "optimization": optimization}})


def _resolve(manager: ArtifactManager, model: EdgeModel) -> ClassArtifact:
    # Worker processes write nothing to Kubernetes: a client that never connects is enough.
    return manager.resolve(model, PROFILE, classify(PROFILE, NODES), Writes(ApiClient()))["cpu"]


def test_an_edgemodel_keeps_its_artifacts_in_the_registry_it_names(registry: Registry, tmp_path: Path) -> None:
    sources = tmp_path / "sources"
    sources.mkdir()
    src = _tiny_matmul(sources / "m.onnx")
    source_sha = hashlib.sha256(src.read_bytes()).hexdigest()
    settings = OperatorSettings(artifact_dir=str(tmp_path / "operator"), artifact_url="http://store.example:8090",
                                local_source_dirs=(str(sources),))
    reference = f"oci://{registry.address}/edgewise/models"
    model = _model(src.as_uri(), source_sha, reference)
    manager = ArtifactManager(settings)
    try:
        done = wait_for(lambda: (a := _resolve(manager, model)).state is not ArtifactState.OPTIMIZING and a,
                        300, "the optimization job")
    finally:
        manager.close()
    assert isinstance(done, ClassArtifact) and done.state is ArtifactState.READY, done
    assert done.artifact and done.artifact.uri == f"{reference}@sha256:{done.sha256}"
    pulled = tmp_path / "pulled.onnx"
    oci.pull(done.artifact.uri, pulled, expected_sha256=done.sha256)  # what a node does with the URI
    assert hashlib.sha256(pulled.read_bytes()).hexdigest() == done.sha256 != source_sha
    pushed = OciStore(registry.address, "edgewise/models").annotations(done.sha256)
    assert pushed["edgewise.io/source-sha256"] == source_sha
    assert not manager.store.has(done.sha256)  # not in the built-in store

    restarted = ArtifactManager(settings)  # finds the record on its volume, with the store it names
    try:
        again = _resolve(restarted, model)
        assert again.state is ArtifactState.READY and again.artifact == done.artifact and not restarted.jobs
        built_in = _resolve(restarted, _model(src.as_uri(), source_sha, None))
        assert built_in.state is ArtifactState.OPTIMIZING  # another store, another job: never the registry's
    finally:
        restarted.close()


def test_the_factory_knows_the_built_in_store_and_oci_registries(tmp_path: Path) -> None:
    builtin = BuiltinStore(tmp_path / "store", "http://store.example:8090")
    stores = ArtifactStores(builtin)
    assert stores.get("") is builtin
    registry = stores.get("oci://registry.example:5000/team/models")
    assert isinstance(registry, OciStore)
    assert (registry.registry, registry.repository) == ("registry.example:5000", "team/models")
    assert stores.get("oci://registry.example:5000/team/models") is registry  # one client per reference
    for wrong in ("s3://bucket/models", "oci://registry.example:5000", "https://registry.example/models"):
        with pytest.raises(UnknownStore):
            stores.get(wrong)


def test_the_store_is_part_of_the_job_key_only_when_named() -> None:
    default = job_spec(_model("https://models.example/m.onnx", "a" * 64, None), PROFILE.classes[0], NODES)
    named = job_spec(_model("https://models.example/m.onnx", "a" * 64, "oci://r.example/x"), PROFILE.classes[0],
                     NODES)
    assert default and named and default.job == named.job  # the same artifact is made
    assert default.key == default.job.key() and named.key != default.key and named.store == "oci://r.example/x"
