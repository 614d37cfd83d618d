"""What the operator side and the node runtime share: digests, downloads, OCI pulls, tensor descriptions.

A layer below both: `edgewise.node` (the node runtime) and the operator's packages import
it; it imports only `edgewise.contract` and third-party libraries (.importlinter says so).
"""
