"""Which artifact store a reference names: the one place that knows every implementation.

    ""                              the operator's built-in store (artifacts/builtin.py)
    oci://host[:port]/repository    an OCI registry (artifacts/oci.py)

An EdgeModel names its store in spec.optimization.artifactStore; unset means built-in. A new
kind of store is a module implementing `store.ArtifactStore` and one branch here.
"""

from __future__ import annotations

from edgewise.artifacts.builtin import BuiltinStore
from edgewise.artifacts.oci import OciStore
from edgewise.artifacts.store import ArtifactStore

OCI_SCHEME = "oci://"


class UnknownStore(ValueError):
    """The reference names no kind of store this operator knows."""


class ArtifactStores:
    """Stores by reference; the built-in one is given (it lives on the operator's volume)."""

    def __init__(self, builtin: BuiltinStore) -> None:
        self.builtin = builtin
        self._oci: dict[str, OciStore] = {}

    def get(self, reference: str) -> ArtifactStore:
        if not reference:
            return self.builtin
        if reference.startswith(OCI_SCHEME):
            registry, _, repository = reference.removeprefix(OCI_SCHEME).partition("/")
            if not registry or not repository:
                raise UnknownStore(f"{reference}: want oci://host[:port]/repository")
            return self._oci.setdefault(reference, OciStore(registry, repository))
        raise UnknownStore(f"{reference}: not an artifact store reference (unset, or oci://host[:port]/repository)")
