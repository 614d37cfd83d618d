"""The images `make images` builds: what their configs say, what they hold, and that they run.

The first test that needs them builds what the cache lacks (devcluster/images.py; a cold build on
a fresh machine, once); afterwards they come from ~/.cache/edgewise/images for the price of a hash.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from edgewise.devcluster import image_base, images, oci

# The first test to need the images builds what the cache lacks: a cold build takes minutes.
pytestmark = pytest.mark.timeout(2400)

REPO = Path(__file__).resolve().parents[2]
VERSION = images.version(REPO)
NAMES = ("operator", "agent", "onnxruntime", "node-openvino")
EXPECTED_REFS = {f"docker.io/edgewise/{n}:{VERSION}" for n in NAMES}
ELF_MACHINE = {"amd64": 0x3E, "arm64": 0xB7}  # e_machine: EM_X86_64, EM_AARCH64
OCI_LABELS = ("title", "description", "version", "revision", "created", "licenses", "source")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pinned(package: str) -> str:
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if _norm(name) == package:
            return version
    raise AssertionError(f"{package} is not pinned in constraints.txt")


@pytest.fixture(scope="module")
def built() -> dict[tuple[str, str], images.Built]:
    return {(b.name, b.arch): b for b in images.ensure_images()}


def _files(archive: Path) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    """Every path in the image (upper layers win), with the content of regular files under 1 MiB + ELF heads."""
    out: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}
    with tarfile.open(archive) as tar:
        for layer_name in oci.read_docker_archive(archive).layers:
            layer_file = tar.extractfile(layer_name)
            assert layer_file is not None
            with tarfile.open(fileobj=layer_file) as layer:
                for m in layer:
                    name = m.name.removeprefix("./")
                    data = None
                    if m.isfile():
                        f = layer.extractfile(m)
                        assert f is not None
                        data = f.read() if m.size < 2**20 or name.endswith(".json") else f.read(64)
                    out[name] = (m, data)
    return out


@pytest.fixture(scope="module")
def contents(built) -> dict[tuple[str, str], dict[str, tuple[tarfile.TarInfo, bytes | None]]]:
    return {key: _files(b.archive) for key, b in built.items()}


def test_every_image_the_chart_runs_is_built_for_both_architectures(built) -> None:
    assert {b.ref for b in built.values()} == EXPECTED_REFS
    assert {arch for _, arch in built} == {"amd64", "arm64"}
    for (name, _), b in built.items():
        archive = oci.read_docker_archive(b.archive)
        # The full name is what K3s's air-gap import and `ctr images import` tag the image with.
        assert archive.repo_tags == [f"docker.io/edgewise/{name}:{VERSION}"], b.archive


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
@pytest.mark.parametrize("name", NAMES)
def test_config_says_non_root_labels_entrypoint_and_arch(built, name: str, arch: str) -> None:
    config = oci.read_docker_archive(built[name, arch].archive).config
    assert config["architecture"] == arch and config["os"] == "linux"
    cfg = config["config"]
    assert cfg["User"] == "65532:65532"
    labels = cfg["Labels"]
    for key in OCI_LABELS:
        assert labels.get(f"org.opencontainers.image.{key}"), f"label {key} missing: {labels}"
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.title"] == f"edgewise-{name}"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", labels["org.opencontainers.image.created"])
    assert cfg["Entrypoint"] == (["edgewise", "agent"] if name == "agent" else ["edgewise"])
    # No build-time secret or host setting leaks into the image's environment.
    assert not [e for e in cfg.get("Env", []) if e.startswith(("PIP_", "SSL_", "REQUESTS_"))]


def test_sizes_are_within_budget(built) -> None:
    for (name, arch), b in built.items():
        assert b.size == images.image_size(b.archive) > 0
        assert b.size <= images.IMAGES[name][1] * 2**20, f"{name} {arch}: {b.size / 2**20:.1f} MiB"


# Each node image's runtime extension: the one binary wheel whose architecture matters most.
RUNTIME_EXTENSIONS = {"onnxruntime": r"onnxruntime/capi/onnxruntime_pybind11_state.*\.so",
                      "node-openvino": r"openvino/_pyopenvino\.cpython-311-.*\.so|openvino/libs/libopenvino\.so\.\d+"}


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
@pytest.mark.parametrize("name", sorted(RUNTIME_EXTENSIONS))
def test_target_architecture_binaries_and_no_build_platform_leftovers(contents, name: str, arch: str) -> None:
    files = contents[name, arch]
    so = [n for n in files if re.fullmatch(r"opt/edgewise/lib/(" + RUNTIME_EXTENSIONS[name] + ")", n)]
    assert len(so) == (2 if name == "node-openvino" else 1), f"{name}'s runtime extension is missing: {so}"
    libc = f"lib/{image_base.ARCHES[arch]}-linux-gnu/libc.so.6"
    for path in [*so, "usr/bin/python3.11", libc]:
        head = files[path][1]
        assert head is not None and head[:4] == b"\x7fELF", path
        assert int.from_bytes(head[18:20], "little") == ELF_MACHINE[arch], f"{path} is not {arch}"
    # The build stage's console scripts (shebang of the build python) are gone; the wrapper replaces them.
    assert not [n for n in files if n.startswith("opt/edgewise/lib/bin/")]
    info, wrapper = files["usr/local/bin/edgewise"]
    assert info.mode & stat.S_IXOTH and wrapper is not None and wrapper.startswith(b"#!/usr/local/bin/python3\n")
    assert files["usr/local/bin/python3"][0].linkname == "/usr/bin/python3.11"
    # No shell in the final images: the final stage runs nothing, and nothing in it needs one.
    assert "bin/sh" not in files


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_sbom_lists_what_was_installed(contents, arch: str) -> None:
    for name in NAMES:
        files = contents[name, arch]
        python = json.loads(files["opt/edgewise/sbom/python.cdx.json"][1] or b"")
        assert python["bomFormat"] == "CycloneDX" and python["specVersion"] == "1.5"
        versions = {c["name"]: c["version"] for c in python["components"]}
        assert versions["edgewise"] == VERSION
        installed = {_norm(n.split("/")[3].split("-")[0])
                     for n in files if re.fullmatch(r"opt/edgewise/lib/[^/]+\.dist-info/METADATA", n)}
        assert installed == {_norm(n) for n in versions}, "SBOM and installed packages differ"
        debian = json.loads(files[image_base.SBOM_PATH][1] or b"")
        debs = {c["name"]: c["purl"] for c in debian["components"]}
        assert "libc6" in debs and "python3.11-minimal" in debs and f"arch={arch}" in debs["libc6"]
    sboms = {name: {c["name"]: c for c in json.loads(contents[name, arch]["opt/edgewise/sbom/python.cdx.json"][1]
                                                    or b"")["components"]} for name in NAMES}
    for name, runtime in (("onnxruntime", "onnxruntime"), ("node-openvino", "openvino")):
        node = sboms[name]
        assert node[runtime]["version"] == _pinned(runtime)
        assert node[runtime]["purl"] == f"pkg:pypi/{runtime}@{_pinned(runtime)}"
        assert node[runtime]["hashes"][0]["alg"] == "SHA-256"
    # Each node image carries its own runtime only: neither grows by the other's.
    assert "openvino" not in sboms["onnxruntime"]
    assert not {"onnxruntime", "onnx"} & set(sboms["node-openvino"])
    # The operator image runs the optimization Jobs: NNCF quantizes, OpenVINO runs the gates.
    assert sboms["operator"]["nncf"]["version"] == _pinned("nncf")
    assert sboms["operator"]["openvino"]["version"] == _pinned("openvino")
    # The agent's image carries the agent's packages only.
    agent = {c["name"] for c in json.loads(contents["agent", arch]["opt/edgewise/sbom/python.cdx.json"][1]
                                           or b"")["components"]}
    assert "aiohttp" in agent and "onnxruntime" not in agent and "kopf" not in agent


def test_a_second_build_is_a_cache_hit(built) -> None:
    again = {(b.name, b.arch): b.archive for b in images.ensure_images()}
    assert again == {key: b.archive for key, b in built.items()}
    for b in built.values():
        assert not (b.archive.parent / f"{b.name}-{b.arch}.tar.partial").exists()
    # The vfs storage roots of this process's builds are deleted (other worktrees may be building).
    assert not list(images.cache_root().glob(f"buildah-*-{os.getpid()}-*"))


def test_the_cache_key_follows_the_context_allowlist(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "runtime-images").mkdir(parents=True)
    for name in ("Dockerfile.agent", "Dockerfile.agent.dockerignore", "requirements-agent.txt", "sbom.py",
                 "install-wheels.sh", "edgewise"):
        shutil.copy(REPO / "runtime-images" / name, repo / "runtime-images" / name)
    for name in ("constraints.txt", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, repo / name)
    shutil.copy(REPO / images.LOCK, repo / images.LOCK)
    (repo / "operator/edgewise").mkdir(parents=True)
    (repo / "operator/edgewise/__init__.py").write_text("")
    (repo / "operator/edgewise/__pycache__").mkdir()
    (repo / "operator/edgewise/__pycache__/x.pyc").write_bytes(b"x")
    (repo / "docs").mkdir()
    (repo / "docs/a.md").write_text("a")
    dockerfile = repo / "runtime-images/Dockerfile.agent"
    assert sorted(p.relative_to(repo).as_posix() for p in images.context_files(dockerfile, repo)) == [
        "README.md", "constraints.txt", "operator/edgewise/__init__.py", "pyproject.toml",
        "runtime-images/edgewise", "runtime-images/install-wheels.sh", "runtime-images/requirements-agent.txt",
        "runtime-images/sbom.py"]
    key = images.image_key("agent", "arm64", repo, "tools 1")
    (repo / "docs/a.md").write_text("b")  # outside the allowlist
    (repo / "operator/edgewise/__pycache__/x.pyc").write_bytes(b"y")
    assert images.image_key("agent", "arm64", repo, "tools 1") == key
    assert images.image_key("agent", "amd64", repo, "tools 1") != key
    assert images.image_key("agent", "arm64", repo, "tools 2") != key
    (repo / "operator/edgewise/__init__.py").write_text("# changed")
    assert images.image_key("agent", "arm64", repo, "tools 1") != key


def test_an_unknown_image_or_architecture_is_refused_with_the_choices() -> None:
    with pytest.raises(images.ImageBuildError, match="lint-only"):
        images.ensure_images(["triton-jetson"], ["arm64"])
    with pytest.raises(images.ImageBuildError, match="amd64, arm64"):
        images.ensure_images(["agent"], ["riscv64"])


def test_the_cache_keeps_the_most_recently_used_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEWISE_CACHE", str(tmp_path))
    for i in range(images.KEEP + 2):
        entry = tmp_path / "images" / f"key{i}"
        entry.mkdir(parents=True)
        (entry / "agent-amd64.tar").write_bytes(b"")
        (entry / "image.json").write_text("{}")
        os.utime(entry / "image.json", (1000 + i, 1000 + i))  # key5 used last
    (tmp_path / "images/other").mkdir()
    (tmp_path / "images/other/agent-arm64.tar").write_bytes(b"")  # another architecture: not counted
    images._prune("agent", "amd64")
    left = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert left == ["key2", "key3", "key4", "key5", "other"]


def test_an_image_over_its_budget_fails_the_build(built, monkeypatch: pytest.MonkeyPatch) -> None:
    size = built["agent", "amd64"].size
    monkeypatch.setitem(images.IMAGES, "agent", (images.IMAGES["agent"][0], size // 2**20 - 1))
    with pytest.raises(images.ImageBuildError, match=r"over its \d+ MiB budget"):
        images.ensure_images(["agent"], ["amd64"])
    assert built["agent", "amd64"].archive.exists()  # the check stays, the cached image too
