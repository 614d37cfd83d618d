"""A real local Kubernetes control plane with a simulated edge fleet, for tests and the demo.

Every control-plane component is the real upstream binary (built by
hack/build-tools.sh); only the kubelets are simulated, by kwok.
"""
