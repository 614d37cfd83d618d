#!/bin/sh
# Installs Edgewise into /opt/edgewise in an image's build stage. The build stage runs on the
# build platform, so nothing here runs code of the target platform:
#   install-wheels.sh amd64|arm64 REQUIREMENTS [EXTRA...]   the target platform's wheels (binary only) for
#                                                REQUIREMENTS (pyproject.toml: the project's own dependencies
#                                                and those of each EXTRA, e.g. operator optimize)
#   install-wheels.sh edgewise IMAGE              Edgewise itself (pure Python, no deps), the SBOM, bytecode
set -eu
LIB=/opt/edgewise/lib
SBOM=/opt/edgewise/sbom
mkdir -p "$LIB" "$SBOM"
if [ "$1" = edgewise ]; then
  python3 -m pip install --no-cache-dir --no-compile --no-deps --upgrade --target "$LIB" \
    --report /tmp/pip-edgewise.json .
  version=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["install"][0]["metadata"]["version"])' \
    < /tmp/pip-edgewise.json)
  # CycloneDX from pip's own record of what it installed (path documented in runtime-images/README.md).
  python3 sbom.py python --name "edgewise-$2" --version "$version" /tmp/pip-deps.json /tmp/pip-edgewise.json \
    > "$SBOM/python.cdx.json"
  # Console scripts from --target carry this stage's python in their shebang: /usr/local/bin/edgewise replaces them.
  rm -rf "$LIB/bin"
  # Third-party packages' own test suites (numpy, sympy, ...: ~50 MiB) are never imported at run time.
  python3 - "$LIB" <<'PY'
import pathlib, shutil, sys
lib = pathlib.Path(sys.argv[1])
for path in sorted(lib.glob("*/**/tests"), reverse=True):  # deepest first
    if path.is_dir() and path.relative_to(lib).parts[0] != "edgewise":
        shutil.rmtree(path)
PY
  # Hash-checked bytecode stays valid whatever mtimes the layers get, and the root filesystem is read-only.
  python3 -m compileall -q -j 0 --invalidation-mode unchecked-hash "$LIB" >/dev/null
  exit 0
fi
case "$1" in
  amd64) arch=x86_64 ;;
  arm64) arch=aarch64 ;;
  *) echo "install-wheels.sh: unsupported target architecture '$1' (amd64 or arm64)" >&2; exit 2 ;;
esac
requirements="$2"
shift 2
if [ "$(basename "$requirements")" = pyproject.toml ]; then
  python3 -c 'import sys, tomllib; p = tomllib.load(sys.stdin.buffer)["project"]
print("\n".join(p["dependencies"] + [d for e in sys.argv[1:] for d in p["optional-dependencies"][e]]))' "$@" \
    < "$requirements" > /tmp/requirements-project.txt
  requirements=/tmp/requirements-project.txt
fi
# Every manylinux tag up to glibc 2.36 (Debian bookworm's): pip takes --platform tags literally.
platforms="--platform manylinux2014_$arch"
v=17
while [ "$v" -le 36 ]; do platforms="$platforms --platform manylinux_2_${v}_$arch"; v=$((v + 1)); done
# shellcheck disable=SC2086  # $platforms is a list of options
python3 -m pip install --no-cache-dir --no-compile --target "$LIB" \
  $platforms --only-binary=:all: --python-version 3.11 --implementation cp \
  --report /tmp/pip-deps.json -c constraints.txt -r "$requirements"
