"""`make bundle`: the air-gap bundle a K3s user copies to an offline site, one per architecture.

    python -m edgewise.devcluster.bundle [--arch amd64,arm64] [--out dist]

dist/edgewise-<version>-<arch>.tar.zst holds one directory, edgewise-<version>-<arch>/:

    images/*.tar        docker-archives with full names; K3s imports them from
                        /var/lib/rancher/k3s/agent/images/ (or `ctr -n k8s.io images import`)
    chart/edgewise-<version>.tgz   `helm package charts/edgewise`
    crds/*.yaml         the CustomResourceDefinitions (Helm installs but never upgrades crds/)
    README.md           what to run (docs/install.md in full)
    sha256sums          `sha256sum -c sha256sums` verifies every file above

Entries are sorted, owned by root and dated by the images' inputs; the image archives and CRDs are
the same bytes for the same inputs, the chart archive is not (`helm package` dates its entries now).
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from edgewise.devcluster import images
from edgewise.devcluster.tools import ensure_tools, repo_root
from edgewise.shared.digest import file_sha256

README = """# Edgewise {version} for K3s ({arch}), offline

    sha256sum -c sha256sums
    sudo mkdir -p /var/lib/rancher/k3s/agent/images
    sudo cp images/*.tar /var/lib/rancher/k3s/agent/images/     # on every {arch} node; K3s imports at start
    sudo systemctl restart k3s        # or k3s-agent on agent nodes; or: k3s ctr images import images/<file>.tar
    helm install edgewise chart/edgewise-{version}.tgz -n edgewise-system --create-namespace

Upgrades: `kubectl apply --server-side -f crds/` first (Helm never upgrades crds/), then `helm upgrade`.
The full guide is docs/install.md in the Edgewise repository.
"""


def bundle_name(version: str, arch: str) -> str:
    return f"edgewise-{version}-{arch}"


def _package_chart(repo: Path, dest: Path) -> Path:
    helm = ensure_tools() / "helm"
    subprocess.run([str(helm), "package", str(repo / "charts" / "edgewise"), "--destination", str(dest)],
                   check=True, stdout=subprocess.DEVNULL)
    charts = sorted(dest.glob("edgewise-*.tgz"))
    if len(charts) != 1:
        raise RuntimeError(f"helm package left {charts} in {dest}")
    return charts[0]


def write_bundle(arch: str, out_dir: Path, built: list[images.Built], repo: Path | None = None) -> Path:
    repo = repo or repo_root()
    version = images.version(repo)
    top = bundle_name(version, arch)
    files: dict[str, Path] = {}  # name inside the bundle → source
    for b in built:
        if b.arch == arch:
            files[f"images/edgewise-{b.name}-{version}-{arch}.tar"] = b.archive
    if not files:
        raise ValueError(f"no images for {arch}")
    with tempfile.TemporaryDirectory(prefix="edgewise-bundle-") as tmp:
        chart = _package_chart(repo, Path(tmp))
        files[f"chart/{chart.name}"] = chart
        for crd in sorted((repo / "crds").glob("*.yaml")):
            files[f"crds/{crd.name}"] = crd
        readme = Path(tmp) / "README.md"
        readme.write_text(README.format(version=version, arch=arch))
        files["README.md"] = readme
        sums = "".join(f"{file_sha256(src)}  {name}\n" for name, src in sorted(files.items()))
        epoch = int(images.provenance("operator", repo)["epoch"])
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"{top}.tar.zst"
        partial = out.with_suffix(".zst.partial")
        with open(partial, "wb") as sink:
            zstd = subprocess.Popen(["zstd", "-q", "-T0", "-c"], stdin=subprocess.PIPE, stdout=sink)
            assert zstd.stdin is not None
            with tarfile.open(fileobj=zstd.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for d in sorted({f"{top}/{n.rsplit('/', 1)[0]}" for n in files if "/" in n} | {top}):
                    tar.addfile(_info(d, epoch, tarfile.DIRTYPE, 0o755))
                for name, src in sorted(files.items()):
                    info = _info(f"{top}/{name}", epoch, tarfile.REGTYPE, 0o644)
                    info.size = src.stat().st_size
                    with open(src, "rb") as f:
                        tar.addfile(info, f)
                info = _info(f"{top}/sha256sums", epoch, tarfile.REGTYPE, 0o644)
                info.size = len(sums.encode())
                tar.addfile(info, io.BytesIO(sums.encode()))
            zstd.stdin.close()
            if zstd.wait() != 0:
                raise RuntimeError("zstd failed")
        partial.replace(out)
    return out


def _info(name: str, epoch: int, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.uname, info.gname = kind, mode, epoch, "root", "root"
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgewise.devcluster.bundle", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default=",".join(images.ARCHES))
    parser.add_argument("--out", default=str(repo_root() / "dist"))
    args = parser.parse_args(argv)
    if not shutil.which("zstd"):
        print("error: zstd is not installed (apt-get install zstd)", file=sys.stderr)
        return 1
    arches = args.arch.split(",")
    try:
        built = images.ensure_images(None, arches)
    except images.ImageBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for arch in arches:
        print(write_bundle(arch, Path(args.out), built))
    return 0


if __name__ == "__main__":
    sys.exit(main())
