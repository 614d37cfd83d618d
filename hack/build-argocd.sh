#!/usr/bin/env bash
# Build (or reuse) Argo CD's own binary (hack/argocd: the CLI, the application controller and the repo
# server of github.com/argoproj/argo-cd/v3), for the tests that run Edgewise's resource customizations
# through Argo CD itself (tests/argocd, tests/cluster/test_argocd.py).
#
# Like hack/build-tools.sh: the binary lives outside the clone in $EDGEWISE_CACHE (default
# ~/.cache/edgewise), keyed by go.mod/go.sum/main.go, this script and the Go version; cold it takes
# about 6 minutes on 2 cores and gives a ~250 MB binary. Prints the binary's path on the last line.
set -euo pipefail
export GOTOOLCHAIN=local
HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${EDGEWISE_CACHE:-$HOME/.cache/edgewise}"
# shellcheck source=hack/cache_lock.sh
. "$HERE/cache_lock.sh"
cache_lock argocd
GOVER="$(go env GOVERSION)"

key="$(cat "$HERE/argocd/go.mod" "$HERE/argocd/go.sum" "$HERE/argocd/main.go" "$0" \
  | { cat; echo "$GOVER"; } | sha256sum | cut -c1-12)"
dir="$CACHE/tools/argocd-$key"
if [ ! -x "$dir/argocd" ]; then
  echo "[build-argocd] building Argo CD (hack/argocd) with $GOVER (cold build: about 6 minutes on 2 cores)" >&2
  start=$(date +%s)
  mkdir -p "$dir.tmp"
  (cd "$HERE/argocd" && go build -trimpath -ldflags "-s -w" -o "$dir.tmp/argocd" .)
  # Argo CD's CRDs ship in the same module: the GitOps test installs them.
  mod="$(cd "$HERE/argocd" && go list -m -f '{{.Dir}}' github.com/argoproj/argo-cd/v3)"
  mkdir -p "$dir.tmp/crds" && cp "$mod/manifests/crds/application-crd.yaml" "$mod/manifests/crds/appproject-crd.yaml" \
    "$mod/manifests/crds/applicationset-crd.yaml" "$dir.tmp/crds/" && chmod -R u+w "$dir.tmp/crds"
  echo "[build-argocd] built in $(( $(date +%s) - start ))s" >&2
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
fi
mkdir -p "$CACHE/bin"
ln -sfn "$dir/argocd" "$CACHE/bin/argocd"
echo "$CACHE/bin/argocd"
