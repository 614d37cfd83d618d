"""`make images`: every image the chart references, built without a Docker daemon, cached by inputs.

    python -m edgewise.devcluster.images build [--arch amd64,arm64] [--image operator,...]
        builds what the cache lacks, checks each image's size budget, prints a JSON map
        {"docker.io/edgewise/agent:0.1.0": {"amd64": "/…/agent-amd64.tar", "arm64": …}, …}
    python -m edgewise.devcluster.images paths      the same map, only from the cache (exit 1 if absent)
    python -m edgewise.devcluster.images lock-base  re-resolve the Debian bases, rewrite runtime-images/base.lock

The Dockerfiles in runtime-images/ are built as written (the same files `docker buildx build`
takes) by Debian's buildah: vfs storage and chroot isolation, in a storage root of its own under
$EDGEWISE_CACHE that is deleted after each build. The bases come from runtime-images/base.lock
(devcluster/image_base.py). Target-platform images are built with no emulation: build stages run
on this machine's platform and install the target's wheels; final stages have no RUN.

Each (image, arch) is cached in $EDGEWISE_CACHE/images/<key>/, key = hash of the Dockerfile, every
file its context allowlist admits, the base lock, the tools' versions and BUILD_FORMAT. A fresh
clone on a machine that built them pays only that hash. Outputs are docker-archives whose RepoTags
carry the full name: what `ctr -n k8s.io images import` and K3s's air-gap import take.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import fnmatch
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from edgewise.devcluster import image_base, oci
from edgewise.devcluster.tools import repo_root

REGISTRY = "docker.io"  # what a name without a registry host means to containerd and K3s
# name → (Dockerfile, size budget in MiB of the uncompressed image). Budgets sit ~15% above what
# was measured (runtime-images/README.md); a dependency that bloats an image fails `make images`.
IMAGES: dict[str, tuple[str, int]] = {
    "operator": ("Dockerfile.operator", 1005),
    "agent": ("Dockerfile.agent", 125),
    "onnxruntime": ("Dockerfile.onnxruntime", 290),
    "node-openvino": ("Dockerfile.openvino", 430),
}
LINT_ONLY = {"triton-jetson": "Dockerfile.triton-jetson"}  # NVIDIA's base is unreachable here
ARCHES = tuple(image_base.ARCHES)
LOCK = "runtime-images/base.lock"
# Bump when this build code changes what it produces (arguments, labels, layout): part of every key.
BUILD_FORMAT = 1
KEEP = 4  # cache entries kept per (image, arch), most recently used first; worktrees share the cache


class ImageBuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class Built:
    name: str
    ref: str
    arch: str
    archive: Path
    size: int  # bytes, uncompressed (sum of the layer tars)
    budget_mib: int


def cache_root() -> Path:
    return Path(os.environ.get("EDGEWISE_CACHE", Path.home() / ".cache" / "edgewise")) / "images"


def version(repo: Path | None = None) -> str:
    return tomllib.loads(((repo or repo_root()) / "pyproject.toml").read_text())["project"]["version"]


def image_ref(name: str, repo: Path | None = None) -> str:
    return f"{REGISTRY}/edgewise/{name}:{version(repo)}"


def host_arch() -> str:
    machine = platform.machine()
    for arch, uname in image_base.ARCHES.items():
        if machine in (arch, uname):
            return arch
    raise ImageBuildError(f"unsupported build machine {machine}: images build on amd64 or arm64")


# ---- inputs ---------------------------------------------------------------------------------------

def context_files(dockerfile: Path, repo: Path) -> list[Path]:
    """Files of the build context that `<Dockerfile>.dockerignore` admits (an allowlist: `*` then `!path`)."""
    rules = [line.strip() for line in (dockerfile.parent / f"{dockerfile.name}.dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    files = []
    for path in _walk(repo):
        rel = path.relative_to(repo).as_posix()
        included = False
        for rule in rules:
            negate, pattern = rule.startswith("!"), rule.lstrip("!").rstrip("/")
            if _matches(rel, pattern):
                included = negate
        if included:
            files.append(path)
    return files


def _walk(repo: Path) -> list[Path]:
    found = []
    for top, dirs, names in os.walk(repo):
        # Never in a context: VCS data, virtualenvs and caches (the allowlists admit none of them).
        dirs[:] = sorted(d for d in dirs if d not in (".git", ".venv", ".cache", "dist", "build", "__pycache__"))
        found += [Path(top) / n for n in sorted(names)]
    return found


def _matches(rel: str, pattern: str) -> bool:
    if pattern == "*":
        return True
    parts = rel.split("/")
    # A pattern names a file or a directory (and so everything under it); `**` spans directories.
    return any(fnmatch.fnmatch("/".join(parts[:i]), pattern.replace("**/", "*/")) or
               fnmatch.fnmatch("/".join(parts[:i]), pattern)
               for i in range(1, len(parts) + 1))


def _tool_versions() -> str:
    out = []
    for tool in ("buildah", "mmdebstrap"):
        exe = shutil.which(tool)
        if not exe:
            raise ImageBuildError(f"{tool} is not installed: `apt-get install buildah mmdebstrap` "
                                  "(make images does it)")
        out.append(subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout.strip())
    return "\n".join(out)


def image_key(name: str, arch: str, repo: Path, tools: str) -> str:
    dockerfile = repo / "runtime-images" / IMAGES[name][0]
    h = hashlib.sha256()
    for path in [dockerfile, *context_files(dockerfile, repo), repo / LOCK]:
        h.update(f"{path.relative_to(repo).as_posix()}\0{path.stat().st_mode & 0o111}\0".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    h.update(f"{name}\0{arch}\0{tools}\0{BUILD_FORMAT}".encode())
    return h.hexdigest()[:20]


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def provenance(name: str, repo: Path) -> dict[str, str]:
    """Labels from git: the last commit that changed the image's inputs and its time (not the wall clock,
    so rebuilding the same inputs gives the same labels and timestamps)."""
    dockerfile = repo / "runtime-images" / IMAGES[name][0]
    paths = [str(p.relative_to(repo)) for p in [dockerfile, *context_files(dockerfile, repo)]]
    line = _git(repo, "log", "-1", "--format=%H %ct", "--", *paths)
    revision, epoch = (line.split() + ["unknown", "0"])[:2] if line else ("unknown", "0")
    if _git(repo, "status", "--porcelain", "--", *paths):
        revision += "-dirty"
    created = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    source = _git(repo, "config", "--get", "remote.origin.url") or "unknown"
    return {"VERSION": version(repo), "REVISION": revision, "CREATED": created, "SOURCE": source, "epoch": epoch}


# ---- bases ----------------------------------------------------------------------------------------

def load_lock(repo: Path) -> dict:
    path = repo / LOCK
    if not path.exists():
        raise ImageBuildError(f"{LOCK} is missing: `python -m edgewise.devcluster.images lock-base` writes it")
    return json.loads(path.read_text())


def ensure_base(flavor: str, arch: str, lock: dict) -> Path:
    """The base's OCI archive from the cache, built from the lock's pins if absent; digest checked."""
    entry = lock["bases"].get(f"{flavor}-{arch}")
    if entry is None:
        raise ImageBuildError(f"{LOCK} has no {flavor}-{arch} base: run `python -m edgewise.devcluster.images "
                              "lock-base`")
    # The digest check below catches a base build that changed what it produces without a new lock.
    key = hashlib.sha256(json.dumps([entry, lock["source_date_epoch"], BUILD_FORMAT],
                                    sort_keys=True).encode()).hexdigest()[:20]
    out = cache_root() / "base" / key / f"{flavor}-{arch}.oci.tar"
    if out.exists():
        return out
    with _locked(out.parent):
        if not out.exists():
            _build_locked_base(flavor, arch, lock, entry, out)
    return out


def _build_locked_base(flavor: str, arch: str, lock: dict, entry: dict, out: Path) -> None:
    built = image_base.build_base(flavor, arch, out.with_suffix(".partial"), epoch=lock["source_date_epoch"],
                                  pins=entry["packages"], ca_version=entry["ca-certificates"])
    if built.digest != entry["digest"]:
        out.with_suffix(".partial").unlink()
        raise ImageBuildError(
            f"the {flavor}-{arch} base built from {LOCK}'s pins has digest {built.digest}, the lock says "
            f"{entry['digest']}: the base build is not reproducible here (different mmdebstrap or dpkg?). "
            "Re-lock with `python -m edgewise.devcluster.images lock-base` and commit the lock.")
    out.with_suffix(".partial").replace(out)


def lock_bases(repo: Path) -> dict:
    """Resolve every base afresh from the mirror and write the lock (pins and digests)."""
    epoch = int(datetime.datetime.now(datetime.UTC).timestamp())
    bases = {}
    with tempfile.TemporaryDirectory(prefix="edgewise-lock-") as tmp:
        for flavor in image_base.FLAVORS:
            for arch in ARCHES:
                built = image_base.build_base(flavor, arch, Path(tmp) / f"{flavor}-{arch}.tar", epoch=epoch)
                bases[f"{flavor}-{arch}"] = {"digest": built.digest, "ca-certificates": built.ca_certificates,
                                             "packages": built.packages}
    lock = {"comment": "Debian bases of the images (devcluster/image_base.py); rewrite with "
                       "`python -m edgewise.devcluster.images lock-base`",
            "suite": image_base.SUITE, "source_date_epoch": epoch,
            "include": {f: list(p) for f, p in image_base.FLAVORS.items()}, "bases": bases}
    (repo / LOCK).write_text(json.dumps(lock, indent=1, sort_keys=True) + "\n")
    return lock


# ---- images ---------------------------------------------------------------------------------------

def _buildah(root: Path) -> list[str]:
    return ["buildah", "--root", str(root / "root"), "--runroot", str(root / "run"), "--storage-driver", "vfs"]


def _build_mounts() -> list[str]:
    """This machine's package access for RUN steps, mounted at build time and never baked into a layer."""
    mounts = []
    ca = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    if Path(ca).is_file():
        mounts += ["-v", f"{ca}:/etc/ssl/certs/ca-certificates.crt:ro"]
    if Path("/etc/pip.conf").is_file():
        mounts += ["-v", "/etc/pip.conf:/etc/pip.conf:ro"]
    return mounts


