# Sourced by hack/build-*.sh: one builder at a time per binary and cache, so two clones (or two
# `make -j` targets) building the same cache entry do not race on its directory: the second waits,
# then finds the binary and reuses it. (Not part of the builds' cache keys: it does not change them.)
cache_lock() {  # cache_lock NAME
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.build-$1.lock"
  flock 9
}
