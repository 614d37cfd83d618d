#!/usr/bin/env bash
# Build (or reuse) Jaeger's all-in-one binary (hack/jaeger: a wrapper module whose only job is a
# `tool github.com/jaegertracing/jaeger/cmd/jaeger` directive pinning v1.75.0), the real trace
# backend that tests/cluster/test_traces.py sends the operator's OTLP spans to and queries.
#
# Like hack/build-argocd.sh: the binary lives outside the clone in $EDGEWISE_CACHE (default
# ~/.cache/edgewise), keyed by go.mod/go.sum, this script and the Go version; cold it takes about
# 5 minutes on 2 cores. Prints the binary's path on the last line.
set -euo pipefail
export GOTOOLCHAIN=local
HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${EDGEWISE_CACHE:-$HOME/.cache/edgewise}"
# shellcheck source=hack/cache_lock.sh
. "$HERE/cache_lock.sh"
cache_lock jaeger
GOVER="$(go env GOVERSION)"

key="$(cat "$HERE/jaeger/go.mod" "$HERE/jaeger/go.sum" "$0" \
  | { cat; echo "$GOVER"; } | sha256sum | cut -c1-12)"
dir="$CACHE/tools/jaeger-$key"
if [ ! -x "$dir/jaeger" ]; then
  echo "[build-jaeger] building Jaeger (hack/jaeger) with $GOVER (cold build: about 5 minutes on 2 cores)" >&2
  start=$(date +%s)
  mkdir -p "$dir.tmp"
  (cd "$HERE/jaeger" && go build -trimpath -ldflags "-s -w" -o "$dir.tmp/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger)
  echo "[build-jaeger] built in $(( $(date +%s) - start ))s" >&2
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
fi
mkdir -p "$CACHE/bin"
ln -sfn "$dir/jaeger" "$CACHE/bin/jaeger"
echo "$CACHE/bin/jaeger"
