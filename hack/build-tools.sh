#!/usr/bin/env bash
# Build (or reuse) the real Kubernetes control plane, kwok and helm.
#
# Binaries live outside the clone in $EDGEWISE_CACHE (default ~/.cache/edgewise),
# keyed by the inputs that make them: go.mod/go.sum/main.go and the Go version
# for the control plane; the pinned version for kwok and helm. A fresh clone on a
# machine that built them before pays only a hash and a few symlinks.
# Prints the bin directory on the last line of stdout.
set -euo pipefail
export GOTOOLCHAIN=local
HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${EDGEWISE_CACHE:-$HOME/.cache/edgewise}"
# shellcheck source=hack/cache_lock.sh
. "$HERE/cache_lock.sh"
cache_lock tools
KWOK_VERSION="v0.8.0"
HELM_VERSION="v3.21.4"
K8S_VERSION="$(awk '$1=="require" && $2=="k8s.io/kubernetes"{print $3}' "$HERE/controlplane/go.mod")"
[ -n "$K8S_VERSION" ] || K8S_VERSION="$(grep -E '^\s+k8s.io/kubernetes v' "$HERE/controlplane/go.mod" | awk '{print $2}')"
GOVER="$(go env GOVERSION)"

log() { echo "[build-tools] $*" >&2; }

cp_key="$(cat "$HERE/controlplane/go.mod" "$HERE/controlplane/go.sum" "$HERE/controlplane/main.go" \
  "$0" | { cat; echo "$GOVER"; } | sha256sum | cut -c1-16)"
cp_dir="$CACHE/controlplane/$cp_key"
if [ ! -x "$cp_dir/controlplane" ]; then
  log "building control plane $K8S_VERSION with $GOVER (cold build: tens of minutes on 2 cores)"
  minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor \
    -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ) \
    -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION \
    -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  mkdir -p "$cp_dir.tmp"
  start=$(date +%s)
  (cd "$HERE/controlplane" && go build -trimpath -ldflags "$ldflags" -o "$cp_dir.tmp/controlplane" .)
  log "control plane built in $(( $(date +%s) - start ))s"
  rm -rf "$cp_dir" && mv "$cp_dir.tmp" "$cp_dir"
fi

tool() {  # tool NAME MODULE@VERSION
  local dir="$CACHE/tools/$1-$(echo "$2 $GOVER" | sha256sum | cut -c1-12)"
  if [ ! -x "$dir/$1" ]; then
    log "go install $2"
    mkdir -p "$dir.tmp"
    GOBIN="$dir.tmp" go install -trimpath -ldflags "-s -w" "$2"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  echo "$dir/$1"
}
# CoreDNS with only a cluster DNS's plugins (hack/coredns/), for the real node's pods.
dns_key="$(cat "$HERE/coredns/go.mod" "$HERE/coredns/go.sum" "$HERE/coredns/main.go" | { cat; echo "$GOVER"; } \
  | sha256sum | cut -c1-12)"
dns_dir="$CACHE/tools/coredns-$dns_key"
if [ ! -x "$dns_dir/coredns" ]; then
  log "building CoreDNS (hack/coredns)"
  mkdir -p "$dns_dir.tmp"
  (cd "$HERE/coredns" && go build -trimpath -ldflags "-s -w" -o "$dns_dir.tmp/coredns" .)
  rm -rf "$dns_dir" && mv "$dns_dir.tmp" "$dns_dir"
fi
kwok_bin="$(tool kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")"
helm_bin="$(tool helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")"

# kwok's Stage objects ship inside its module; copy the ones that make nodes and pods live.
stages="$CACHE/tools/kwok-stages-$KWOK_VERSION"
if [ ! -d "$stages" ]; then
  src="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
  mkdir -p "$stages.tmp" && cp -r "$src/node" "$src/pod" "$stages.tmp/" && chmod -R u+w "$stages.tmp"
  rm -rf "$stages" && mv "$stages.tmp" "$stages"
fi

bin="$CACHE/bin"
mkdir -p "$bin"
for c in kube-apiserver kube-controller-manager kube-scheduler etcd kubectl kubelet kube-proxy; do
  ln -sfn "$cp_dir/controlplane" "$bin/$c"
done
ln -sfn "$kwok_bin" "$bin/kwok"
ln -sfn "$helm_bin" "$bin/helm"
ln -sfn "$dns_dir/coredns" "$bin/coredns"
ln -sfn "$stages" "$bin/../kwok-stages"
echo "$bin"