def build_image(name: str, arch: str, repo: Path, lock: dict, out_dir: Path) -> Path:
    dockerfile = repo / "runtime-images" / IMAGES[name][0]
    runtime_base = ensure_base("runtime", arch, lock)
    build_base = ensure_base("build", host_arch(), lock)
    labels = provenance(name, repo)
    ref = image_ref(name, repo)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_stores()
    # The pid in the name lets a later build remove the store of one that was killed.
    store = Path(tempfile.mkdtemp(prefix=f"buildah-{name}-{arch}-{os.getpid()}-", dir=cache_root()))
    try:
        args = {"BUILDPLATFORM": f"linux/{host_arch()}", "TARGETPLATFORM": f"linux/{arch}",
                "PYTHON_BASE": f"oci-archive:{runtime_base}", "BUILD_BASE": f"oci-archive:{build_base}",
                **{k: v for k, v in labels.items() if k != "epoch"}}
        cmd = [*_buildah(store), "build", "--isolation", "chroot", "--platform", f"linux/{arch}",
               "--timestamp", labels["epoch"], "--identity-label=false", *_build_mounts(),
               *[a for k, v in args.items() for a in ("--build-arg", f"{k}={v}")],
               "--ignorefile", str(dockerfile.parent / f"{dockerfile.name}.dockerignore"),
               "-f", str(dockerfile), "-t", ref, str(repo)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
                              cwd=repo)
        (out_dir / "build.log").write_text(proc.stdout)
        if proc.returncode != 0:
            raise ImageBuildError(f"building {ref} for {arch} failed; log: {out_dir / 'build.log'}\n"
                                  f"{proc.stdout[-4000:]}")
        partial = out_dir / f"{name}-{arch}.tar.partial"
        partial.unlink(missing_ok=True)
        subprocess.run([*_buildah(store), "push", "-q", ref, f"docker-archive:{partial}:{ref}"], check=True,
                       stdout=subprocess.DEVNULL)
        archive = out_dir / f"{name}-{arch}.tar"
        partial.replace(archive)
        return archive
    finally:
        _remove_store(store)


