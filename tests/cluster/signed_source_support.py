"""EdgeModels with signed sources, and the profile whose trust policy names their signer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model_signing import signing
from operator_support import get
from rollout_support import profile

from edgewise.devcluster import demo_models
from edgewise.devcluster.cluster import DevCluster

MODEL = "signed-detector"


def sign(model: Path, tmp: Path, key_pem: bytes) -> Path:
    key = tmp / "publisher.pem"
    key.write_bytes(key_pem)
    bundle = model.with_suffix(".sig")
    signing.Config().use_elliptic_key_signer(private_key=key).sign(model, bundle)
    return bundle


def signed_model(ns: str, version: str, src: Path, bundle: Path | None) -> dict[str, Any]:
    source: dict[str, Any] = {"uri": src.as_uri(), "sha256": demo_models.sha256(src)}
    if bundle is not None:
        source["signature"] = {"uri": bundle.as_uri(), "sha256": demo_models.sha256(bundle)}
    return {"apiVersion": "edgewise.io/v1alpha1", "kind": "EdgeModel", "metadata": {"name": MODEL, "namespace": ns},
            "spec": {"profileRef": "fleet", "version": version, "source": source,
                     "optimization": {"quantization": "none"},
                     "rollout": {"steps": [{"percent": 50}, {"percent": 100}], "analysis": {"provider": "none"}}}}


def trusting_profile(ns: str) -> dict[str, Any]:
    p = profile(ns)
    p["spec"]["trustPolicy"] = {"configMap": "signers", "requireSigned": True}
    return p


def em(cluster: DevCluster, ns: str) -> dict[str, Any]:
    return get(cluster, "edgemodel", MODEL, "-n", ns)
