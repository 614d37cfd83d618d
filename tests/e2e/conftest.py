"""End-to-end tests on the real node (devcluster/realnode.py): real kubelet, containerd, runc, kube-proxy.

Each module starts its own cluster with a real node (one real node can run on the machine at a time),
in a directory of its own, and stops it at the end.
"""