def _remove_abandoned_stores() -> None:
    for store in cache_root().glob("buildah-*"):
        pid = store.name.split("-")[-2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _remove_store(store)


@contextlib.contextmanager
def _locked(directory: Path):
    """One builder per cache entry, across worktrees and processes; the others wait, then find it built."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _remove_store(store: Path) -> None:
    # vfs layers hold files owned by other uids and read-only directories; buildah's own reset first.
    subprocess.run([*_buildah(store), "rm", "--all"], capture_output=True, check=False)
    subprocess.run(["chmod", "-R", "u+w", str(store)], capture_output=True, check=False)
    shutil.rmtree(store, ignore_errors=True)


def image_size(archive: Path) -> int:
    with tarfile.open(archive) as tar:
        layers = oci.read_docker_archive(archive).layers
        return sum(tar.getmember(layer).size for layer in layers)


def ensure_images(names: list[str] | None = None, arches: list[str] | None = None, *, build: bool = True,
                  log=sys.stderr) -> list[Built]:
    repo = repo_root()
    names = names or list(IMAGES)
    arches = arches or list(ARCHES)
    for n in names:
        if n not in IMAGES:
            raise ImageBuildError(f"unknown image {n!r}: choose from {', '.join(IMAGES)}"
                                  + (f" ({n} is lint-only: its base is NVIDIA's)" if n in LINT_ONLY else ""))
    for a in arches:
        if a not in ARCHES:
            raise ImageBuildError(f"unknown architecture {a!r}: choose from {', '.join(ARCHES)}")
    tools = _tool_versions()  # part of every key, so `paths` needs the tools installed too
    lock = load_lock(repo) if build else {}
    results = []
    for name in names:
        ref = image_ref(name, repo)
        for arch in arches:
            key = image_key(name, arch, repo, tools)
            out_dir = cache_root() / key
            archive = out_dir / f"{name}-{arch}.tar"
            if not archive.exists():
                if not build:
                    raise ImageBuildError(f"{name} ({arch}) is not built: run `make images`")
                with _locked(out_dir):
                    if not archive.exists():
                        print(f"[images] building {ref} for linux/{arch}", file=log, flush=True)
                        build_image(name, arch, repo, lock, out_dir)
            size, budget = image_size(archive), IMAGES[name][1]
            if size > budget * 2**20:  # checked on every call, so a cached image over budget fails too
                raise ImageBuildError(f"{ref} ({arch}) is {size / 2**20:.1f} MiB uncompressed, "
                                      f"over its {budget} MiB budget (IMAGES in {__name__}): slim it, or raise "
                                      "the budget and say why in runtime-images/README.md")
            results.append(Built(name, ref, arch, archive, size, budget))
            # Written on every use: its mtime orders the entries for pruning.
            (out_dir / "image.json").write_text(json.dumps({"ref": ref, "arch": arch,
                                                            "size": size, "archive": str(archive)}))
            if build:
                _prune(name, arch)
    return results


def _prune(name: str, arch: str) -> None:
    """Drop all but the KEEP most recently used entries of (name, arch): each code change makes new ones."""
    entries = sorted((p.parent for p in cache_root().glob(f"*/{name}-{arch}.tar")),
                     key=lambda d: (d / "image.json").stat().st_mtime if (d / "image.json").exists() else 0,
                     reverse=True)
    for old in entries[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)


def as_map(built: list[Built]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for b in built:
        out.setdefault(b.ref, {})[b.arch] = str(b.archive)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgewise.devcluster.images",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build", "paths", "lock-base"])
    parser.add_argument("--arch", default=",".join(ARCHES), help="comma-separated: amd64,arm64")
    parser.add_argument("--image", default=",".join(IMAGES), help=f"comma-separated: {','.join(IMAGES)}")
    args = parser.parse_args(argv)
    try:
        if args.command == "lock-base":
            lock = lock_bases(repo_root())
            print(json.dumps({k: v["digest"] for k, v in lock["bases"].items()}, indent=1))
            return 0
        built = ensure_images(args.image.split(","), args.arch.split(","), build=args.command == "build")
    except ImageBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for b in built:
        print(f"[images] {b.ref} linux/{b.arch}: {b.size / 2**20:.1f} MiB (budget {b.budget_mib} MiB)",
              file=sys.stderr)
    print(json.dumps(as_map(built), indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
