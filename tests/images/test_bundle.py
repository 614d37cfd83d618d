"""The air-gap bundle (`make bundle`), and the image archives as containerd imports them.

containerd here is Debian's (1.6), started on a private socket with its CRI plugin off: it plays
what K3s does with /var/lib/rancher/k3s/agent/images/ (K3s's embedded containerd imports the
same archives), so the test proves the name each image gets.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from edgewise.devcluster import bundle, images, oci
from wait_support import wait_for

# The first test to need the images builds what the cache lacks: a cold build takes minutes.
pytestmark = pytest.mark.timeout(2400)

REPO = Path(__file__).resolve().parents[2]
VERSION = images.version(REPO)


@pytest.fixture(scope="module")
def built() -> list[images.Built]:
    return images.ensure_images()


@pytest.fixture(scope="module")
def unpacked(built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    path = bundle.write_bundle("arm64", out, built)
    assert path.name == f"edgewise-{VERSION}-arm64.tar.zst"
    dest = tmp_path_factory.mktemp("unpacked")
    subprocess.run(f"zstd -q -d -c {path} | tar -x -C {dest}", shell=True, check=True)
    return dest / f"edgewise-{VERSION}-arm64"


def test_bundle_layout(unpacked: Path) -> None:
    names = sorted(p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*") if p.is_file())
    crds = sorted(f"crds/{p.name}" for p in (REPO / "crds").glob("*.yaml"))
    assert crds, "the repository has no CRDs"
    assert names == sorted([
        "README.md", "sha256sums", f"chart/edgewise-{VERSION}.tgz", *crds,
        *[f"images/edgewise-{n}-{VERSION}-arm64.tar" for n in ("agent", "node-openvino", "onnxruntime", "operator")]])
    for name in ("agent", "node-openvino", "onnxruntime", "operator"):
        archive = oci.read_docker_archive(unpacked / f"images/edgewise-{name}-{VERSION}-arm64.tar")
        assert archive.repo_tags == [f"docker.io/edgewise/{name}:{VERSION}"] and archive.architecture == "arm64"
    with tarfile.open(unpacked / f"chart/edgewise-{VERSION}.tgz") as chart:
        meta = yaml.safe_load(chart.extractfile("edgewise/Chart.yaml").read())  # type: ignore[union-attr]
    assert meta["version"] == VERSION and meta["appVersion"] == VERSION
    assert (unpacked / crds[0]).read_bytes() == (REPO / crds[0]).read_bytes()


def test_checksums_verify_and_catch_a_corrupted_file(unpacked: Path, tmp_path: Path) -> None:
    listed = {line.split("  ", 1)[1] for line in (unpacked / "sha256sums").read_text().splitlines()}
    assert listed == {p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*")
                      if p.is_file() and p.name != "sha256sums"}
    ok = subprocess.run(["sha256sum", "--strict", "-c", "sha256sums"], cwd=unpacked, capture_output=True, text=True,
                        check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    copy = tmp_path / "copy"
    shutil.copytree(unpacked / "crds", copy / "crds")
    shutil.copy(unpacked / "sha256sums", copy / "sha256sums")
    with open(next((copy / "crds").glob("*.yaml")), "a") as f:
        f.write("# tampered\n")
    bad = subprocess.run(["sha256sum", "--ignore-missing", "-c", "sha256sums"], cwd=copy, capture_output=True,
                         text=True, check=False)
    assert bad.returncode != 0 and "FAILED" in bad.stdout


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    assert shutil.which("containerd") and shutil.which("ctr"), "apt-get install containerd"
    base = Path(tmp_path_factory.mktemp("ctrd", numbered=True))
    config = base / "config.toml"
    config.write_text('version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n')
    sock = base / "containerd.sock"
    log = open(base / "containerd.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(["containerd", "--config", str(config), "--root", str(base / "root"),
                             "--state", str(base / "state"), "--address", str(sock)], stdout=log, stderr=log)
    ctr = ["ctr", "--address", str(sock), "-n", "k8s.io"]
    try:
        wait_for(lambda: proc.poll() is None and subprocess.run([*ctr, "version"], capture_output=True).returncode == 0,
                 60, f"containerd (log: {base / 'containerd.log'})")
        yield ctr
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_containerd_imports_each_archive_under_its_full_name(containerd: list[str], built, arch: str) -> None:
    for b in [b for b in built if b.arch == arch]:
        # --all-platforms: an arm64 image is imported (not run) on this amd64 machine, as on a K3s server.
        proc = subprocess.run([*containerd, "images", "import", "--all-platforms", "--no-unpack", str(b.archive)],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        listed = subprocess.run([*containerd, "images", "ls", "-q"], capture_output=True, text=True,
                                check=True).stdout.split()
        assert b.ref in listed, (b.ref, listed)
        info = subprocess.run([*containerd, "images", "check"], capture_output=True, text=True, check=True).stdout
        line = next(line for line in info.splitlines() if line.startswith(b.ref + " "))
        assert "complete" in line, line
        digest = subprocess.run([*containerd, "images", "ls"], capture_output=True, text=True, check=True).stdout
        assert f"linux/{arch}" in next(ln for ln in digest.splitlines() if ln.startswith(b.ref + " "))
        subprocess.run([*containerd, "images", "rm", b.ref], capture_output=True, check=True)
